"""Model names like the paper's, read in one place: ``gpt2-6-4`` is the gpt2 family, 6 layers, 4 heads of head_dim.

The families are ``gpt2`` (CapacityGPT2), ``llama`` and ``memory-llama`` (MemoryLlama without / with memory layers).
``parse_model_name`` checks a name a user gave (a run's config, the CLI, a sweep) and says what is wrong;
``match_model_name`` reads a name back from a results table, where a name that is not one of ours is no error.
(``CapacityGPT2Config.from_name`` reads gpt2 names inside its model folder, which must not import hf_capacity;
``tests/test_model_names.py`` keeps the two in step.) Plain Python, so that importing it loads no model code.
"""

from __future__ import annotations

import re
from typing import NamedTuple

FAMILIES = ("gpt2", "llama", "memory-llama")
MODEL_NAME = re.compile(rf"^({'|'.join(map(re.escape, FAMILIES))})-(\d+)-(\d+)$")
"""``<family>-<layers>-<heads>``; groups 1-3 are the family, the layers and the heads."""


class ModelName(NamedTuple):
    """A model name read into its parts: ``ModelName("gpt2", 6, 4)`` is ``gpt2-6-4``."""

    family: str
    layers: int
    heads: int

    def __str__(self) -> str:
        return f"{self.family}-{self.layers}-{self.heads}"


def match_model_name(name: object) -> ModelName | None:
    """The parts of ``name`` if it has the form ``<family>-<layers>-<heads>`` (any counts, 0 included), else None."""
    match = MODEL_NAME.match(str(name))
    if match is None:
        return None
    return ModelName(match.group(1), int(match.group(2)), int(match.group(3)))


def parse_model_name(name: object) -> ModelName:
    """``(family, layers, heads)`` of a model name like the paper's (``gpt2-6-4``: 6 layers, 4 heads of head_dim);
    raises ValueError for a name that is not one, or that asks for no layer or no head."""
    parsed = match_model_name(name)
    if parsed is None:
        raise ValueError(
            f"unknown model {name!r}: use gpt2-<layers>-<heads>, llama-<layers>-<heads> or "
            "memory-llama-<layers>-<heads>, e.g. gpt2-6-4"
        )
    if parsed.layers < 1 or parsed.heads < 1:
        raise ValueError(
            f"{name}: a model needs at least 1 layer and 1 head ({parsed.family}-ℓ-h: ℓ layers, h heads of head_dim)"
        )
    return parsed


__all__ = ["FAMILIES", "MODEL_NAME", "ModelName", "match_model_name", "parse_model_name"]
