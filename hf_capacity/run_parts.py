"""What a knowledge run is built from: its data, its model, what the model knew before, and what the run records.

``RunParts`` builds a fresh run's parts from its ``CapacityTrainingConfig``: the configured population with a
tokenizer trained on it, and a freshly initialised model named like the paper. An adapter run, which starts from a
base model, gets its parts from ``adapters.AdapterRunParts``; ``adapters.run_parts(config)`` gives a run the ones it
needs, and ``training.train_capacity`` asks both kinds for their parts in the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .data import BioDPopulation, BioSPopulation, JunkConfig, KnowledgeData
from .model_names import parse_model_name

if TYPE_CHECKING:
    from .bits import KnowledgeBits
    from .evaluation import PriorKnowledge
    from .training import CapacityTrainingConfig

CONFIG_FILE = "training_config.json"
"""A run's settings, written into its folder before its first step (so a resumed run can be recognised)."""


def field_default(config_class, name: str):
    """The default value of the dataclass field ``name`` of ``config_class``."""
    f = config_class.__dataclass_fields__[name]
    return f.default_factory() if callable(f.default_factory) else f.default


class RunParts:
    """The parts of a fresh run: data, model, the prior knowledge its bits are net of (none), the population whose
    forgetting it measures (none) and what its folder records (its settings as configured)."""

    DATA_FIELDS: tuple[str, ...] = ("dataset", "seed", "vocab_size", "fit_vocabulary", "domain_token", "name_offset")
    """The settings ``data`` reads besides n_people, biod and junk: the population, its tokenizer and renderings."""
    BASE_FIELDS: tuple[str, ...] = ()
    """Settings the run takes from a base model instead of its config (none: a fresh run has no base)."""

    def __init__(self, config: CapacityTrainingConfig):
        self.config = config

    # -------------------------------------------------------------------------------------------------- data
    def population(self):
        """The configured population (bioS or bioD, from ``name_offset`` on)."""
        config = self.config
        offset = config.name_offset or 0
        if config.dataset == "bioD":
            return BioDPopulation(config.n_people, seed=config.seed, name_offset=offset, **config.biod)
        return BioSPopulation(config.n_people, seed=config.seed, name_offset=offset)

    def data(self) -> KnowledgeData:
        """The run's population, its tokenizer (trained on it) and rendering options (junk, domain token)."""
        config = self.config
        junk = JunkConfig(config.junk_fraction, config.junk_n_people) if config.junk_fraction > 0 else None
        return KnowledgeData.create(
            self.population(),
            simple=config.dataset == "bioS-simple",
            domain_token=config.domain_token,
            junk=junk,
            vocab_size=config.vocab_size,
            fit_vocabulary=config.fit_vocabulary,
        )

    # ------------------------------------------------------------------------------------------------- model
    def model(self, tokenizer):
        """A freshly initialised model named like the paper (gpt2-ℓ-h, llama-ℓ-h, memory-llama-ℓ-h)."""
        from . import models  # noqa: F401 - registers the model families with the Auto classes
        from .models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM
        from .models.memory_llama import MemoryLlamaConfig, MemoryLlamaForCausalLM, default_memory_layers

        config = self.config
        family, layers, heads = parse_model_name(config.model)
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
                extra.update(num_experts=config.num_experts,
                             moe_capacity_factor_train=config.moe_capacity_factor_train,
                             moe_capacity_factor_eval=config.moe_capacity_factor_eval)
            return CapacityGPT2ForCausalLM(CapacityGPT2Config(**common, **extra))
        mlp_type = config.mlp_type or "gated"
        llama = dict(common, mlp_type=mlp_type)  # MemoryLlamaConfig gives the type its parameter-matched width
        if family == "memory-llama":
            llama.update(config.memory, memory_layers=default_memory_layers(layers, count=min(3, layers)))
            llama.setdefault("memory_value_dim", hidden)
        return MemoryLlamaForCausalLM(MemoryLlamaConfig(**llama))

    def planned_params(self, data: KnowledgeData) -> int | None:
        """The model's P (the paper's count on ``data``'s tokens) before anything trains: the model built on the meta
        device (no weights, no memory), which checks its config too."""
        import torch

        from .params import count_parameters

        with torch.device("meta"):
            return count_parameters(self.model(data.tokenizer), data.used_token_ids()).paper_params

    # ------------------------------------------------------------------------------------ what it knew before
    def prior_knowledge(self, model, data: KnowledgeData) -> PriorKnowledge | None:
        """What ``model`` knows of ``data``'s people before training, which the run's bits are net of: nothing."""
        return None

    def new_bits_max(self, data: KnowledgeData, bits_max: KnowledgeBits | None = None) -> KnowledgeBits:
        """The part of ``bits_max`` (default: ``data``'s) the run can add to its model: all of it."""
        return data.bits_max() if bits_max is None else bits_max

    def base_population(self) -> KnowledgeData | None:
        """The population the model knew before the run, whose forgetting the run measures: none."""
        return None

    # ---------------------------------------------------------------------------------------- what it records
    def recorded_settings(self) -> dict:
        """What ``training_config.json`` records of the run's settings: its config's fields."""
        return self.config.to_dict()

    def applied(self, data: KnowledgeData, model) -> dict:
        """What the run applied besides its settings, for ``training_config.json``'s ``applied``: nothing more."""
        return {}

    def record_base(self, model, output_dir) -> str | None:
        """Record the base model in the saved run's files and return its path as recorded: no base."""
        return None

