"""One capacity run end to end: data → model by name → `Trainer` with the capacity callbacks → saved report.

``CapacityTrainingConfig`` holds everything a run needs (the paper's optimiser defaults: AdamW, cosine decay to
0.1× the peak with warm-up); ``train_capacity(config)`` runs it with the stock ``transformers.Trainer`` and writes
into ``output_dir`` the model (with its code, for ``trust_remote_code``), the tokenizer and ``knowledge_data.json``
(so ``hf-capacity eval`` can re-measure it), ``results.json``, the curve and the model card. The CLI's ``train``,
``demo`` and ``sweep`` commands are thin wrappers around it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .adapters import ALL_LINEAR, AdapterSettings, check_settings, run_parts
from .bits import BIOS_NAME_SPACE
from .checkpoints import last_checkpoint, setting_differences
from .data import KnowledgeData
from .model_names import parse_model_name
from .run_parts import CONFIG_FILE, field_default
from .steps import tokens_per_step

QUANTIZED_SCHEMES = ("int8", "nf4", "fp4", "gptq-int4", "gptq-int8")
"""The quantization schemes a run can measure: ``quantization.ALL_SCHEMES`` (not imported here: a config, and the CLI
that parses one, must not import torch)."""

ADAPTERS = "adapters"
"""The group of the settings of an adapter run (``hf_capacity.adapters``)."""


@dataclass
class CapacityTrainingConfig:
    """A knowledge-capacity training run (data, model, optimisation, evaluation).

    Each field's ``metadata`` holds its help text and how the command line spells it (``hf_capacity.schema``): the
    `hf-capacity train` and `demo` flags and the sweep files' fields are made from these declarations."""

    output_dir: str = field(default="runs/capacity", metadata={
        "help": "output folder", "flag": "--output", "aliases": ["-o"]})
    # data
    dataset: str = field(default="bioS", metadata={
        "help": "data family: bioS, bioS-simple or bioD", "cli": "population"})
    n_people: int = field(default=1000, metadata={"help": "number of people", "flag": "--N", "cli": "population"})
    biod: dict = field(default_factory=lambda: {
        "n_attributes": 4, "chunks_per_value": 2, "diversity": 100, "chunk_length": 2, "alphabet": 20,
    }, metadata={"help": "the bioD shape: n_attributes, chunks_per_value, diversity, chunk_length, alphabet "
                         "(--K --C --D --L --T)", "cli": "population"})
    junk_fraction: float = field(default=0.0, metadata={"help": "fraction of windows from junk people"})
    junk_n_people: int = field(default=100_000_000, metadata={
        "help": "junk people N' (of the data's format)", "flag": "--junk-N"})
    domain_token: bool = field(default=False, metadata={"help": "start useful biographies with a domain token"})
    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary trained on the population"})
    fit_vocabulary: bool = field(default=False, metadata={
        "help": "keep only the tokens the renderings use plus the 256 bytes (same tokens and P, a smaller head, "
                "faster steps; opt-in: it learned less in a 2026-12-02 check, see the README)"})
    block_diagonal: bool = field(default=False, metadata={
        "help": "add position_ids: no attention across biographies"})
    # model
    model: str = field(default="gpt2-2-2", metadata={
        "help": "gpt2-<layers>-<heads>, llama-<l>-<h> or memory-llama-<l>-<h>"})
    head_dim: int = field(default=64, metadata={"help": "width of each attention head"})
    mlp_type: str | None = field(default=None, metadata={
        "help": "gpt2: standard|gated|quarter|none; llama: gated|standard"})
    num_experts: int = field(default=0, metadata={"help": "gpt2: MoE experts per layer (0 = dense)", "minimum": 0})
    moe_capacity_factor_train: float | None = field(default=2.0, metadata={
        "help": "gpt2 MoE: an expert's token budget in training (the paper: 2; None: no dropping)", "cli": False})
    moe_capacity_factor_eval: float | None = field(default=8.0, metadata={
        "help": "gpt2 MoE: an expert's token budget at evaluation (the paper: 8; None: no dropping)",
        "cli": False})
    fused_loss: bool = field(default=False, metadata={
        "help": "gpt2: compute the head and cross-entropy chunk by chunk, gradients in the same pass (same loss, no "
                "tokens × vocabulary logits; see benchmarks/RESULTS.md)"})
    memory: dict = field(default_factory=lambda: {
        "memory_n_keys": 32, "memory_heads": 2, "memory_topk": 8, "memory_key_dim": 64,
    }, metadata={"help": "memory-llama: the product-key memory layers' settings (MemoryLlamaConfig fields)",
                 "cli": False})
    # training
    exposures: int = field(default=100, metadata={"help": "times every person's biography is seen"})
    context_length: int = field(default=512, metadata={"help": "tokens per training window"})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "peak learning rate (AdamW, cosine decay)", "flag": "--lr"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "the cosine decay's floor, as a fraction of the peak learning rate"})
    weight_decay: float = field(default=0.02, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=24, metadata={"help": "windows per step"})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches of --batch-size windows per optimizer step"})
    warmup_steps: int = field(default=1000, metadata={
        "help": "learning-rate warm-up (at most a tenth of the steps)", "minimum": 0})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon"})
    bf16: bool = field(default=False, metadata={"help": "train in bfloat16 mixed precision"})
    torch_compile: bool = field(default=False, metadata={"help": "compile the model with torch.compile"})
    dataloader_num_workers: int = field(default=0, metadata={
        "help": "processes loading the training windows (0: the main process)", "minimum": 0})
    seed: int = field(default=0, metadata={
        "help": "population and rendering seed (an adapter run's people are its base run's seed's: there it seeds "
                "the adapter's initialisation and the batch order)", "cli": "population"})
    max_steps: int | None = field(default=None, metadata={"help": "override the steps computed from --exposures"})
    streaming: bool = field(default=False, metadata={
        "help": "generate training windows on the fly (an iterable dataset: constant memory)"})
    save_steps: int | None = field(default=None, metadata={
        "help": "checkpoint every this many steps; the same command run again resumes from the newest"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept (the newest ones)"})
    resume: bool = field(default=True, metadata={
        "help": "ignore checkpoints already in the output folder and start from step 0", "flag": "--no-resume",
        "negated": True})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "delete the run already in the output folder, finished or not, and start a new one (default: a "
                "folder holding another run or a finished one is refused)", "flag": "--overwrite"})
    # evaluation
    eval_steps: int | None = field(default=None, metadata={
        "help": "measure knowledge every this many steps (unset: every tenth of the steps, ~10 points)"})
    eval_max_people: int | None = field(default=None, metadata={
        "help": "evaluate a subsample (default: everybody)"})
    quantized: tuple[str, ...] = field(default=(), metadata={
        "help": "schemes measured at the end: bitsandbytes int8/nf4/fp4, GPTQ gptq-int4/gptq-int8 (the paper's)",
        "nargs": "*", "choices": QUANTIZED_SCHEMES})
    logging_steps: int = field(default=50, metadata={"help": "log the loss every this many steps"})
    report_to: list[str] = field(default_factory=list, metadata={
        "help": "Trainer report_to backends (e.g. tensorboard)", "nargs": "*"})
    push_to_hub: bool = field(default=False, metadata={"help": "push the model, its card and results to the Hub"})
    hub_model_id: str | None = field(default=None, metadata={
        "help": "the Hub repository (default: the output folder's name)"})
    progress: bool = field(default=True, metadata={"help": "no progress bars", "flag": "--quiet", "negated": True})
    # adapters (hf_capacity.adapters): teach a new population to a trained model
    init_from: str | None = field(default=None, metadata={
        "help": "start from this model folder (a `hf-capacity train` run, or any causal LM with its tokenizer)",
        "metavar": "MODEL_DIR", "group": ADAPTERS})
    lora_r: int = field(default=0, metadata={
        "help": "LoRA rank (0 with --init-from: full fine-tuning)", "minimum": 0, "group": ADAPTERS})
    lora_alpha: float | None = field(default=None, metadata={
        "help": "LoRA alpha (default: equal to --lora-r, a scale of 1)", "group": ADAPTERS})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout", "group": ADAPTERS})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "peft target_modules: all-linear, or module names (gpt2: c_attn c_proj c_fc)",
        "aliases": ["--lora-targets"], "nargs": "+", "metavar": "MODULE", "group": ADAPTERS})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "QLoRA: load the frozen base in 4-bit NF4 through bitsandbytes (needs --lora-r)", "group": ADAPTERS})
    name_offset: int | None = field(default=None, metadata={
        "help": "index of the first new person in the name permutation (default: right after the base's people)",
        "minimum": 0, "group": ADAPTERS})

    def __post_init__(self) -> None:
        self.quantized = tuple(self.quantized)
        if self.dataset not in ("bioS", "bioS-simple", "bioD"):
            raise ValueError(f"dataset must be bioS, bioS-simple or bioD, got {self.dataset!r}")
        family, _, _ = parse_model_name(self.model)
        if self.fused_loss and family != "gpt2":
            raise ValueError(f"fused_loss is implemented for the gpt2 family, not {self.model!r}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1 (or None: no checkpoints), got {self.save_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        for name in (
            "n_people", "exposures", "context_length", "batch_size", "head_dim", "gradient_accumulation_steps"
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self._check_optimiser()
        if not 0 <= self.junk_fraction < 1:
            raise ValueError(f"junk_fraction must lie in [0, 1), got {self.junk_fraction}")
        if self.junk_fraction and self.n_people + self.junk_n_people > BIOS_NAME_SPACE:
            raise ValueError(f"n_people + junk_n_people must be at most N0 = {BIOS_NAME_SPACE:,} (one distinct name "
                             f"each), got {self.n_people:,} + {self.junk_n_people:,}")
        if self.dataset != "bioD" and self.biod != field_default(CapacityTrainingConfig, "biod"):
            raise ValueError(f"biod (the bioD shape --K --C --D --L --T) describes bioD data, but dataset is "
                             f"{self.dataset!r}: set dataset bioD, or leave the shape unset")
        check_settings(self)  # the LoRA settings, and those an adapter run cannot take
        if self.name_offset is not None and self.name_offset < 0:
            raise ValueError(f"name_offset must be >= 0, got {self.name_offset}")

    def _check_optimiser(self) -> None:
        """The optimiser settings torch would otherwise refuse only once training starts (after the output folder
        is made), or accept and train badly with."""
        checks = (("learning_rate", self.learning_rate > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                  ("adam_beta2", 0 <= self.adam_beta2 < 1, "in [0, 1)"),
                  ("adam_epsilon", self.adam_epsilon > 0, "> 0"),
                  ("warmup_steps", self.warmup_steps >= 0, ">= 0"))
        for name, ok, bound in checks:
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ValueError(f"{name} must be {bound}, got {value}")

    def adapter_settings(self):
        """The run's ``AdapterSettings`` (LoRA rank, alpha, dropout, targets, 4-bit base)."""
        targets = list(self.lora_target_modules)
        return AdapterSettings(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                               target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else tuple(targets),
                               load_in_4bit=self.load_in_4bit)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantized"] = list(self.quantized)
        return d


def build_data(config: CapacityTrainingConfig) -> KnowledgeData:
    """The run's population, tokenizer and rendering options (``adapters.run_parts(config).data()``): the configured
    population with a tokenizer trained on it, or for an adapter run new people of its base's format."""
    return run_parts(config).data()


def build_model(config: CapacityTrainingConfig, tokenizer):
    """The run's model (``adapters.run_parts(config).model(tokenizer)``): a freshly initialised model named like the
    paper (gpt2-ℓ-h, llama-ℓ-h, memory-llama-ℓ-h), or for an adapter run its base model with LoRA adapters or all of
    it trainable (full fine-tuning)."""
    return run_parts(config).model(tokenizer)

def steps_for_exposures(config: CapacityTrainingConfig, data: KnowledgeData, args=None,
                        windows: int | None = None) -> int:
    """Optimizer steps for one pass over the stream of ``config.exposures`` exposures: ceil(windows · context /
    ``tokens_per_step``). ``args``: the run's ``TrainingArguments`` (default: ``training_arguments(config)``, as
    ``train_capacity`` builds them on this machine); ``windows``: the packed stream's exact window count when it is
    materialised, otherwise estimated as E · N · mean tokens per biography / context (junk windows included)."""
    if windows is None:
        windows = data.stream(config.exposures, config.context_length).estimated_windows()
    args = training_arguments(config) if args is None else args
    return math.ceil(windows * config.context_length / tokens_per_step(args, config.context_length))


def training_arguments(config: CapacityTrainingConfig):
    """The run's ``TrainingArguments``; without ``config.max_steps`` its ``max_steps`` is -1 until
    ``train_capacity`` sets it (and the warm-up, at most a tenth of it) from the stream's length."""
    from .trainer_args import capacity_training_arguments

    max_steps = config.max_steps or -1
    return capacity_training_arguments(
        output_dir=config.output_dir,
        batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        min_lr_ratio=config.min_lr_ratio,
        warmup_steps=min(config.warmup_steps, max(max_steps // 10, 1)),
        max_steps=max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        bf16=config.bf16,
        seed=config.seed,
        progress=config.progress,
        torch_compile=config.torch_compile,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_drop_last=False,
        push_to_hub=config.push_to_hub,
        hub_model_id=config.hub_model_id,
        ddp_find_unused_parameters=False,
    )


PROGRESS_FIELDS = frozenset({
    "output_dir", "resume", "overwrite_output_dir", "progress", "logging_steps", "eval_steps", "save_steps",
    "save_total_limit", "report_to", "push_to_hub", "hub_model_id", "dataloader_num_workers", "quantized",
})
"""Settings that may change when a run resumes: how it is watched, saved and published, not what it learns."""


MIN_EXPOSURES = 100
"""Exposures per person under which a run is warned that it will learn little: the paper's models store about
1 bit per parameter after 100 exposures and 2 after 1,000 (Allen-Zhu & Li, Results 1-2), far less before."""
MIN_STEPS = 500
"""Optimizer steps under which a run is warned that it will learn little: `hf-capacity demo` stores ~95% of its
facts in ~1,000 steps and under half in ~500 (at 150 exposures); a shorter run is mostly warm-up and decay."""


def plan_lines(config: CapacityTrainingConfig, *, steps: int, warmup_steps: int, tokens_per_step: int,
               exposures: float, exact: bool, num_params: int, bits_max: float) -> list[str]:
    """What a run is about to do, in two lines (steps, tokens, exposures per person, P, bits_max, R_max in
    bits/param, the warm-up that really runs), then a "warning: ..." line for each setting known to learn little
    (fewer than ``MIN_EXPOSURES`` exposures or ``MIN_STEPS`` steps)."""
    seen = f"{exposures:g}" if exact else f"≈ {exposures:.1f}"
    lines = [f"plan: {steps:,} steps × {tokens_per_step:,} tokens = {steps * tokens_per_step:,} tokens, {seen} "
             f"exposures per person; P = {num_params:,}, bits_max = {bits_max:,.0f}, "
             f"R_max = {bits_max / num_params:.3f} bits/param"]
    warmup = f"warm-up {warmup_steps} step{'s' if warmup_steps != 1 else ''}"
    if warmup_steps < config.warmup_steps:
        warmup += f" (--warmup-steps {config.warmup_steps} is capped at a tenth of the {steps:,} steps)"
    lines.append(f"      {warmup}, learning rate {config.learning_rate:g}, cosine decay to "
                 f"{config.min_lr_ratio:g}× (recorded in {CONFIG_FILE})")
    if exposures < MIN_EXPOSURES:
        lines.append(f"warning: {seen} exposures per person: the paper's models store about 1 bit per parameter "
                     f"after {MIN_EXPOSURES} exposures and far less before, so expect few bits (raise --exposures)")
    if steps < MIN_STEPS:
        lines.append(f"warning: {steps:,} optimizer steps: runs with fewer than {MIN_STEPS} learn little (the demo "
                     "stores ~95% of its facts in ~1,000); raise --exposures or lower --batch-size")
    return lines


EVAL_POINTS = 10
"""Measurements of a run's knowledge curve without ``eval_steps`` (besides step 0): one every tenth of the run."""


def default_eval_steps(max_steps: int) -> int:
    """Steps between knowledge measurements of a run of ``max_steps`` optimizer steps without ``eval_steps``:
    max(1, max_steps // ``EVAL_POINTS``), so its curve has about ``EVAL_POINTS`` + 1 points, step 0 included."""
    return max(1, max_steps // EVAL_POINTS)


LEGACY_DEFAULTS = {"moe_capacity_factor_eval": None}
"""What a run recorded before these settings existed did: a record without them means these values (no expert token
budget at evaluation), not today's defaults."""


def run_differences(recorded: dict, config: CapacityTrainingConfig) -> list[str]:
    """The settings (outside ``PROGRESS_FIELDS``) in which ``config`` differs from a recorded run's
    ``training_config.json``, as "name old → new"; a field the record lacks counts as what runs did before it
    existed (``LEGACY_DEFAULTS``), else as its default. The MoE settings count only for a model with experts."""
    defaults = {**CapacityTrainingConfig().to_dict(), **LEGACY_DEFAULTS}
    ignored = set(PROGRESS_FIELDS) | set(run_parts(config).BASE_FIELDS)  # an adapter run's base decides these
    if not recorded.get("num_experts", defaults["num_experts"]) and not config.num_experts:
        ignored |= {"moe_capacity_factor_train", "moe_capacity_factor_eval"}
    return setting_differences(recorded, config.to_dict(), defaults, [f.name for f in fields(config)], ignored)


def check_output_dir(config: CapacityTrainingConfig) -> str | None:
    """The checkpoint this run resumes from (None: it starts at step 0), once ``output_dir`` is known to hold
    this same run or none; raises ValueError (one line) for a folder holding a finished run or another one.

    A folder holds a run when it has ``training_config.json``, ``results.json`` or checkpoints. The same run is
    one whose recorded settings equal ``config``'s outside ``PROGRESS_FIELDS``; it resumes from its newest
    checkpoint unless ``config.resume`` is False. With ``config.overwrite_output_dir`` a run already there is
    deleted (the whole folder, on the main process) and the new one starts at step 0."""
    out = Path(config.output_dir)
    recorded_file, checkpoint = out / CONFIG_FILE, last_checkpoint(out)
    finished = (out / "results.json").is_file()
    if not (recorded_file.is_file() or finished or checkpoint or any(out.glob("checkpoint-*"))):
        return None
    replace = "choose another output folder, or pass --overwrite (overwrite_output_dir) to replace it"
    if config.overwrite_output_dir:
        if out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
            raise ValueError(f"--overwrite would delete {out}, which holds the current directory: "
                             "choose another output folder")
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(out)
        return None
    differences = run_differences(json.loads(recorded_file.read_text()), config) if recorded_file.is_file() else []
    if differences:
        shown = ", ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
        raise ValueError(f"{out} holds another run ({shown}; see its {CONFIG_FILE}): {replace}")
    if finished:
        raise ValueError(f"{out} holds a finished run (results.json): {replace}")
    if not recorded_file.is_file():
        raise ValueError(f"{out} holds checkpoints but no {CONFIG_FILE}, so they may belong to another run: {replace}")
    return checkpoint if config.resume else None


def train_capacity(config: CapacityTrainingConfig, data: KnowledgeData | None = None, model=None):
    """Run one training run; returns ``(report, trainer)`` with the final ``KnowledgeReport``.

    With ``config.save_steps`` the run checkpoints periodically; started again on the same ``output_dir`` (after
    a kill or a crash) it resumes from its newest checkpoint: same data order (the stream is rebuilt
    deterministically and the Trainer skips the windows already trained on), same schedule and optimizer state.
    A folder holding a finished run or another run is refused before anything is built (``check_output_dir``).

    With ``config.progress`` False, transformers' own progress bars (saving and loading weights) are off too
    while the run lasts, so sweep logs hold one line a run. Launched on several processes (torchrun, accelerate),
    rank 0 writes the output folder and every rank returns only once it has (a barrier)."""
    from .logging_filters import transformers_progress_bars

    with transformers_progress_bars(config.progress):
        return _train_capacity(config, data, model)


def _train_capacity(config: CapacityTrainingConfig, data: KnowledgeData | None, model):
    import torch
    from transformers import Trainer, set_seed

    from .callbacks import CapacityReportCallback, ForgettingCallback, TrainingDivergedError, add_capacity_callbacks
    from .data.stream import collate_windows
    from .params import count_parameters
    from .report import json_safe

    checkpoint = check_output_dir(config)
    set_seed(config.seed)
    parts = run_parts(config)  # a fresh run's, or an adapter run's (adapters.AdapterRunParts)
    data = data or parts.data()
    model = model or parts.model(data.tokenizer)
    stream = data.stream(config.exposures, config.context_length, block_diagonal=config.block_diagonal)
    # numpy rows: the Trainer's collator stacks arrays instead of converting Python lists (~0.6 instead of ~2 ms
    # a batch of 8 x 256 tokens; a step 2.3% faster: benchmarks/bench_train_step.py). The table leaves the labels
    # out (5 instead of 13 bytes a token); collate_windows rebuilds them from the attention mask, batch by batch.
    train_dataset = (stream.to_iterable_dataset() if config.streaming
                     else stream.to_dataset(progress=config.progress, labels=False).with_format("numpy"))
    args = training_arguments(config)
    if not config.max_steps:  # one pass over the stream, at the batch the Trainer really takes a step
        windows = None if config.streaming else len(train_dataset)
        args.max_steps = steps_for_exposures(config, data, args, windows=windows)
        args.warmup_steps = min(config.warmup_steps, max(args.max_steps // 10, 1))  # at most a tenth of the run
    max_steps, warmup_steps = args.max_steps, args.warmup_steps
    eval_steps = config.eval_steps if config.eval_steps is not None else default_eval_steps(max_steps)
    optimizers = (None, None)
    if hasattr(model, "optimizer_param_groups"):  # memory values get their own learning rate
        groups = model.optimizer_param_groups(config.learning_rate, config.weight_decay)
        optimizers = (torch.optim.AdamW(groups, betas=(0.9, config.adam_beta2), eps=config.adam_epsilon), None)
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, optimizers=optimizers,
                      data_collator=collate_windows)
    prior = parts.prior_knowledge(model, data)  # an adapter run's bits are net of what its base knew
    callbacks = add_capacity_callbacks(
        trainer,
        data,
        eval_steps=eval_steps,
        context_length=config.context_length,
        quantized=config.quantized,
        save_report=False,
        knowledge_fraction=1.0,  # the knowledge stream alone
        max_people=config.eval_max_people,
        dataset_exposures=None if config.streaming or config.max_steps else config.exposures,
        prior=prior,
    )
    forgetting, base_population = None, parts.base_population()
    if base_population is not None:  # what the model knew before the run: measured at the start and the end
        forgetting = ForgettingCallback(base_population, max_people=config.eval_max_people)
        forgetting.attach(trainer)
    out = Path(config.output_dir)
    if trainer.is_world_process_zero():  # recorded first, so that a run killed part-way is recognised on resuming
        out.mkdir(parents=True, exist_ok=True)
        applied = {"max_steps": max_steps, "warmup_steps": warmup_steps, "eval_steps": eval_steps,  # what runs
                   **parts.applied(data, model)}
        (out / CONFIG_FILE).write_text(json.dumps({**parts.recorded_settings(), "applied": applied}, indent=2) + "\n")
        exact = not (config.streaming or config.max_steps)
        exposures = config.exposures if exact else callbacks["exposures"].exposures_at(args, max_steps)
        for line in plan_lines(config, steps=max_steps, warmup_steps=warmup_steps,
                               tokens_per_step=tokens_per_step(args, config.context_length), exposures=exposures,
                               exact=exact, num_params=count_parameters(model, data.used_token_ids()).paper_params,
                               bits_max=parts.new_bits_max(data).total):
            print(line, flush=True)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except TrainingDivergedError as err:
        if trainer.is_world_process_zero():  # keep what the run had: its config, its log and why it stopped
            diverged = {"message": str(err), "step": err.step, "last_checkpoint": err.last_checkpoint}
            (out / "diverged.json").write_text(json.dumps(diverged, indent=2) + "\n")
            history = json_safe(trainer.state.log_history)  # a diverged loss is NaN: written as null
            (out / "log_history.json").write_text(json.dumps(history, indent=2) + "\n")
        raise
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        base_model = parts.record_base(trainer.model, out)  # an adapter run's base folder, as its files record it
        data.save(out)
        # written after the model and data are saved, so a push to the Hub carries everything
        writer = CapacityReportCallback(
            callbacks["knowledge"],
            exposure_callback=callbacks["exposures"],
            quantized_callback=callbacks.get("quantized"),
            forgetting_callback=forgetting,
            base_model=base_model,
            model_name=out.name,
        )
        writer.trainer = trainer
        writer.publish(args, trainer.state, trainer.model)
    trainer.accelerator.wait_for_everyone()  # torchrun: no rank returns (to read results.json) before rank 0 wrote it
    return callbacks["knowledge"].last_report, trainer
