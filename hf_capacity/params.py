"""Parameter counting by the paper's rule: all parameters, embedding rows only for tokens that occur, tied once.

The capacity ratio R(F) = bits / P of Allen-Zhu & Li counts P as every parameter of the model, including the
embedding, but only the embedding rows (input and, when untied, output) of tokens that actually occur in the
training data; a tensor shared by several modules (tied embeddings, a shared memory table) counts once; MoE
counts all experts; memory layers count all keys and values. This module is the one place that rule lives.

Models may add a hook ``capacity_parameter_breakdown() -> {"inactive_per_token": int, "memory_values": int}``
(the project's model classes do): parameters a single token does not touch (unselected experts, unread memory
values) and the size of a memory value table, so the active and table-free counts can be reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of one model (numbers of scalar parameters)."""

    total: int
    """Every distinct parameter tensor, tied tensors once."""
    capacity: int
    """The paper's P for R(F): ``total`` minus the embedding rows of tokens absent from the data."""
    non_embedding: int
    """``total`` without token embeddings (input and untied output) and learned position embeddings."""
    active_per_token: int
    """``capacity`` minus what a single token never touches (unselected experts, unread memory values)."""
    memory_values: int
    """Size of the shared memory value table (0 for models without one); included in the counts above."""
    embedding: int
    """Token embedding parameters (input + untied output), all rows."""
    vocab_size: int
    used_tokens: int

    @property
    def capacity_without_memory_values(self) -> int:
        return self.capacity - self.memory_values

    def to_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["capacity_without_memory_values"] = self.capacity_without_memory_values
        return d


def _unique_numel(params: Iterable[torch.nn.Parameter]) -> int:
    seen: set[int] = set()
    n = 0
    for p in params:
        key = id(p)
        if key not in seen:
            seen.add(key)
            n += p.numel()
    return n


def _used_token_count(used_token_ids: Iterable[int] | None, vocab_size: int) -> int:
    if used_token_ids is None:
        return vocab_size
    ids = {int(i) for i in used_token_ids}
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"used_token_ids contains ids outside the embedding (vocab size {vocab_size}): {sorted(bad)[:5]}"
        )
    return len(ids)


def count_parameters(model: torch.nn.Module, used_token_ids: Iterable[int] | None = None) -> ParameterCount:
    """Count ``model``'s parameters by the paper's rule.

    ``used_token_ids``: the token ids that occur in the training data (``None``: every row counts, so
    ``capacity == total``). Works for any ``torch.nn.Module``; ``get_input_embeddings``/
    ``get_output_embeddings`` (Hugging Face models) identify the token embeddings.
    """
    total = _unique_numel(model.parameters())
    input_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    output_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    embedding_tensors: list[torch.Tensor] = []
    if input_emb is not None:
        embedding_tensors.append(input_emb.weight)
    if output_emb is not None and all(output_emb.weight is not t for t in embedding_tensors):
        embedding_tensors.append(output_emb.weight)

    vocab_size = embedding_tensors[0].shape[0] if embedding_tensors else 0
    used = _used_token_count(used_token_ids, vocab_size) if embedding_tensors else 0
    embedding = sum(t.numel() for t in embedding_tensors)
    unused_rows = sum((t.shape[0] - used) * (t.numel() // t.shape[0]) for t in embedding_tensors)

    position = 0
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Embedding) and (leaf == "wpe" or "position" in leaf):
            if all(module.weight is not t for t in embedding_tensors):
                position += module.weight.numel()

    hook = getattr(model, "capacity_parameter_breakdown", None)
    breakdown = hook() if callable(hook) else {}
    inactive = int(breakdown.get("inactive_per_token", 0))
    memory_values = int(breakdown.get("memory_values", 0))

    capacity = total - unused_rows
    return ParameterCount(
        total=total,
        capacity=capacity,
        non_embedding=total - embedding - position,
        active_per_token=capacity - inactive,
        memory_values=memory_values,
        embedding=embedding,
        vocab_size=vocab_size,
        used_tokens=used,
    )
