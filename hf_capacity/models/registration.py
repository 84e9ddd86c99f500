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


CODE_CHOICES = ("installed", "folder")


def load_causal_lm(model_dir, *, code: str = "installed", **kwargs) -> PreTrainedModel:
    """Load a saved causal LM, choosing whose code runs it.

    ``code="installed"``: the classes registered in this process (hf-capacity's own, for its families; any other
    model type loads as ``AutoModelForCausalLM`` would). ``code="folder"``: the modeling files saved in
    ``model_dir`` (its ``auto_map``), what a Hub user gets with ``trust_remote_code=True`` and no hf-capacity
    installed. ``kwargs`` go to ``from_pretrained`` (``dtype``, ``quantization_config``, ...).
    """
    import json
    from pathlib import Path

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    if code not in CODE_CHOICES:
        raise ValueError(f"code must be one of {', '.join(CODE_CHOICES)}, got {code!r}")
    if code == "installed":
        return AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, **kwargs)
    config_file = Path(model_dir) / "config.json"
    auto_map = json.loads(config_file.read_text()).get("auto_map", {}) if config_file.is_file() else {}
    if "AutoModelForCausalLM" not in auto_map:
        raise ValueError(
            f"{model_dir} carries no model code of its own (no auto_map.AutoModelForCausalLM in config.json): "
            "use code='installed'"
        )
    model_class = get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], str(model_dir))
    return model_class.from_pretrained(model_dir, **kwargs)
