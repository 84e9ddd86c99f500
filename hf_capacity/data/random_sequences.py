"""Uniform random token sequences with an exact information content, for memorization capacity (Morris et al. 2025).

N sequences of S tokens, each token drawn independently and uniformly from V symbols (ids 0 … V−1), seeded. Every
sequence is fed after one BOS token (id V, outside the alphabet), so the model predicts all S tokens and the
data holds exactly N · S · log2 V bits; a model needs vocabulary V + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RandomSequences:
    """``n_sequences`` uniform random sequences of ``length`` tokens over ``vocab_size`` symbols (seeded)."""

    n_sequences: int
    length: int
    vocab_size: int
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_sequences", "length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2 (symbols to draw from), got {self.vocab_size!r}")

    @property
    def bos_token_id(self) -> int:
        return self.vocab_size

    @property
    def model_vocab_size(self) -> int:
        """Vocabulary a model needs: the V symbols and the BOS token."""
        return self.vocab_size + 1

    @property
    def bits_per_sequence(self) -> float:
        """S · log2 V: the information in one sequence, in bits."""
        return self.length * math.log2(self.vocab_size)

    @property
    def entropy_bits(self) -> float:
        """N · S · log2 V: the information in the whole set, in bits."""
        return self.n_sequences * self.bits_per_sequence

    def tokens(self) -> np.ndarray:
        """(N, S) int64 symbols; the same for the same (N, S, V, seed), and a larger N extends a smaller one."""
        rng = np.random.default_rng([self.seed, self.length, self.vocab_size])
        return rng.integers(0, self.vocab_size, size=(self.n_sequences, self.length), dtype=np.int64)

    def input_ids(self) -> np.ndarray:
        """(N, S + 1): BOS, then the sequence."""
        return np.concatenate([np.full((self.n_sequences, 1), self.bos_token_id), self.tokens()], axis=1)

    def held_out(self, n_sequences: int | None = None) -> RandomSequences:
        """Sequences drawn the same way from another seed (none of them in this set, with overwhelming
        probability): what a model cannot have memorized."""
        return RandomSequences(n_sequences or self.n_sequences, self.length, self.vocab_size,
                               seed=self.seed + 1_000_003)

    def to_dataset(self):
        """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` (equal; the model shifts them)."""
        import datasets

        ids = self.input_ids().tolist()
        features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64")),
                                      "labels": datasets.Sequence(datasets.Value("int64"))})
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids}, features=features)
