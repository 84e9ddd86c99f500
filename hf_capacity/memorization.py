"""Memorized bits (Morris et al. 2025): information content minus code length under the model, per sample.

For uniform random sequences (``RandomSequences``) a sample's information is exactly S · log2 V bits, so
memorized bits = max(0, S · log2 V − (−log2 p(x | θ))), summed over samples. For a user's own text, the
reference is another model: max(0, log2 p_θ(x) − log2 p_ref(x)) per sample (``relative_memorization``).
Code lengths are in bits; a sample's code length is its summed next-token loss (nats) / ln 2.

The memorization run itself (``MemorizationRunConfig``, ``train_memorization``, ``remeasure_memorization``) lives
here too: `hf-capacity memorize` is a thin wrapper around it. A run folder holds the model, the config that
regenerates its sequences, and the curve with the stop rule's verdict (``saturation``); while the run lasts, its
``checkpoint-<step>`` folders, from which the same run started again resumes (``check_run_dir``).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from .checkpoints import last_checkpoint, setting_differences
from .data.random_sequences import RandomSequences
from .model_names import parse_model_name


@dataclass
class MemorizationReport:
    """What a model memorized of a set of samples, in bits."""

    bits_per_sample: np.ndarray  # memorized bits of each sample (clipped at 0)
    code_length_bits: np.ndarray  # −log2 p(sample | model)
    information_bits: float  # the set's information (N · S · log2 V), or the reference's code lengths summed
    num_params: int

    @property
    def bits_total(self) -> float:
        return float(self.bits_per_sample.sum())

    @property
    def bits_per_param(self) -> float:
        return self.bits_total / self.num_params if self.num_params else float("nan")

    def log_metrics(self, prefix: str = "") -> dict[str, float]:
        fraction = self.bits_total / self.information_bits if self.information_bits else 0.0
        return {f"{prefix}memorized_bits": self.bits_total, f"{prefix}memorized_bits_per_param": self.bits_per_param,
                f"{prefix}memorized_fraction": fraction}


@torch.no_grad()
def code_lengths_bits(model, input_ids: np.ndarray | torch.Tensor, batch_size: int = 64,
                      attention_mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """−log2 p(x_1 … x_T | x_0) of each row (bits): the summed next-token losses after the first token."""
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size].to(device)
        m = None if mask is None else mask[start : start + batch_size].to(device)
        logits = model(input_ids=batch, attention_mask=m).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        if m is not None:
            loss = loss * m[:, 1:]
        out.append(loss.sum(1).double().cpu().numpy() / math.log(2))
    model.train(was_training)
    return np.concatenate(out) if out else np.empty(0)


def memorized_bits(model, sequences: RandomSequences, *, batch_size: int = 64, num_params: int | None = None
                   ) -> MemorizationReport:
    """Bits of ``sequences`` that ``model`` memorized: Σ max(0, S · log2 V − code length). ``num_params``:
    the P to divide by (default every parameter of the model)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and vocab < sequences.model_vocab_size:
        raise ValueError(f"the model's vocabulary ({vocab}) is smaller than the sequences need "
                         f"({sequences.model_vocab_size}: {sequences.vocab_size} symbols and BOS)")
    code = code_lengths_bits(model, sequences.input_ids(), batch_size)
    per_sample = np.maximum(0.0, sequences.bits_per_sequence - code)
    params = num_params if num_params is not None else sum(p.numel() for p in model.parameters())
    return MemorizationReport(per_sample, code, sequences.entropy_bits, params)


def relative_memorization(model, reference, input_ids, attention_mask=None, *, batch_size: int = 16,
                          num_params: int | None = None) -> MemorizationReport:
    """Morris's text setting: per sample max(0, log2 p_θ(x) − log2 p_ref(x)) = max(0, code_ref − code_θ) bits,
    for any dataset tokenized once for both models (they must share the tokenizer)."""
    code_model = code_lengths_bits(model, input_ids, batch_size, attention_mask)
    code_ref = code_lengths_bits(reference, input_ids, batch_size, attention_mask)
    params = num_params if num_params is not None else sum(p.numel() for p in model.parameters())
    return MemorizationReport(np.maximum(0.0, code_ref - code_model), code_model, float(code_ref.sum()), params)


# ------------------------------------------------------------------------------------------------ the run itself
SATURATION_WINDOW = 0.2
"""The stop rule's window: the last fifth of the steps trained so far."""
SATURATION_TOLERANCE = 0.005
"""The stop rule: memorized bits rose by less than 0.5% (of the last measurement) over the window."""
ANNEALED_LR_FRACTION = 0.2
"""``until_saturated`` stops a run only where the learning rate has come down to at most this fraction of its peak
(with the default cosine to 0.1×, the last ~22% of the steps). A curve flattens at a high learning rate well below
what annealing then adds (2026-12-07: GPT2-1-1 width 32 on N = 768 read 2.669 bits/param, flat over 20% of its
steps, at 20% of a 7,000-epoch schedule; the whole 1,000-epoch schedule reaches 2.909): a plateau there is not
saturation."""
PRECISIONS = ("fp32", "bf16-mixed", "bf16", "bf16-sr")
"""fp32; bf16 autocast over fp32 weights; true bf16 (bf16 weights and AdamW state), as Morris et al. trained; true
bf16 with the new weights stochastically rounded (``stochastic_rounding.StochasticRoundingAdamW``)."""
RUN_CONFIG_NAME = "memorization_run.json"
RESULT_NAME = "memorization.json"


def saturation(history: list[dict], window: float = SATURATION_WINDOW,
               tolerance: float = SATURATION_TOLERANCE) -> dict:
    """The stop rule on a memorization curve (``history``: dicts with ``step`` and ``memorized_bits``, in order):
    saturated when the bits rose by less than ``tolerance`` × the last value from the last measurement at or before
    step (1 − ``window``) × the last step to the last step. Returns ``saturated`` (False when no measurement lies
    that early), ``relative_rise``, ``from_step``, ``to_step``, ``window``, ``tolerance``."""
    out = {"saturated": False, "relative_rise": None, "from_step": None, "to_step": None, "window": window,
           "tolerance": tolerance}
    if not history:
        return out
    last = history[-1]
    earlier = [h for h in history if h["step"] <= (1 - window) * last["step"]]
    if last["step"] == 0 or not earlier:
        return out
    start = earlier[-1]
    rise = last["memorized_bits"] - start["memorized_bits"]
    relative = rise / last["memorized_bits"] if last["memorized_bits"] > 0 else math.inf
    out.update(saturated=bool(relative < tolerance), relative_rise=relative, from_step=start["step"],
               to_step=last["step"])
    return out


def steps_per_epoch(n_sequences: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``n_sequences`` at ``batch_size``: the full batches and a last partial one."""
    return -(-int(n_sequences) // int(batch_size))


def stops_here(history: list[dict], learning_rate: float, peak_learning_rate: float) -> bool:
    """``until_saturated``'s decision after a measurement: the stop rule holds on ``history`` (``saturation``) and
    the schedule has annealed (``learning_rate`` ≤ ``ANNEALED_LR_FRACTION`` × ``peak_learning_rate``)."""
    return learning_rate <= ANNEALED_LR_FRACTION * peak_learning_rate and saturation(history)["saturated"]


def bf16_stalled_share(parameters, learning_rate: float) -> float:
    """The share of parameter values that an update of size ``learning_rate`` cannot change in bf16: the update is
    under half the bf16 spacing at the value (spacing 2^(⌊log2|w|⌋ − 7)), so rounding returns the old value.

    With AdamW an update is at most about ``learning_rate`` × |m/√v| ≤ ``learning_rate`` (weight decay 0), so this
    is the least share of a true-bf16 model (bf16 weights, ``precision="bf16"``) that stands still at that rate;
    under a decaying schedule it grows as the rate falls. ``parameters``: a model, a state dict or tensors."""
    if isinstance(parameters, torch.nn.Module):
        tensors = list(parameters.parameters())
    elif isinstance(parameters, dict):
        tensors = list(parameters.values())
    else:
        tensors = list(parameters)
    values = [t.detach().flatten().float() for t in tensors if t.is_floating_point()]
    if not values or learning_rate <= 0:
        raise ValueError("need floating-point parameters and a learning rate > 0")
    w = torch.cat(values).abs()
    spacing = torch.exp2(torch.floor(torch.log2(w.clamp_min(torch.finfo(torch.float32).tiny))) - 7)
    return float(((learning_rate < spacing / 2) & (w > 0)).float().mean())


@dataclass
class MemorizationRunConfig:
    """A memorization run (Morris et al. 2025): a GPT-2 trained from scratch on uniform random sequences.

    Everything needed to redo or re-measure it is here (``to_dict`` is what the run folder records): the
    sequences are ``RandomSequences(n_sequences, length, vocab_size, seed)`` and the held-out set its
    ``held_out(held_out)``. ``batch_size`` ≥ ``n_sequences`` trains full-batch. ``until_saturated``: stop at the
    first measurement where the stop rule (``saturation``) holds once the schedule has annealed (learning rate at
    most ``ANNEALED_LR_FRACTION`` of the peak), else at ``epochs``. ``save_steps``: checkpoint
    every this many steps (the newest ``save_total_limit`` kept, all removed once the run finished), so the same
    run started again on ``output_dir`` resumes from the newest (``check_run_dir``).
    """

    output_dir: str = "runs/memorize"
    n_sequences: int = 1024
    length: int = 64  # tokens a sequence (after one BOS token)
    vocab_size: int = 2048  # symbols each token is drawn from
    seed: int = 0  # the sequences and the initialisation
    model: str = "gpt2-1-1"  # gpt2-<layers>-<heads>
    head_dim: int = 32
    fused_loss: bool = True  # head + cross-entropy chunk by chunk: same loss, 2.7x faster steps at V = 2048
    epochs: int = 100  # passes over the sequences (the most trained, with until_saturated)
    batch_size: int = 64  # sequences a step
    learning_rate: float = 2e-3  # peak (AdamW, cosine to min_lr_ratio × the peak)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100  # at most a tenth of the steps
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    precision: str = "fp32"  # fp32 | bf16-mixed | bf16 (PRECISIONS)
    eval_steps: int | None = None  # measure every this many steps (None: 20 measurements)
    until_saturated: bool = False
    held_out: int = 256  # sequences of the held-out set (≈ 0 bits memorized for a model that memorized)
    report_to: list[str] = field(default_factory=list)
    progress: bool = True
    save_steps: int | None = 1000  # checkpoint every this many steps (0 or None: no checkpoints)
    save_total_limit: int = 2  # checkpoints kept while the run lasts (the newest)

    def __post_init__(self) -> None:
        family, _, _ = parse_model_name(self.model)
        if family != "gpt2":
            raise ValueError(f"memorization runs train gpt2-<layers>-<heads> models, not {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("n_sequences", "length", "epochs", "batch_size", "head_dim", "held_out"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1] (a fraction of the peak), got {self.min_lr_ratio}")
        if self.save_steps is not None and self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0 (0 or None: no checkpoints), got {self.save_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")

    @property
    def steps(self) -> int:
        return self.epochs * steps_per_epoch(self.n_sequences, self.batch_size)

    @property
    def warmup(self) -> int:
        """The warm-up that runs: ``warmup_steps``, at most a tenth of the steps (at least 1)."""
        return min(self.warmup_steps, max(self.steps // 10, 1))

    def sequences(self) -> RandomSequences:
        return RandomSequences(self.n_sequences, self.length, self.vocab_size, seed=self.seed)

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps, "warmup_steps_run": self.warmup}

    @classmethod
    def from_dict(cls, values: dict) -> MemorizationRunConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


RESUME_FREE_FIELDS = frozenset({"output_dir", "report_to", "progress", "save_steps", "save_total_limit"})
"""Settings that may change when a run resumes: where and how it is watched and saved, not what it learns."""


def run_differences(recorded: dict, config: MemorizationRunConfig) -> list[str]:
    """The settings (outside ``RESUME_FREE_FIELDS``) in which ``config`` differs from a recorded
    ``memorization_run.json``, as "name old → new"; a field the record lacks counts as its default."""
    return setting_differences(recorded, config.to_dict(), MemorizationRunConfig().to_dict(),
                               [f.name for f in fields(config)], RESUME_FREE_FIELDS)


def check_run_dir(config: MemorizationRunConfig) -> str | None:
    """The checkpoint this run resumes from (None: it starts at step 0), once ``output_dir`` is known to hold this
    same run or none; raises ValueError (one line) for a folder holding another run or a finished one.

    A folder holds a run when it has ``memorization_run.json`` (written before the first step), ``memorization.json``
    (written last) or checkpoints; the same run is one whose recorded settings equal ``config``'s outside
    ``RESUME_FREE_FIELDS``."""
    from pathlib import Path

    out = Path(config.output_dir)
    recorded_file, checkpoint = out / RUN_CONFIG_NAME, last_checkpoint(out)
    finished = (out / RESULT_NAME).is_file()
    if not (recorded_file.is_file() or finished or checkpoint or any(out.glob("checkpoint-*"))):
        return None
    elsewhere = "choose another output folder (-o), or delete this one to start again"
    differences = run_differences(json.loads(recorded_file.read_text()), config) if recorded_file.is_file() else []
    if differences:
        raise ValueError(f"{out} holds another run ({', '.join(differences)}; see its {RUN_CONFIG_NAME}): "
                         f"{elsewhere}")
    if finished:
        raise ValueError(f"{out} holds a finished run ({RESULT_NAME}): re-measure it with `hf-capacity memorize "
                         f"--eval {out}`, or {elsewhere}")
    if not recorded_file.is_file():
        raise ValueError(f"{out} holds checkpoints but no {RUN_CONFIG_NAME}, so they may belong to another run: "
                         f"{elsewhere}")
    return checkpoint


def _result(config: MemorizationRunConfig, report: MemorizationReport, heldout_bits: float,
            history: list[dict], steps_trained: int) -> dict:
    data = config.sequences()
    return {"model": config.model, "head_dim": config.head_dim, "num_params": report.num_params,
            "N": config.n_sequences, "length": config.length, "vocab": config.vocab_size,
            "data_bits": data.entropy_bits, "epochs": config.epochs, "steps_trained": steps_trained,
            "precision": config.precision, "bf16": config.precision != "fp32", "seed": config.seed,
            "batch_size": config.batch_size, "lr": config.learning_rate, "warmup_steps": config.warmup,
            "memorized_bits": report.bits_total, "bits_per_param": report.bits_per_param,
            "heldout_memorized_bits": heldout_bits, "saturation": saturation(history),
            "config": config.to_dict(), "history": history}


def train_memorization(config: MemorizationRunConfig) -> dict:
    """Train ``config``'s model on its sequences with the stock ``Trainer``, measuring memorized bits (train and
    held-out) ``eval_steps`` apart; save the model (loadable with plain ``transformers`` and
    ``trust_remote_code``), ``memorization_run.json`` (the config, written before the first step) and
    ``memorization.json`` (the result, with the curve and the stop rule's verdict) into ``output_dir``; return the
    result.

    With ``config.save_steps`` the run checkpoints as it goes; started again on the same ``output_dir`` (after a
    kill) it resumes from the newest checkpoint: weights, optimizer, schedule, RNG, step and the curve measured so
    far (from the checkpoint's log history), so the result and the stop rule see the whole curve. A folder holding
    another run or a finished one is refused (``check_run_dir``, ValueError)."""
    from pathlib import Path

    from transformers import Trainer, TrainerCallback, set_seed

    from .callbacks import MemorizationCallback
    from .logging_filters import transformers_progress_bars
    from .models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM
    from .trainer_args import capacity_training_arguments

    checkpoint = check_run_dir(config)
    _, layers, heads = parse_model_name(config.model)
    data = config.sequences()
    set_seed(config.seed)
    model = CapacityGPT2ForCausalLM(CapacityGPT2Config(
        vocab_size=data.model_vocab_size, hidden_size=heads * config.head_dim, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=max(config.length + 1, 64), fused_loss=config.fused_loss))
    if config.precision in ("bf16", "bf16-sr"):
        model = model.to(torch.bfloat16)  # weights, gradients and AdamW's moments all in bf16
    steps = config.steps
    eval_steps = config.eval_steps or max(steps // 20, 1)
    out = Path(config.output_dir)
    args = capacity_training_arguments(
        output_dir=str(out), batch_size=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, adam_beta2=config.adam_beta2, min_lr_ratio=config.min_lr_ratio,
        warmup_steps=config.warmup, max_steps=steps, logging_steps=eval_steps, report_to=config.report_to,
        bf16=config.precision == "bf16-mixed", seed=config.seed, progress=config.progress,
        save_steps=config.save_steps or 0, save_total_limit=config.save_total_limit,
    )
    callback = MemorizationCallback(data, eval_steps=eval_steps, held_out=data.held_out(config.held_out))

    class StopWhenSaturated(TrainerCallback):  # added after ``callback``: it reads this step's measurement
        def on_step_end(self, args, state, control, **kwargs):
            lr = kwargs["lr_scheduler"].get_last_lr()[0] if kwargs.get("lr_scheduler") else 0.0
            if (config.until_saturated and callback._measured_step == state.global_step
                    and stops_here(callback.history, lr, config.learning_rate)):
                control.should_training_stop = True

    # numpy rows: the collator stacks arrays instead of converting Python lists
    trainer = Trainer(model=model, args=args, train_dataset=data.to_dataset().with_format("numpy"),
                      optimizer_cls_and_kwargs=_stochastic_rounding_adamw(args) if config.precision == "bf16-sr"
                      else None)
    callback.attach(trainer)
    trainer.add_callback(StopWhenSaturated())
    out.mkdir(parents=True, exist_ok=True)  # recorded first, so that a run killed part-way is recognised
    (out / RUN_CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    with transformers_progress_bars(config.progress):  # transformers' own bars (saving weights) too
        trainer.train(resume_from_checkpoint=checkpoint)
        step = trainer.state.global_step
        if not callback.history or callback.history[-1]["step"] != step:
            callback.measure(trainer.model, step)
        # resumed from the final checkpoint, nothing was left to train: its measurement is restored, not its report
        report = callback.last_report if callback._measured_step == step and callback.last_report is not None else (
            memorized_bits(trainer.model, data))
        trainer.model.save_pretrained(str(out))
    result = _result(config, report, callback.history[-1]["heldout_memorized_bits"], callback.history, step)
    (out / RESULT_NAME).write_text(json.dumps(result, indent=2) + "\n")
    for folder in out.glob("checkpoint-*"):  # the run is finished: nothing will resume from them
        shutil.rmtree(folder)
    return result


def _stochastic_rounding_adamw(args) -> tuple[type, dict]:
    """``StochasticRoundingAdamW`` with the settings of the AdamW ``args`` would give, for the Trainer's
    ``optimizer_cls_and_kwargs`` (the Trainer forms the decay / no-decay parameter groups as for its own AdamW)."""
    from .stochastic_rounding import StochasticRoundingAdamW

    return StochasticRoundingAdamW, {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2),
                                     "eps": args.adam_epsilon}


def remeasure_memorization(run_dir) -> dict:
    """Re-measure a saved memorization run: regenerate its sequences (and held-out set) from its recorded config,
    load its model and measure the bits again. Returns ``memorized_bits``, ``heldout_memorized_bits``,
    ``bits_per_param``, ``num_params``, and ``recorded`` (what the run wrote when it finished)."""
    from pathlib import Path

    from .models.registration import load_causal_lm

    path = Path(run_dir)
    config_file = path / RUN_CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no {RUN_CONFIG_NAME}: pass a folder written by `hf-capacity memorize` "
                                "(runs made before the config was recorded cannot be re-measured)")
    config = MemorizationRunConfig.from_dict(json.loads(config_file.read_text()))
    from .logging_filters import transformers_progress_bars

    with transformers_progress_bars(False):
        model = load_causal_lm(path).eval()
    data = config.sequences()
    report = memorized_bits(model, data)
    held = memorized_bits(model, data.held_out(config.held_out))
    recorded = json.loads((path / RESULT_NAME).read_text()) if (path / RESULT_NAME).is_file() else None
    return {"memorized_bits": report.bits_total, "heldout_memorized_bits": held.bits_total,
            "bits_per_param": report.bits_per_param, "num_params": report.num_params, "data_bits": data.entropy_bits,
            "recorded": None if recorded is None else {
                k: recorded[k] for k in ("memorized_bits", "heldout_memorized_bits", "bits_per_param")}}
