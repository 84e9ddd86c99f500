"""Adapter runs: new knowledge taught to a trained model through peft (LoRA, QLoRA) or full fine-tuning.

An adapter run starts from a base model folder (an ``hf-capacity train`` run, or any causal LM saved on disk)
and trains on a *new* population of the same format: for a run folder, the people after the base's own
(``name_offset``: distinct names, independent values; bioD keeps the base's diversity sets), rendered with
the base's tokenizer. Capacity accounting (``hf_capacity.params``): P is the trainable adapter parameters, the
base's P is reported apart, and the base population's knowledge is measured before and after (forgetting). The
run's bits are what it added (``prior_knowledge``, ``evaluation.PriorKnowledge``): net of the base's own figure on
the new people, with bits_max leaving out the bioD diversity sets the new people share with the base run.

This module is the thin layer over peft and bitsandbytes; ``training.train_capacity`` and the CLI use it. It
imports torch only when a model is loaded, so a run config (which validates its ``AdapterSettings``) stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .data import KnowledgeData
from .data.knowledge_data import CONFIG_NAME

ALL_LINEAR = "all-linear"
"""peft's shorthand for every ``nn.Linear`` but the output head."""


@dataclass(frozen=True)
class AdapterSettings:
    """How a run adapts its base model: LoRA rank ``r`` (0: full fine-tuning), ``lora_alpha`` (None: equal
    to r, a scale of 1 at every rank, so one learning rate serves a rank ladder), dropout, target modules (peft
    names: ``"all-linear"`` or module names such as ``["c_attn", "c_fc"]``) and ``load_in_4bit`` (QLoRA: the
    frozen base in 4-bit NF4 through bitsandbytes)."""

    r: int = 0
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    target_modules: str | tuple[str, ...] = ALL_LINEAR
    load_in_4bit: bool = False

    def __post_init__(self) -> None:
        if self.r < 0:
            raise ValueError(f"lora_r must be >= 1 (or 0: full fine-tuning), got {self.r}")
        if self.load_in_4bit and self.r == 0:
            raise ValueError("load_in_4bit (QLoRA) trains LoRA adapters on a frozen 4-bit base: set lora_r >= 1")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("lora_target_modules is empty: name the modules to adapt, or use 'all-linear'")

    @property
    def method(self) -> str:
        """"full" (fine-tuning), "lora" or "qlora"."""
        return "full" if self.r == 0 else "qlora" if self.load_in_4bit else "lora"

    def lora_config(self):
        """The ``peft.LoraConfig`` (task type CAUSAL_LM)."""
        from peft import LoraConfig

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(r=self.r, lora_alpha=self.lora_alpha or self.r, lora_dropout=self.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")


def is_capacity_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model folder written by hf-capacity (it has ``knowledge_data.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


def check_base_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a ValueError saying why it cannot be a base model."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(
            f"init_from {str(path)!r} is not a folder: pass a model folder (e.g. a `hf-capacity train` output)"
        )
    if (folder / "adapter_config.json").is_file():
        raise ValueError(f"{folder} holds a peft adapter, not a full model: start from its base model folder")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a saved model folder (no config.json)")
    return folder


def people_after(population, extra: int = 0) -> int:
    """The first name index after ``population``'s people (and ``extra`` more, e.g. its junk people)."""
    return population.name_offset + population.n_people + extra


def new_population_data(base: KnowledgeData, n_people: int, *, name_offset: int | None = None,
                        simple: bool | None = None) -> KnowledgeData:
    """A new population in the base data's format, rendered with the base's tokenizer.

    Same family, shape and seed as ``base`` (so bioD values come from the same diversity sets); the people are
    those from ``name_offset`` on (default: right after the base's people and its junk people), so names never
    collide with the base's and values are independent of theirs."""
    pop = base.population
    junk = base.junk.n_people if base.junk is not None and base.junk.fraction > 0 else 0
    offset = people_after(pop, junk) if name_offset is None else name_offset
    first, last = pop.name_offset, people_after(pop, junk)
    if offset < last and offset + n_people > first:
        raise ValueError(
            f"people {offset:,}..{offset + n_people - 1:,} overlap the base model's own ({first:,}..{last - 1:,}): "
            f"leave name_offset unset (the new people start at {last:,})"
        )
    new = dataclasses.replace(pop, n_people=n_people, name_offset=offset)
    return KnowledgeData.create(new, simple=base.simple if simple is None else simple, domain_token=base.domain_token,
                                tokenizer=base.tokenizer)


def load_base_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in a (non hf-capacity) model folder, as a fast tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} has no tokenizer that loads with AutoTokenizer: {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path}'s tokenizer is not a fast tokenizer: spans need offset mappings")
    return tokenizer


def load_base_model(path: str | os.PathLike, *, load_in_4bit: bool = False, code: str = "installed"):
    """The base model, full precision or (QLoRA) 4-bit NF4 with float32 compute, CPU-safe.

    The 4-bit layers get ``support_avx512bf16_for_cpu = False``: on AVX512-BF16 CPUs the first eval-mode forward
    would otherwise repack their weights in place and LoRA gradients would stop (see the HF-stack notes)."""
    import torch

    from .models.registration import load_causal_lm

    folder = check_base_folder(path).resolve()  # adapter_config.json records where the base is
    if not load_in_4bit:
        return load_causal_lm(folder, code=code, dtype=torch.float32)
    from .quantization import load_bnb_model, quantization_config

    config = quantization_config("nf4", compute_dtype=torch.float32)
    return load_bnb_model(folder, config, dtype=torch.float32, code=code)


def add_adapter(model, settings: AdapterSettings):
    """``model`` ready to train: a ``PeftModel`` with LoRA adapters (only they train), or, for r = 0, the
    model itself with every parameter trainable (full fine-tuning)."""
    import torch

    if settings.r == 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if settings.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        with _quiet_peft():
            return get_peft_model(model, settings.lora_config())
    except ValueError as err:  # e.g. target modules not found: name the model's Linear modules
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"{err} (the base's Linear modules: {', '.join(linear)}; or use 'all-linear')") from err


def adapter_summary(model) -> dict | None:
    """What a ``PeftModel`` adapts (for results.json and the card): method, rank, alpha, targets, base model
    path; None for an ordinary model."""
    from .params import is_peft_model

    if not is_peft_model(model):
        return None
    name = getattr(model, "active_adapter", "default")
    config = model.peft_config[name if isinstance(name, str) else name[0]]
    targets = config.target_modules
    base = model.get_base_model()
    quantized = bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_quantized", False))
    return {
        "library": "peft",
        "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
        "method": "qlora" if quantized else "lora",
        "r": getattr(config, "r", None),
        "lora_alpha": getattr(config, "lora_alpha", None),
        "target_modules": targets if isinstance(targets, str) else sorted(targets or []),
        "base_model": config.base_model_name_or_path,
    }


def recorded_base_path(init_from: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """How a run in ``output_dir`` records its base model folder: an absolute ``init_from`` as given, a relative one
    relative to ``output_dir``, so that the two folders can move together (``base_folder`` reads it back)."""
    if Path(init_from).is_absolute():
        return str(init_from)
    return os.path.relpath(Path(init_from), Path(output_dir))


def record_base_path(model, output_dir: str | os.PathLike, path: str) -> str:
    """Record ``path`` (``recorded_base_path``) as the base of the adapter saved in ``output_dir`` (its
    ``adapter_config.json``) and of ``model``'s peft config (the card and results read it); returns it. Done after
    saving: peft would try to read a relative path from the working directory."""
    for adapter in (getattr(model, "peft_config", None) or {}).values():
        adapter.base_model_name_or_path = path
    config = Path(output_dir) / "adapter_config.json"
    if config.is_file():
        config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": path}, indent=2,
                                     sort_keys=True) + "\n")
    return path


def base_folder(folder: str | os.PathLike, base: str | os.PathLike | None = None) -> Path | None:
    """Where the base model of the run saved in ``folder`` is: ``base`` when given (a base that moved); else as the
    run records it (``adapter_config.json`` for LoRA and QLoRA, ``results.json`` for full fine-tuning), a relative
    path read from ``folder``. None for a run not trained from a base model. Raises ValueError when the recorded
    base is not a folder here."""
    folder = Path(folder)
    if base is not None:
        return check_base_folder(base)
    recorded = None
    if (folder / "adapter_config.json").is_file():
        recorded = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    elif (folder / "results.json").is_file():
        recorded = (json.loads((folder / "results.json").read_text()).get("adapter") or {}).get("base_model")
        if recorded is None:
            return None
    else:
        return None
    path = Path(recorded) if recorded and Path(recorded).is_absolute() else folder / str(recorded)
    if not recorded or not path.is_dir():
        raise ValueError(f"{folder} was trained from the base model {recorded!r}, which is not a folder here "
                         f"({path}): pass the base model folder (eval --base DIR)")
    return path


def load_adapter_run(folder: str | os.PathLike, *, base: str | os.PathLike | None = None, code: str = "installed"):
    """A saved adapter run (``adapter_config.json``) as a ``PeftModel`` on its base model (``base``, default: the
    folder the run records, see ``base_folder``), loaded as it was trained (a QLoRA run's base in 4-bit: its
    ``training_config.json`` says ``load_in_4bit``)."""
    from peft import PeftModel

    folder = Path(folder)
    base_path = base_folder(folder, base)
    training = folder / "training_config.json"
    in_4bit = bool(json.loads(training.read_text()).get("load_in_4bit")) if training.is_file() else False
    model = load_base_model(base_path, load_in_4bit=in_4bit, code=code)
    with _quiet_peft():
        return PeftModel.from_pretrained(model, folder).eval()


def prior_knowledge(model, data: KnowledgeData, init_from: str | os.PathLike, **eval_kwargs):
    """What an adapter run's model knows of its new people before training (``evaluation.PriorKnowledge``), measured
    on ``model`` as it starts: the base model itself, or with fresh (or disabled) adapters, which leave it unchanged.

    The diversity term counts as shared when the base is an hf-capacity bioD run (the new people have its diversity
    sets); the base's P is counted on its own population's tokens (every row for a base of unknown data).
    ``eval_kwargs`` go to ``evaluate_knowledge``; use the run's, so that its step-0 report nets to 0."""
    from .evaluation import PriorKnowledge, evaluate_knowledge
    from .params import count_parameters, is_peft_model

    report = evaluate_knowledge(model, data, **eval_kwargs)
    capacity_run = is_capacity_run(init_from)
    base_params = None
    if is_peft_model(model):
        tokens = KnowledgeData.load(init_from).used_token_ids() if capacity_run else None
        base_params = count_parameters(model, tokens).base_paper_params
    return PriorKnowledge.measured(report, shared_diversity=capacity_run and data.family == "bioD",
                                   base_params=base_params)


def base_population_summary(n_people: int, bits_before: float | None, after) -> dict:
    """The ``base_population`` entry of an adapter run's results: the base population's ``n_people``, the base's
    P on its tokens (``num_params``), ``bits_max``, ``bits_before`` (the base model), ``bits_after`` (the run's
    model, the ``after`` report), ``bits_forgotten`` and ``fraction_kept``."""
    p = after.num_params
    return {
        "n_people": n_people,
        "num_params": p.base_paper_params if p.is_adapter else p.paper_params,  # the base's P on its own data's tokens
        "bits_max": after.bits_max.total,
        "bits_before": bits_before,
        "bits_after": after.bits.total,
        "bits_forgotten": None if bits_before is None else bits_before - after.bits.total,
        "fraction_kept": None if not bits_before else after.bits.total / bits_before,
    }


def evaluate_adapter_run(folder: str | os.PathLike, data: KnowledgeData, *, base: str | os.PathLike | None = None,
                         code: str = "installed", **eval_kwargs):
    """Re-measure a saved run trained from a base model (LoRA, QLoRA or full fine-tuning) as its training reported
    it: its people's bits net of what the base knew of them (``prior_knowledge``), and, for an hf-capacity base, the
    base population's bits before (the base model alone) and after (the run's model) in
    ``report.extra["base_population"]``, so forgetting can be checked at any later time. ``base``: the base model
    folder, when it is not where the run records it."""
    from .evaluation import evaluate_knowledge
    from .models.registration import load_causal_lm

    folder = Path(folder)
    base_path = base_folder(folder, base)
    base_data = KnowledgeData.load(base_path) if is_capacity_run(base_path) else None
    if (folder / "adapter_config.json").is_file():
        model = load_adapter_run(folder, base=base_path, code=code)
        with model.disable_adapter():  # the base model itself
            prior = prior_knowledge(model, data, base_path, **eval_kwargs)
            before = evaluate_knowledge(model, base_data, **eval_kwargs) if base_data is not None else None
    else:
        model = load_causal_lm(folder, code=code)
        base_model = load_base_model(base_path, code=code)
        prior = prior_knowledge(base_model, data, base_path, **eval_kwargs)
        before = evaluate_knowledge(base_model, base_data, **eval_kwargs) if base_data is not None else None
        del base_model
    report = prior.apply(evaluate_knowledge(model, data, **eval_kwargs))
    if base_data is not None:
        after = evaluate_knowledge(model, base_data, **eval_kwargs)
        report.extra["base_population"] = base_population_summary(base_data.population.n_people,
                                                                  before.bits.total, after)
    return report


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 reads a transformers 5.24 deprecated alias (``is_gradient_checkpointing``): not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
