"""Post-training quantized capacity: quantize a trained model and re-measure the bits it stores.

Two methods, named by scheme:

- bitsandbytes ("int8", "nf4", "fp4"): reload through ``transformers``' ``BitsAndBytesConfig`` (LLM.int8() and
  4-bit NF4/FP4, round to nearest in blocks of 64 with an absmax scale). On CPU, 4-bit layers get
  ``support_avx512bf16_for_cpu = False`` so that their weights are not repacked in place on AVX512-BF16 machines
  (see the project's HF-stack notes).
- GPTQ ("gptq-int4", "gptq-int8"), the paper's method (Frantar et al. 2022, through auto_gptq there): every
  linear layer of the blocks, one after another in forward order, is quantized column by column to a symmetric
  b-bit grid (one scale per row and group of ``GPTQ_GROUP_SIZE`` input columns, auto_gptq's defaults), each
  column's rounding error pushed onto the columns not yet quantized through the inverse Hessian of the layer's
  inputs on calibration text (1,000 biographies, as in the paper), with the earlier layers already quantized.
  Weights are stored dequantized (fake quantization): the bits measured are those of the quantized values.

Neither method touches the token embeddings or the output head (bitsandbytes and auto_gptq both leave them in
full precision), so P keeps the paper's count and a ratio compares knowledge per weight.
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
"""bitsandbytes schemes."""
GPTQ_SCHEMES = {"gptq-int4": 4, "gptq-int8": 8}
"""GPTQ schemes and their bits a weight."""
ALL_SCHEMES = SCHEMES + tuple(GPTQ_SCHEMES)
GPTQ_GROUP_SIZE = 128
"""Input columns sharing one scale (auto_gptq's default; a row narrower than this is one group)."""
GPTQ_DAMPING = 0.01
"""Fraction of the mean Hessian diagonal added to the diagonal (auto_gptq's ``damp_percent``)."""
GPTQ_CALIBRATION_PEOPLE = 1000
"""Biographies of calibration text, as in the paper."""


def check_schemes(schemes) -> tuple[str, ...]:
    """``schemes`` as a tuple, every name checked (bitsandbytes or GPTQ); raises ValueError naming the choices."""
    for scheme in schemes:
        if scheme not in ALL_SCHEMES:
            raise ValueError(f"unknown quantization scheme {scheme!r}: choose from {', '.join(ALL_SCHEMES)}")
    return tuple(schemes)


def quantization_config(scheme: str, compute_dtype: torch.dtype = torch.bfloat16):
    """The ``BitsAndBytesConfig`` of a bitsandbytes scheme name: "int8", "nf4" or "fp4" (4-bit layers compute in
    ``compute_dtype``)."""
    from transformers import BitsAndBytesConfig

    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if scheme in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=scheme, bnb_4bit_compute_dtype=compute_dtype
        )
    if scheme in GPTQ_SCHEMES:
        raise ValueError(f"{scheme} is GPTQ, not a bitsandbytes scheme: use gptq_quantize_model")
    raise ValueError(f"unknown quantization scheme {scheme!r}: choose from {', '.join(ALL_SCHEMES)}")


# ------------------------------------------------------------------------------------------------------ GPTQ
def _symmetric_grid(weights: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row scale of a symmetric ``bits``-bit grid covering ``weights`` (rows × columns): levels
    (q − 2^(b−1))·scale for q in 0..2^b − 1, with scale = 2·max|w| / (2^b − 1) (auto_gptq's ``sym=True``)."""
    top = weights.abs().amax(dim=1).clamp_min(1e-12)
    return 2 * top / (2**bits - 1)


def _round_to_grid(column: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    zero = 2 ** (bits - 1)
    return (torch.clamp(torch.round(column / scale) + zero, 0, 2**bits - 1) - zero) * scale


def gptq_quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, bits: int, *,
                         group_size: int = GPTQ_GROUP_SIZE, damping: float = GPTQ_DAMPING) -> torch.Tensor:
    """GPTQ of one weight matrix (out × in) given the Hessian 2·XᵀX/n of its inputs (in × in); returns the
    dequantized weights (same shape, float32).

    Columns are quantized left to right; each group's scales are taken from the current (error-updated) columns
    when the group starts; the error of column i, divided by the i-th diagonal of the upper Cholesky factor of
    H⁻¹, is subtracted from the later columns in proportion to that factor's row i (Frantar et al. 2022, Alg. 1,
    without its lazy blocking, which gives the same result). Inputs that never vary (zero diagonal) get weight 0.
    """
    w = weight.detach().to(torch.float64).clone()
    h = hessian.detach().to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    factor = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scale = None
    for i in range(w.shape[1]):
        if i % group_size == 0:
            scale = _symmetric_grid(w[:, i : i + group_size], bits)
        q[:, i] = _round_to_grid(w[:, i], scale, bits)
        error = (w[:, i] - q[:, i]) / factor[i, i]
        w[:, i + 1 :] -= error[:, None] * factor[i, i + 1 :][None, :]
    return q.to(torch.float32)


def round_to_nearest_weight(weight: torch.Tensor, bits: int, *, group_size: int = GPTQ_GROUP_SIZE) -> torch.Tensor:
    """The same grid as ``gptq_quantize_weight`` without error feedback (round to nearest): the baseline GPTQ
    improves on."""
    w = weight.detach().to(torch.float64)
    out = torch.empty_like(w)
    for start in range(0, w.shape[1], group_size):
        block = w[:, start : start + group_size]
        scale = _symmetric_grid(block, bits)
        out[:, start : start + group_size] = _round_to_grid(block, scale[:, None], bits)
    return out.to(torch.float32)


def quantizable_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """The linear layers GPTQ quantizes, in forward (module) order: every ``nn.Linear`` and GPT-2 ``Conv1D`` but
    the output head."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head]


def calibration_batches(data: KnowledgeData, n_people: int = GPTQ_CALIBRATION_PEOPLE, context_length: int = 512,
                        rows_per_batch: int = 16) -> list[torch.Tensor]:
    """Calibration text for GPTQ: the first ``n_people`` people's training rendering of exposure 0, EOS-joined
    and cut into rows of ``context_length`` tokens (the last row shorter), ``rows_per_batch`` rows a tensor."""
    import numpy as np

    people = np.arange(min(n_people, data.population.n_people))
    tokens = torch.as_tensor(data.renderer.render(people, 0).tokens.astype("int64"))
    rows = list(torch.split(tokens, context_length))
    full = [r for r in rows if len(r) == context_length]
    batches = [torch.stack(full[i : i + rows_per_batch]) for i in range(0, len(full), rows_per_batch)]
    if len(rows[-1]) < context_length:
        batches.append(rows[-1][None, :])
    return batches


@torch.no_grad()
def gptq_quantize_model(model, batches: list[torch.Tensor], bits: int, *, group_size: int = GPTQ_GROUP_SIZE,
                        damping: float = GPTQ_DAMPING, progress: bool = False):
    """Quantize ``model``'s linear layers in place with GPTQ, one after another in forward order (each layer's
    Hessian from its inputs with the layers before it already quantized); returns the model.

    ``batches``: token-id tensors of calibration text (``calibration_batches``). Embeddings and the output head
    stay as they are (as auto_gptq leaves them)."""
    from tqdm.auto import tqdm
    from transformers.pytorch_utils import Conv1D

    device = next(model.parameters()).device
    layers = quantizable_layers(model)
    for name, layer in tqdm(layers, desc=f"GPTQ int{bits}", disable=not progress):
        width = layer.weight.shape[0] if isinstance(layer, Conv1D) else layer.weight.shape[1]
        hessian = torch.zeros(width, width, dtype=torch.float64, device=device)
        count = [0]

        def accumulate(module, inputs, output, hessian=hessian, count=count):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            hessian.add_(x.T @ x)
            count[0] += x.shape[0]

        handle = layer.register_forward_hook(accumulate)
        try:
            for batch in batches:
                model(input_ids=batch.to(device))
        finally:
            handle.remove()
        hessian.mul_(2.0 / max(count[0], 1))
        weight = layer.weight.T if isinstance(layer, Conv1D) else layer.weight  # as (out × in)
        quantized = gptq_quantize_weight(weight, hessian, bits, group_size=group_size, damping=damping)
        weight.copy_(quantized.to(weight.dtype))
    return model


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
    """Measure bits after each quantization scheme (bitsandbytes or GPTQ, see the module docstring); ``model`` is
    a loaded model or a saved model folder (which is not changed).

    ``full_precision``: the unquantized report (measured here if not given). Bits per parameter keep the
    paper's P (the parameter count, not the storage bytes), so int8 vs 4-bit compare knowledge per weight.
    ``code``: for a folder, whose modeling code runs it ("installed" or the "folder"'s own).
    """
    check_schemes(schemes)  # validate names before any work
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
        batches = calibration_batches(data) if any(s in GPTQ_SCHEMES for s in schemes) else []
        for scheme in schemes:
            if scheme in GPTQ_SCHEMES:
                from .models.registration import load_causal_lm

                qmodel = gptq_quantize_model(load_causal_lm(model_dir, code=code).eval(), batches,
                                             GPTQ_SCHEMES[scheme])
            else:
                qmodel = load_quantized(model_dir, scheme, code=code)
            report = evaluate_knowledge(qmodel, data, **eval_kwargs)
            # P is the parameter count of the unquantized model (bitsandbytes packs 4-bit weights two per byte)
            report.num_params = full_precision.num_params
            ratio = report.bits.total / full_precision.bits.total if full_precision.bits.total > 0 else float("nan")
            results[scheme] = QuantizedCapacity(scheme, report, ratio)
            del qmodel
    return results
