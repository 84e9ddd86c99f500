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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data import BioDPopulation, BioSPopulation, JunkConfig, KnowledgeData

MODEL_NAME = re.compile(r"^(gpt2|llama|memory-llama)-(\d+)-(\d+)$")


def check_model_name(name: str) -> tuple[str, int, int]:
    """``(family, layers, heads)`` of a model name like the paper's (``gpt2-6-4``: 6 layers, 4 heads of head_dim);
    raises ValueError for a name that is not one, or that asks for no layer or no head."""
    match = MODEL_NAME.match(str(name))
    if match is None:
        raise ValueError(
            f"unknown model {name!r}: use gpt2-<layers>-<heads>, llama-<layers>-<heads> or "
            "memory-llama-<layers>-<heads>, e.g. gpt2-6-4"
        )
    family, layers, heads = match.group(1), int(match.group(2)), int(match.group(3))
    if layers < 1 or heads < 1:
        raise ValueError(
            f"{name}: a model needs at least 1 layer and 1 head ({family}-ℓ-h: ℓ layers, h heads of head_dim)"
        )
    return family, layers, heads


@dataclass
class CapacityTrainingConfig:
    """A knowledge-capacity training run (data, model, optimisation, evaluation)."""

    output_dir: str = "runs/capacity"
    # data
    dataset: str = "bioS"  # bioS | bioS-simple | bioD
    n_people: int = 1000
    biod: dict = field(default_factory=lambda: {"n_attributes": 4, "chunks_per_value": 2, "diversity": 100, "chunk_length": 2, "alphabet": 20})
    junk_fraction: float = 0.0
    junk_n_people: int = 100_000_000
    domain_token: bool = False
    vocab_size: int = 4096  # BPE vocabulary trained on the population
    fit_vocabulary: bool = True  # then keep only the tokens the renderings use (same P, smaller head)
    block_diagonal: bool = False
    # model
    model: str = "gpt2-2-2"  # gpt2-ℓ-h | llama-ℓ-h | memory-llama-ℓ-h (h heads of head_dim)
    head_dim: int = 64
    mlp_type: str | None = None  # gpt2: standard|gated|quarter|none; llama: gated|standard
    num_experts: int = 0
    fused_loss: bool = False  # gpt2: head + cross-entropy fused chunk by chunk (same loss, faster training step)
    memory: dict = field(default_factory=lambda: {"memory_n_keys": 32, "memory_heads": 2, "memory_topk": 8, "memory_key_dim": 64})
    # training
    exposures: int = 100
    context_length: int = 512
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.02
    batch_size: int = 24
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 1000
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    bf16: bool = False
    torch_compile: bool = False  # compile the model with torch.compile (TrainingArguments.torch_compile)
    dataloader_num_workers: int = 0
    seed: int = 0
    max_steps: int | None = None  # None: the steps for `exposures`
    streaming: bool = False  # iterable dataset (constant memory) instead of a materialised one
    save_steps: int | None = None  # checkpoint every this many steps (None: no checkpoints)
    save_total_limit: int = 2  # checkpoints kept (the newest ones)
    resume: bool = True  # continue from the newest checkpoint in output_dir, if there is one
    # evaluation
    eval_steps: int | None = None
    eval_max_people: int | None = None
    quantized: tuple[str, ...] = ()
    logging_steps: int = 50
    report_to: list[str] = field(default_factory=list)
    push_to_hub: bool = False
    hub_model_id: str | None = None
    progress: bool = True
    # adapters (hf_capacity.adapters): teach a new population to a trained model
    init_from: str | None = None  # base model folder (a `hf-capacity train` run or any causal LM); None: fresh model
    lora_r: int = 0  # LoRA rank through peft; 0 with init_from: full fine-tuning
    lora_alpha: float | None = None  # None: equal to lora_r (scale 1 at every rank)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # peft target_modules
    load_in_4bit: bool = False  # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes)
    name_offset: int | None = None  # first person's index in the name permutation (None: after the base's people)

    def __post_init__(self) -> None:
        if self.dataset not in ("bioS", "bioS-simple", "bioD"):
            raise ValueError(f"dataset must be bioS, bioS-simple or bioD, got {self.dataset!r}")
        family, _, _ = check_model_name(self.model)
        if self.fused_loss and family != "gpt2":
            raise ValueError(f"fused_loss is implemented for the gpt2 family, not {self.model!r}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1 (or None: no checkpoints), got {self.save_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        for name in ("n_people", "exposures", "context_length", "batch_size", "head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.junk_fraction and self.dataset == "bioD":
            raise ValueError("junk mixing is defined for bioS data")
        self.adapter_settings()  # validates the LoRA fields
        if self.init_from is None:
            if self.lora_r or self.load_in_4bit:
                raise ValueError("LoRA adapters are trained on a base model: set init_from (--init-from RUN)")
        else:
            if self.fused_loss:
                raise ValueError("with init_from the base model's config decides fused_loss; leave it unset")
            if self.quantized and self.lora_r:
                raise ValueError("quantized capacity is measured on full models; an adapter run cannot take quantized")
            if self.junk_fraction:
                raise ValueError("an adapter run teaches a new population of the base's format; junk_fraction is not supported")
        if self.name_offset is not None and self.name_offset < 0:
            raise ValueError(f"name_offset must be >= 0, got {self.name_offset}")

    def adapter_settings(self):
        """The run's ``AdapterSettings`` (LoRA rank, alpha, dropout, targets, 4-bit base)."""
        from .adapters import ALL_LINEAR, AdapterSettings

        targets = list(self.lora_target_modules)
        return AdapterSettings(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                               target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else tuple(targets),
                               load_in_4bit=self.load_in_4bit)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantized"] = list(self.quantized)
        return d


def build_data(config: CapacityTrainingConfig) -> KnowledgeData:
    """The run's population, tokenizer and rendering options.

    With ``init_from`` an hf-capacity run: a new population of the base's format (its seed, shape and
    tokenizer; the people after the base's, see ``adapters.new_population_data``); the run's dataset settings
    must be the base's. With ``init_from`` any other model folder: the configured population rendered with that
    folder's tokenizer."""
    from . import adapters

    offset = config.name_offset or 0
    if config.init_from is not None:
        adapters.check_base_folder(config.init_from)
        if adapters.is_capacity_run(config.init_from):
            base = KnowledgeData.load(config.init_from)
            _check_same_format(config, base)
            return adapters.new_population_data(base, config.n_people, name_offset=config.name_offset)
    if config.dataset == "bioD":
        population = BioDPopulation(config.n_people, seed=config.seed, name_offset=offset, **config.biod)
    else:
        population = BioSPopulation(config.n_people, seed=config.seed, name_offset=offset)
    if config.init_from is not None:  # any other model folder: its own tokenizer
        tokenizer = adapters.load_base_tokenizer(config.init_from)
        return KnowledgeData.create(population, simple=config.dataset == "bioS-simple", tokenizer=tokenizer)
    junk = JunkConfig(config.junk_fraction, config.junk_n_people) if config.junk_fraction > 0 else None
    return KnowledgeData.create(
        population,
        simple=config.dataset == "bioS-simple",
        domain_token=config.domain_token,
        junk=junk,
        vocab_size=config.vocab_size,
        fit_vocabulary=config.fit_vocabulary,
    )


def _check_same_format(config: CapacityTrainingConfig, base: KnowledgeData) -> None:
    """An adapter run's data settings must be its base run's (new people, same format)."""
    if config.dataset != base.family:
        raise ValueError(f"the base run {config.init_from} was trained on {base.family}; an adapter run teaches new "
                         f"people of the same data set (dataset {base.family!r}, got {config.dataset!r})")
    if base.family == "bioD":
        pop = base.population
        theirs = {k: getattr(pop, k) for k in config.biod}
        if theirs != dict(config.biod):
            flags = " ".join(f"{k}={v}" for k, v in theirs.items())
            raise ValueError(f"the base run {config.init_from} has bioD shape {flags}; the adapter run's biod "
                             f"settings must match it (got {dict(config.biod)})")


def build_model(config: CapacityTrainingConfig, tokenizer):
    """A freshly initialised model named like the paper (gpt2-ℓ-h, llama-ℓ-h, memory-llama-ℓ-h); with
    ``init_from``, the base model loaded from that folder, with LoRA adapters (``lora_r`` ≥ 1, a ``PeftModel``
    whose adapters alone train) or all of it trainable (full fine-tuning)."""
    if config.init_from is not None:
        from .adapters import add_adapter, load_base_model

        settings = config.adapter_settings()
        base = load_base_model(config.init_from, load_in_4bit=settings.load_in_4bit)
        if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the base model's embedding only "
                             f"{base.get_input_embeddings().weight.shape[0]} rows")
        return add_adapter(base, settings)
    from . import models  # noqa: F401 - registers the model families with the Auto classes
    from .models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM
    from .models.memory_llama import MemoryLlamaConfig, MemoryLlamaForCausalLM, default_memory_layers

    family, layers, heads = MODEL_NAME.match(config.model).groups()
    layers, heads = int(layers), int(heads)
    hidden = heads * config.head_dim
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max(config.context_length, 1024),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "gpt2":
        extra = {"mlp_type": config.mlp_type} if config.mlp_type else {}
        if config.fused_loss:
            extra["fused_loss"] = True
        if config.num_experts:
            extra["num_experts"] = config.num_experts
        return CapacityGPT2ForCausalLM(CapacityGPT2Config(**common, **extra))
    intermediate = 8 * math.ceil(8 * hidden / 3 / 8)
    llama = dict(common, intermediate_size=intermediate, mlp_type=config.mlp_type or "gated")
    if family == "memory-llama":
        llama.update(config.memory, memory_layers=default_memory_layers(layers, count=min(3, layers)))
        llama.setdefault("memory_value_dim", hidden)
    return MemoryLlamaForCausalLM(MemoryLlamaConfig(**llama))


def tokens_per_step(args, context_length: int) -> int:
    """Tokens one optimizer step trains on: the Trainer's batch (``args.train_batch_size``: per-device batch × the
    GPUs one process drives, as DataParallel does without torchrun) × gradient accumulation × processes
    (``args.world_size``) × ``context_length`` tokens a window. The one count behind steps, exposures and sweep
    tables."""
    return args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1) * context_length


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
    import torch
    from transformers import TrainingArguments

    max_steps = config.max_steps or -1
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=min(config.warmup_steps, max(max_steps // 10, 1)),
        max_steps=max_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to,
        bf16=config.bf16,
        torch_compile=config.torch_compile,
        dataloader_num_workers=config.dataloader_num_workers,
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        disable_tqdm=not config.progress,
        dataloader_drop_last=False,
        push_to_hub=config.push_to_hub,
        hub_model_id=config.hub_model_id,
        ddp_find_unused_parameters=False,
    )


def last_checkpoint(output_dir: str | os.PathLike | None, before_step: int | None = None) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (None if there is none); with
    ``before_step``, the newest saved before that step.

    A checkpoint counts once its ``trainer_state.json`` is written: the Trainer writes it after the weights and
    the optimizer state, so a run killed while saving leaves a folder without it, which is skipped."""
    if not output_dir or not Path(output_dir).is_dir():
        return None
    steps = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            if before_step is None or int(suffix) < before_step:
                steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def train_capacity(config: CapacityTrainingConfig, data: KnowledgeData | None = None, model=None):
    """Run one training run; returns ``(report, trainer)`` with the final ``KnowledgeReport``.

    With ``config.save_steps`` the run checkpoints periodically; started again on the same ``output_dir`` (after
    a kill or a crash) it resumes from its newest checkpoint: same data order (the stream is rebuilt
    deterministically and the Trainer skips the windows already trained on), same schedule and optimizer state.

    With ``config.progress`` False, transformers' own progress bars (saving and loading weights) are off too
    while the run lasts, so sweep logs hold one line a run. Launched on several processes (torchrun, accelerate),
    rank 0 writes the output folder and every rank returns only once it has (a barrier)."""
    from transformers.utils import logging as hf_logging

    silence = not config.progress and hf_logging.is_progress_bar_enabled()
    if silence:
        hf_logging.disable_progress_bar()
    try:
        return _train_capacity(config, data, model)
    finally:
        if silence:
            hf_logging.enable_progress_bar()


def _train_capacity(config: CapacityTrainingConfig, data: KnowledgeData | None, model):
    import torch
    from transformers import Trainer, set_seed

    from .adapters import is_capacity_run
    from .callbacks import CapacityReportCallback, ForgettingCallback, TrainingDivergedError, add_capacity_callbacks

    set_seed(config.seed)
    data = data or build_data(config)
    model = model or build_model(config, data.tokenizer)
    stream = data.stream(config.exposures, config.context_length, block_diagonal=config.block_diagonal)
    train_dataset = stream.to_iterable_dataset() if config.streaming else stream.to_dataset(progress=config.progress)
    args = training_arguments(config)
    if not config.max_steps:  # one pass over the stream, at the batch the Trainer really takes a step
        windows = None if config.streaming else len(train_dataset)
        args.max_steps = steps_for_exposures(config, data, args, windows=windows)
        args.warmup_steps = min(config.warmup_steps, max(args.max_steps // 10, 1))
    optimizers = (None, None)
    if hasattr(model, "optimizer_param_groups"):  # memory values get their own learning rate
        groups = model.optimizer_param_groups(config.learning_rate, config.weight_decay)
        optimizers = (torch.optim.AdamW(groups, betas=(0.9, config.adam_beta2), eps=config.adam_epsilon), None)
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, optimizers=optimizers)
    callbacks = add_capacity_callbacks(
        trainer,
        data,
        eval_steps=config.eval_steps,
        context_length=config.context_length,
        quantized=config.quantized,
        report=False,
        max_people=config.eval_max_people,
        stream_exposures=None if config.streaming or config.max_steps else config.exposures,
        knowledge_fraction=1.0,  # the knowledge stream alone
    )
    forgetting = None
    if config.init_from is not None and is_capacity_run(config.init_from):  # the base population's knowledge
        forgetting = ForgettingCallback(KnowledgeData.load(config.init_from), max_people=config.eval_max_people)
        forgetting.attach(trainer)
    out = Path(config.output_dir)
    checkpoint = last_checkpoint(out) if config.resume else None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except TrainingDivergedError as err:
        if trainer.is_world_process_zero():  # keep what the run had: its config, its log and why it stopped
            out.mkdir(parents=True, exist_ok=True)
            (out / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            diverged = {"message": str(err), "step": err.step, "last_checkpoint": err.last_checkpoint}
            (out / "diverged.json").write_text(json.dumps(diverged, indent=2) + "\n")
            (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
        raise
    if trainer.is_world_process_zero():
        trainer.save_model(str(out))
        data.save(out)
        (out / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # written after the model and data are saved, so a push to the Hub carries everything
        writer = CapacityReportCallback(
            callbacks["knowledge"],
            exposure_callback=callbacks["exposures"],
            quantized_callback=callbacks.get("quantized"),
            forgetting_callback=forgetting,
            base_model=config.init_from,
            model_name=out.name,
        )
        writer.trainer = trainer
        writer.publish(args, trainer.state, trainer.model)
    trainer.accelerator.wait_for_everyone()  # torchrun: no rank returns (to read results.json) before rank 0 wrote it
    return callbacks["knowledge"].last_report, trainer
