"""Registering a model family with the transformers Auto classes and for remote-code saving (one rule for all)."""

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel


def register_causal_lm(config_class: type[PreTrainedConfig], model_class: type[PreTrainedModel]) -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``config_class.model_type`` to these classes, and
    have ``save_pretrained`` copy their code and write ``auto_map`` (so ``trust_remote_code=True`` loads a saved
    folder without hf-capacity installed). Idempotent: registering the same classes again changes nothing."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForCausalLM")
