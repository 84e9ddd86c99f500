"""Post-training quantized capacity: reload a model in int8 / 4-bit (nf4, fp4) with bitsandbytes and re-measure bits.

The paper quantized with GPTQ; this uses bitsandbytes (LLM.int8() and 4-bit NF4/FP4 round-to-nearest with
block-wise scales), which is what runs on CPU and GPU through ``transformers``' ``BitsAndBytesConfig``; results
are comparable in kind, not identical. On CPU, 4-bit layers get ``support_avx512bf16_for_cpu = False`` so that
their weights are not repacked in place on AVX512-BF16 machines (see the project's HF-stack notes).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .data.knowledge_data import KnowledgeData
from .evaluation import KnowledgeReport, evaluate_knowledge

SCHEMES = ("int8", "nf4", "fp4")


def quantization_config(scheme: str, compute_dtype: torch.dtype = torch.bfloat16):
    """The ``BitsAndBytesConfig`` of a scheme name: "int8", "nf4" or "fp4" (4-bit layers compute in
    ``compute_dtype``)."""
    from transformers import BitsAndBytesConfig

    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if scheme in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=scheme, bnb_4bit_compute_dtype=compute_dtype
        )
    raise ValueError(f"unknown quantization scheme {scheme!r}: choose from {', '.join(SCHEMES)}")


def load_quantized(model_dir: str | os.PathLike, scheme: str, *, code: str = "installed"):
    """Load a saved causal LM quantized with ``scheme`` (CPU-safe settings applied); ``code``: whose modeling
    code runs it, "installed" or the "folder"'s own (see ``hf_capacity.models.registration.load_causal_lm``)."""
    return load_bnb_model(model_dir, quantization_config(scheme), dtype=torch.bfloat16, code=code).eval()


def load_bnb_model(model_dir: str | os.PathLike, config, *, dtype: torch.dtype, code: str = "installed"):
    """Load a saved causal LM with a ``BitsAndBytesConfig``, CPU-safe: bitsandbytes' per-matmul warnings off,
    and ``support_avx512bf16_for_cpu = False`` on every 4-bit layer, so that on AVX512-BF16 CPUs the first
    eval-mode forward does not repack the weights in place (which alters them and stops LoRA gradients)."""
    from .models.registration import load_causal_lm

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    model = load_causal_lm(model_dir, code=code, quantization_config=config, dtype=dtype)
    try:
        import bitsandbytes as bnb

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency
        pass
    return model


@dataclass
class QuantizedCapacity:
    """Knowledge after quantization, and its ratio to full precision (same parameter count P)."""

    scheme: str
    report: KnowledgeReport
    ratio_to_full_precision: float

    @property
    def bits_per_param(self) -> float:
        return self.report.bits_per_param


def quantized_capacity(
    model,
    data: KnowledgeData,
    schemes: tuple[str, ...] = SCHEMES,
    *,
    full_precision: KnowledgeReport | None = None,
    code: str = "installed",
    **eval_kwargs,
) -> dict[str, QuantizedCapacity]:
    """Measure bits after each quantization scheme; ``model`` is a loaded model or a saved model folder.

    ``full_precision``: the unquantized report (measured here if not given). Bits per parameter keep the
    paper's P (the parameter count, not the storage bytes), so int8 vs 4-bit compare knowledge per weight.
    ``code``: for a folder, whose modeling code runs it ("installed" or the "folder"'s own).
    """
    for scheme in schemes:
        quantization_config(scheme)  # validate names before any work
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, os.PathLike)):
            model_dir = Path(model)
            if not (model_dir / "config.json").is_file():
                raise FileNotFoundError(f"{model_dir} is not a saved model folder (no config.json)")
            if full_precision is None:
                from .models.registration import load_causal_lm

                fp = load_causal_lm(model_dir, code=code)
                full_precision = evaluate_knowledge(fp, data, **eval_kwargs)
        else:
            model_dir = Path(tmp)
            model.save_pretrained(model_dir)
            code = "installed"  # the caller's model, saved by the classes it was built with
            if full_precision is None:
                full_precision = evaluate_knowledge(model, data, **eval_kwargs)
        results = {}
        for scheme in schemes:
            qmodel = load_quantized(model_dir, scheme, code=code)
            report = evaluate_knowledge(qmodel, data, **eval_kwargs)
            # P is the parameter count of the unquantized model (bitsandbytes packs 4-bit weights two per byte)
            report.num_params = full_precision.num_params
            ratio = report.bits.total / full_precision.bits.total if full_precision.bits.total > 0 else float("nan")
            results[scheme] = QuantizedCapacity(scheme, report, ratio)
            del qmodel
    return results
