"""Parameter counting by the paper's rule: all parameters, embedding rows only for tokens that occur, tied once.

The capacity ratio R(F) = bits / P of Allen-Zhu & Li counts P as every parameter of the model, including the
embedding, but only the embedding rows (input and, when untied, output) of tokens that actually occur in the
training data; a tensor shared by several modules (tied embeddings, a shared memory table) counts once; MoE
counts all experts; memory layers count all keys and values. This module is the one place that rule lives. With junk
data mixed in, the rows are those of the useful data (``KnowledgeData.used_token_ids``), so a run with junk has the P
of the same run without, as in the paper, whose useful data holds every token its junk does.

Models may add a hook ``capacity_parameter_breakdown() -> {"inactive_per_token": int, "memory_values": int}``
(the project's model classes do): parameters a single token does not touch (unselected experts, unread memory
values) and the size of a memory value table, so the active and table-free counts can be reported.

The paper's P is ``ParameterCount.paper_params`` (``num_params`` in results.json). Adapter models (a
``peft.PeftModel``: LoRA, QLoRA) learn only their trainable parameters, so for them ``paper_params`` is the
trainable parameters (by the same rule: a trainable embedding copy counts only its used rows) and the frozen base
model's P is reported apart, in ``base_paper_params``. 4-bit weights (bitsandbytes) count as the weights they stand
for, not as their packed storage.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

_SAVED_NAMES = {"paper_params": "capacity", "base_paper_params": "base_capacity"}
"""Field → key in ``ParameterCount.to_dict()`` (results.json's ``params``), kept so saved results read as before."""


@dataclass(frozen=True)
class ParameterCount:
    """Parameter counts of one model (numbers of scalar parameters)."""

    total: int
    """Every distinct parameter tensor, tied tensors once."""
    paper_params: int
    """The paper's P for R(F) (``num_params`` in results.json): ``total`` minus the embedding rows of tokens absent
    from the data."""
    non_embedding: int
    """``total`` without token embeddings (input and untied output) and learned position embeddings."""
    active_per_token: int
    """``paper_params`` minus what a single token never touches (unselected experts, unread memory values)."""
    memory_values: int
    """Size of the shared memory value table (0 for models without one); included in the counts above."""
    embedding: int
    """Token embedding parameters (input + untied output), all rows."""
    vocab_size: int
    used_tokens: int
    base_paper_params: int | None = None
    """Adapter models only: the frozen base model's P by the paper's rule (``paper_params`` then counts the
    trainable adapter parameters). None for an ordinary model, whose every parameter learns."""

    @property
    def is_adapter(self) -> bool:
        """Whether this counts an adapter model (P = its trainable parameters, ``base_paper_params`` the base's)."""
        return self.base_paper_params is not None

    @property
    def paper_params_without_memory_values(self) -> int:
        """``paper_params`` without the shared memory value table."""
        return self.paper_params - self.memory_values

    def to_dict(self) -> dict[str, int]:
        """The counts under the names results.json has always stored them (``params`` there): P as ``capacity``."""
        d = {_SAVED_NAMES.get(k, k): v for k, v in asdict(self).items()}
        d["capacity_without_memory_values"] = self.paper_params_without_memory_values
        return d

    # Deprecated names (P is a count of parameters, not a capacity ratio); they still work, with a FutureWarning.
    @property
    def capacity(self) -> int:
        """Deprecated: ``paper_params``."""
        _renamed("capacity", "paper_params")
        return self.paper_params

    @property
    def base_capacity(self) -> int | None:
        """Deprecated: ``base_paper_params``."""
        _renamed("base_capacity", "base_paper_params")
        return self.base_paper_params

    @property
    def capacity_without_memory_values(self) -> int:
        """Deprecated: ``paper_params_without_memory_values``."""
        _renamed("capacity_without_memory_values", "paper_params_without_memory_values")
        return self.paper_params_without_memory_values


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"ParameterCount.{old} is renamed {new} (the paper's parameter count P, not a capacity ratio); "
                  f"{old} will be removed in a future version", FutureWarning, stacklevel=3)


def _numel(p: torch.Tensor) -> int:
    """Scalar parameters a tensor stands for: a bitsandbytes 4-bit weight packs two per byte and keeps its
    original shape in ``quant_state``."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


def _unique_numel(params: Iterable[torch.nn.Parameter]) -> int:
    seen: set[int] = set()
    n = 0
    for p in params:
        key = id(p)
        if key not in seen:
            seen.add(key)
            n += _numel(p)
    return n


def _unused_rows(embeddings: Iterable[torch.Tensor], used: int) -> int:
    """Parameters in the rows of tokens beyond the ``used`` ones, summed over token embedding tensors."""
    return sum((t.shape[0] - used) * (t.numel() // t.shape[0]) for t in embeddings)


def is_peft_model(model) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (checked without importing peft)."""
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


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
    ``paper_params == total``). Works for any ``torch.nn.Module``; ``get_input_embeddings``/
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
    if is_peft_model(model):
        return _adapter_count(model, embedding_tensors, used, total)
    embedding = sum(t.numel() for t in embedding_tensors)
    unused_rows = _unused_rows(embedding_tensors, used)

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

    paper_params = total - unused_rows
    return ParameterCount(
        total=total,
        paper_params=paper_params,
        non_embedding=total - embedding - position,
        active_per_token=paper_params - inactive,
        memory_values=memory_values,
        embedding=embedding,
        vocab_size=vocab_size,
        used_tokens=used,
    )


def _adapter_count(model, embedding_tensors: list[torch.Tensor], used: int, total: int) -> ParameterCount:
    """``count_parameters`` of a PeftModel: P = the adapters' own parameters (named after an adapter, e.g.
    ``lora_A.default.weight``, or trainable: what training changes; a loaded adapter in inference mode counts
    the same), the rest counted as the base's P."""
    adapters = tuple(getattr(model, "peft_config", {}) or ("default",))
    own = {id(p) for name, p in model.named_parameters()
           if p.requires_grad or any(f".{a}." in name or name.endswith(f".{a}") for a in adapters)}
    trainable_embeddings = [t for t in embedding_tensors if id(t) in own]
    frozen_embeddings = [t for t in embedding_tensors if id(t) not in own]

    trainable = _unique_numel(p for p in model.parameters() if id(p) in own)
    frozen = _unique_numel(p for p in model.parameters() if id(p) not in own)
    if trainable == 0:
        raise ValueError("this adapter model has no adapter parameter (nothing named after its adapters "
                         f"{', '.join(adapters)}, nothing trainable): nothing can learn")
    paper_params = trainable - _unused_rows(trainable_embeddings, used)
    trainable_embedding = sum(t.numel() for t in trainable_embeddings)
    return ParameterCount(
        total=total,
        paper_params=paper_params,
        non_embedding=trainable - trainable_embedding,
        active_per_token=paper_params,
        memory_values=0,
        embedding=sum(t.numel() for t in embedding_tensors),
        vocab_size=embedding_tensors[0].shape[0] if embedding_tensors else 0,
        used_tokens=used,
        base_paper_params=frozen - _unused_rows(frozen_embeddings, used),
    )
