"""MemoryLlama: LLaMA with Memory+ product-key memory layers that share one value table (spec §6)."""

from .configuration_memory_llama import MemoryLlamaConfig, default_memory_layers
from .modeling_memory_llama import (
    MemoryLlamaForCausalLM,
    MemoryLlamaModel,
    MemoryLlamaPreTrainedModel,
    MemoryPlusLayer,
    memory_lookup,
    product_key_topk,
)

__all__ = [
    "MemoryLlamaConfig",
    "MemoryLlamaForCausalLM",
    "MemoryLlamaModel",
    "MemoryLlamaPreTrainedModel",
    "MemoryPlusLayer",
    "default_memory_layers",
    "memory_lookup",
    "product_key_topk",
]
