"""Memorized bits (Morris et al. 2025): information content minus code length under the model, per sample.

For uniform random sequences (``RandomSequences``) a sample's information is exactly S · log2 V bits, so
memorized bits = max(0, S · log2 V − (−log2 p(x | θ))), summed over samples. For a user's own text, the
reference is another model: max(0, log2 p_θ(x) − log2 p_ref(x)) per sample (``relative_memorization``).
Code lengths are in bits; a sample's code length is its summed next-token loss (nats) / ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .data.random_sequences import RandomSequences


@dataclass
class MemorizationReport:
    """What a model memorized of a set of samples, in bits."""

    bits_per_sample: np.ndarray  # memorized bits of each sample (clipped at 0)
    code_length_bits: np.ndarray  # −log2 p(sample | model)
    information_bits: float  # the set's information (N · S · log2 V), or the reference's code lengths summed
    num_params: int

    @property
    def bits_total(self) -> float:
        return float(self.bits_per_sample.sum())

    @property
    def bits_per_param(self) -> float:
        return self.bits_total / self.num_params if self.num_params else float("nan")

    def log_metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}memorized_bits": self.bits_total, f"{prefix}memorized_bits_per_param": self.bits_per_param,
                f"{prefix}memorized_fraction": self.bits_total / self.information_bits if self.information_bits else 0.0}


@torch.no_grad()
def code_lengths_bits(model, input_ids: np.ndarray | torch.Tensor, batch_size: int = 64,
                      attention_mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """−log2 p(x_1 … x_T | x_0) of each row (bits): the summed next-token losses after the first token."""
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size].to(device)
        m = None if mask is None else mask[start : start + batch_size].to(device)
        logits = model(input_ids=batch, attention_mask=m).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        if m is not None:
            loss = loss * m[:, 1:]
        out.append(loss.sum(1).double().cpu().numpy() / math.log(2))
    model.train(was_training)
    return np.concatenate(out) if out else np.empty(0)


def memorized_bits(model, sequences: RandomSequences, *, batch_size: int = 64, num_params: int | None = None
                   ) -> MemorizationReport:
    """Bits of ``sequences`` that ``model`` memorized: Σ max(0, S · log2 V − code length). ``num_params``:
    the P to divide by (default every parameter of the model)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and vocab < sequences.model_vocab_size:
        raise ValueError(f"the model's vocabulary ({vocab}) is smaller than the sequences need "
                         f"({sequences.model_vocab_size}: {sequences.vocab_size} symbols and BOS)")
    code = code_lengths_bits(model, sequences.input_ids(), batch_size)
    per_sample = np.maximum(0.0, sequences.bits_per_sequence - code)
    params = num_params if num_params is not None else sum(p.numel() for p in model.parameters())
    return MemorizationReport(per_sample, code, sequences.entropy_bits, params)


def relative_memorization(model, reference, input_ids, attention_mask=None, *, batch_size: int = 16,
                          num_params: int | None = None) -> MemorizationReport:
    """Morris's text setting: per sample max(0, log2 p_θ(x) − log2 p_ref(x)) = max(0, code_ref − code_θ) bits,
    for any dataset tokenized once for both models (they must share the tokenizer)."""
    code_model = code_lengths_bits(model, input_ids, batch_size, attention_mask)
    code_ref = code_lengths_bits(reference, input_ids, batch_size, attention_mask)
    params = num_params if num_params is not None else sum(p.numel() for p in model.parameters())
    return MemorizationReport(np.maximum(0.0, code_ref - code_model), code_model, float(code_ref.sum()), params)
