"""Adapter runs: new knowledge taught to a trained model through peft (LoRA, QLoRA) or full fine-tuning.

An adapter run starts from a base model folder (an ``hf-capacity train`` run, or any causal LM saved on disk)
and trains on a *new* population of the same format: for a run folder, the people after the base's own
(``name_offset``: distinct names, independent values; bioD keeps the base's diversity sets), rendered with
the base's tokenizer. Capacity accounting (``hf_capacity.params``): P is the trainable adapter parameters, the
base's P is reported apart, and the base population's knowledge is measured before and after (forgetting). The
run's bits are what it added (``prior_knowledge``, ``evaluation.PriorKnowledge``): net of the base's own figure on
the new people, with bits_max leaving out the bioD diversity sets the new people share with the base run.

This module is the one seam between adapter runs and the rest: ``run_parts(config)`` gives ``training.train_capacity``
an ``AdapterRunParts`` for a config with ``init_from`` (data from the base, base model + adapter, prior knowledge,
forgetting, what the records say) and a fresh run's ``run_parts.RunParts`` otherwise; ``check_settings`` refuses,
when a config is built, the settings an adapter run would ignore. No other module reads ``init_from``. It is also
the thin layer over peft and bitsandbytes, and imports torch only when a model is loaded, so a run config (which
validates its ``AdapterSettings``) stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .data import KnowledgeData
from .data.knowledge_data import CONFIG_NAME
from .run_parts import CONFIG_FILE, RunParts, field_default

if TYPE_CHECKING:
    from .training import CapacityTrainingConfig

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
    training = folder / CONFIG_FILE
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


# ---------------------------------------------------------------------------------------------------- the seam
BASE_FIELDS = ("model", "head_dim", "mlp_type", "num_experts", "moe_capacity_factor_train", "moe_capacity_factor_eval",
               "memory", "vocab_size", "fit_vocabulary", "domain_token")
"""Settings an adapter run (``init_from``) takes from its base model, not from its own config: the architecture and
the tokenizer. Left unset they are recorded as the base's; set to another value they are refused (no effect)."""


def run_parts(config: CapacityTrainingConfig) -> RunParts:
    """The parts of the run ``config`` describes: an ``AdapterRunParts`` when it starts from a base model
    (``init_from``), else a fresh run's ``RunParts``."""
    return RunParts(config) if config.init_from is None else AdapterRunParts(config)


def check_settings(config: CapacityTrainingConfig) -> None:
    """Refuses (ValueError, one line) adapter settings that do not hold together, LoRA settings without a base model,
    and settings an adapter run cannot take (checked when the config is built; those its base decides,
    ``BASE_FIELDS``, are checked against the base folder when the data is built)."""
    config.adapter_settings()  # validates the LoRA fields
    if config.init_from is None:
        if config.lora_r or config.load_in_4bit:
            raise ValueError("LoRA adapters are trained on a base model: set init_from (--init-from RUN)")
        return
    if config.fused_loss:
        raise ValueError("with init_from the base model's config decides fused_loss; leave it unset")
    if config.quantized and config.lora_r:
        raise ValueError("quantized capacity is measured on full models; an adapter run cannot take quantized")
    if config.junk_fraction:
        raise ValueError(
            "an adapter run teaches a new population of the base's format; junk_fraction is not supported"
        )


def base_settings(init_from: str | os.PathLike) -> dict:
    """The ``BASE_FIELDS`` the base model folder was built with, as its ``training_config.json`` records them (an
    hf-capacity run); None for each one a folder does not record (any other causal LM: its own architecture and
    tokenizer, which no name here describes)."""
    recorded = Path(init_from) / CONFIG_FILE
    settings = json.loads(recorded.read_text()) if recorded.is_file() else {}
    return {name: settings.get(name) for name in BASE_FIELDS}


def check_base_settings(config: CapacityTrainingConfig) -> None:
    """Refuses (ValueError, one line) an adapter run's settings that its base decides (``BASE_FIELDS``), set to
    another value than the base's: they would be ignored."""
    base = base_settings(config.init_from)
    ignored = [f"{name} {getattr(config, name)!r}" + ("" if base[name] is None else f" (the base's: {base[name]!r})")
               for name in BASE_FIELDS
               if getattr(config, name) != field_default(type(config), name) and getattr(config, name) != base[name]]
    if ignored:
        raise ValueError(f"an adapter run uses its base model's architecture and tokenizer ({config.init_from}), so "
                         f"{', '.join(ignored)} would have no effect: leave {'it' if len(ignored) == 1 else 'them'} "
                         "unset")


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


class AdapterRunParts(RunParts):
    """The parts of an adapter run, which teaches a new population to the base model in ``init_from``.

    Data: for an hf-capacity base run, new people of its format (its seed, shape and tokenizer; the people after
    the base's, ``new_population_data``), whose dataset settings must be the base's; for any other model folder, the
    configured population rendered with that folder's tokenizer. Model: the base with LoRA adapters (``lora_r`` ≥ 1,
    a ``PeftModel`` whose adapters alone train) or all of it trainable (full fine-tuning). Its bits are net of what
    the base knew of the new people (``prior_knowledge``), the base run's own population is measured before and
    after (forgetting), and its records take ``BASE_FIELDS`` from the base and name the base folder."""

    DATA_FIELDS = (*RunParts.DATA_FIELDS, "init_from")
    BASE_FIELDS = BASE_FIELDS

    def __init__(self, config: CapacityTrainingConfig):
        super().__init__(config)
        self.base = config.init_from

    def data(self) -> KnowledgeData:
        config = self.config
        check_base_folder(self.base)
        check_base_settings(config)
        if is_capacity_run(self.base):
            base = KnowledgeData.load(self.base)
            _check_same_format(config, base)
            return new_population_data(base, config.n_people, name_offset=config.name_offset)
        population = self.population()
        tokenizer = load_base_tokenizer(self.base)  # any other model folder: its own tokenizer
        return KnowledgeData.create(population, simple=config.dataset == "bioS-simple", tokenizer=tokenizer)

    def model(self, tokenizer):
        settings = self.config.adapter_settings()
        base = load_base_model(self.base, load_in_4bit=settings.load_in_4bit)
        rows = base.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > rows:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the base model's embedding only "
                             f"{rows} rows")
        return add_adapter(base, settings)

    def planned_params(self, data: KnowledgeData) -> int | None:
        """None: the base model loads only when the run trains (its folder was checked when the data was built, the
        adapter settings when the config was); a LoRA run without peft installed says so here."""
        if self.config.lora_r:
            import peft  # noqa: F401
        return None

    def prior_knowledge(self, model, data: KnowledgeData):
        """The base's step-0 figure on the new people (``prior_knowledge``; a resumed run's weights load later)."""
        return prior_knowledge(model, data, self.base, max_people=self.config.eval_max_people, progress=False)

    def new_bits_max(self, data: KnowledgeData, bits_max=None):
        """``bits_max`` (default: ``data``'s) without the bioD diversity sets the new people share with an
        hf-capacity base run."""
        bits_max = data.bits_max() if bits_max is None else bits_max
        shared = is_capacity_run(self.base) and data.family == "bioD"
        return dataclasses.replace(bits_max, diversity_bits=0.0) if shared else bits_max

    def base_population(self) -> KnowledgeData | None:
        """The base run's own population (None for a base that is not an hf-capacity run)."""
        return KnowledgeData.load(self.base) if is_capacity_run(self.base) else None

    def recorded_settings(self) -> dict:
        """The config's fields, with ``BASE_FIELDS`` taken from the base (what really ran; null where the base records
        none)."""
        return {**self.config.to_dict(), **base_settings(self.base)}

    def applied(self, data: KnowledgeData, model) -> dict:
        """The people are the base's seed's (``--seed`` seeds the adapter and the batch order), from the offset the
        data used, and the model type of the base."""
        return {"population_seed": data.population.seed, "name_offset": data.population.name_offset,
                "base_model_type": getattr(getattr(model, "config", None), "model_type", None)}

    def record_base(self, model, output_dir) -> str:
        """The base recorded relative to the run when ``init_from`` is relative, so both folders can move
        (``record_base_path``)."""
        return record_base_path(model, output_dir, recorded_base_path(self.base, output_dir))


def run_label(config: Mapping) -> str | None:
    """How a sweep's run id names an adapter run (a resolved config mapping): the base folder's name and the method,
    ``base+lora4``, ``base+qlora2`` or ``base+ft``; None for a fresh run."""
    if not config.get("init_from"):
        return None
    rank = int(config.get("lora_r") or 0)
    method = f"qlora{rank}" if config.get("load_in_4bit") else f"lora{rank}" if rank else "ft"
    return f"{Path(str(config['init_from'])).name}+{method}"


def base_data_format(init_from: str | os.PathLike | None) -> tuple[str | None, dict]:
    """The data set (``bioS``, ``bioS-simple`` or ``bioD``) and the population settings recorded by the hf-capacity
    run in ``init_from``, what an adapter run's data settings default to; ``(None, {})`` without a base or for a base
    that is not an hf-capacity run."""
    if not init_from or not is_capacity_run(init_from):
        return None, {}
    recorded = json.loads((Path(init_from) / CONFIG_NAME).read_text())
    population = recorded.get("population", {})
    family = population.get("family")
    return ("bioS-simple" if family == "bioS" and recorded.get("simple") else family), population


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 reads a transformers 5.24 deprecated alias (``is_gradient_checkpointing``): not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
