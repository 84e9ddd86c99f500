"""CapacityGPT2: the knowledge-capacity paper's GPT2-ℓ-h (rotary GPT-2) with MLP ablations and an optional MoE."""

from .configuration_capacity_gpt2 import CapacityGPT2Config
from .modeling_capacity_gpt2 import (
    CapacityGPT2ForCausalLM,
    CapacityGPT2Model,
    CapacityGPT2ModelOutput,
    CapacityGPT2PreTrainedModel,
)

__all__ = [
    "CapacityGPT2Config",
    "CapacityGPT2ForCausalLM",
    "CapacityGPT2Model",
    "CapacityGPT2ModelOutput",
    "CapacityGPT2PreTrainedModel",
]
