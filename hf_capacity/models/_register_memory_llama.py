"""Registers MemoryLlama with the transformers Auto classes and for remote-code saving (idempotent, on import)."""

from transformers import AutoConfig, AutoModelForCausalLM

from .memory_llama import MemoryLlamaConfig, MemoryLlamaForCausalLM

AutoConfig.register("memory_llama", MemoryLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(MemoryLlamaConfig, MemoryLlamaForCausalLM, exist_ok=True)
MemoryLlamaConfig.register_for_auto_class()
MemoryLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__: list[str] = []
