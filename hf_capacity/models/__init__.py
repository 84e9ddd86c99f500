"""The capacity-oriented model families, registered with the transformers Auto classes on import."""

from .capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM
from .memory_llama import MemoryLlamaConfig, MemoryLlamaForCausalLM
from .registration import register_causal_lm

register_causal_lm(CapacityGPT2Config, CapacityGPT2ForCausalLM)
register_causal_lm(MemoryLlamaConfig, MemoryLlamaForCausalLM)

__all__ = ["CapacityGPT2Config", "CapacityGPT2ForCausalLM", "MemoryLlamaConfig", "MemoryLlamaForCausalLM"]
