"""Adapter runs: new knowledge taught to a trained model through peft (LoRA, QLoRA) or full fine-tuning.

An adapter run starts from a base model folder (an ``hf-capacity train`` run, or any causal LM saved on disk)
and trains on a *new* population of the same format: for a run folder, the people after the base's own
(``name_offset``: distinct names, independent values; bioD keeps the base's diversity sets), rendered with
the base's tokenizer. Capacity accounting (``hf_capacity.params``): P is the trainable adapter parameters, the
base's P is reported apart, and the base population's knowledge is measured before and after (forgetting).

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
        raise ValueError(f"init_from {str(path)!r} is not a folder: pass a model folder (e.g. a `hf-capacity train` output)")
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


def load_adapter_run(folder: str | os.PathLike, *, code: str = "installed"):
    """A saved adapter run (``adapter_config.json``) as a ``PeftModel`` on its base model, loaded as it was
    trained (a QLoRA run's base in 4-bit: its ``training_config.json`` says ``load_in_4bit``)."""
    from peft import PeftModel

    folder = Path(folder)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    base_path = adapter.get("base_model_name_or_path")
    if not base_path or not Path(base_path).is_dir():
        raise ValueError(f"{folder}'s adapter was trained on {base_path!r}, which is not a folder here: "
                         "load it with PeftModel.from_pretrained on that base model")
    training = folder / "training_config.json"
    in_4bit = bool(json.loads(training.read_text()).get("load_in_4bit")) if training.is_file() else False
    base = load_base_model(base_path, load_in_4bit=in_4bit, code=code)
    with _quiet_peft():
        return PeftModel.from_pretrained(base, folder).eval()


@contextlib.contextmanager
def _quiet_peft():
    """peft 0.21 reads a transformers 5.24 deprecated alias (``is_gradient_checkpointing``): not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
