"""The capacity-oriented model families, registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModelForCausalLM

# --- capacity_gpt2 (idempotent: exist_ok=True, and register_for_auto_class only sets class attributes) ---
from .capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM

AutoConfig.register("capacity_gpt2", CapacityGPT2Config, exist_ok=True)
AutoModelForCausalLM.register(CapacityGPT2Config, CapacityGPT2ForCausalLM, exist_ok=True)
CapacityGPT2Config.register_for_auto_class()
CapacityGPT2ForCausalLM.register_for_auto_class("AutoModelForCausalLM")
# --- end capacity_gpt2 ---

# --- memory_llama ---
from . import _register_memory_llama  # noqa: E402,F401
from .memory_llama import MemoryLlamaConfig, MemoryLlamaForCausalLM  # noqa: E402

__all__ = ["CapacityGPT2Config", "CapacityGPT2ForCausalLM", "MemoryLlamaConfig", "MemoryLlamaForCausalLM"]
