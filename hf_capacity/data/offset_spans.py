"""Rendering for any fast tokenizer: biographies as text, tokenized with offset mappings, spans from characters.

The project tokenizer lets ``Renderer`` compose token ids from pre-tokenized pieces. A user's tokenizer (GPT-2's
byte-level BPE, a SentencePiece-style Metaspace tokenizer, …) merges across piece boundaries, so here every
biography is rendered to text (the same pieces, templates and orders as ``Renderer``: the same people and
facts), tokenized once, and each span is read off the offset mapping by one rule:

    the span of a name, value or pronoun is every token that overlaps its characters

(the characters of the value itself, without the space before it). A token that straddles a boundary — a leading
space merged into the value's first token, or a merge across the value's end — belongs to the span, so the
span's loss covers all of the value's characters and the bits keep the paper's definition (loss of the tokens
that carry the value). Every biography starts with the tokenizer's EOS token, as in the training stream.
"""

from __future__ import annotations

import numpy as np

from .population import BioDPopulation, Population
from .render import _BIOS_VALUE_PARTS, _HEAD_SLOTS, _SUBJECT_SLOTS, RenderedBatch, Renderer, piece_book


class OffsetRenderer(Renderer):
    """``Renderer``'s interface for any ``PreTrainedTokenizerFast``: render, render_text, used_token_ids, …

    Slower than the composed path (one tokenizer call per batch of texts; see benchmarks/RESULTS.md) and exact by
    the overlap rule above. The domain token is not supported (it is a token of the project tokenizer only).
    """

    def __init__(self, population: Population, tokenizer, *, simple: bool = False, domain_token: bool = False):
        if domain_token:
            raise ValueError("the domain token needs the project tokenizer (hf_capacity.data.train_tokenizer)")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: exact spans need offset mappings "
                "(load it with use_fast=True, or convert it with tokenizers)"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token: biographies are separated by EOS (set tokenizer.eos_token)")
        self.population = population
        self.simple = simple
        self.domain_token = False
        self.tokenizer = tokenizer
        self.book = piece_book(population)
        self.piece_chars = np.array([len(s) for s in self.book.strings], dtype=np.int64)
        self.piece_chars[:_HEAD_SLOTS + 1] = 0  # empty, EOS and domain pieces are not part of the text
        self.eos_token_id = tokenizer.eos_token_id
        self.domain_token_id = None
        self._used: np.ndarray | None = None

    # ------------------------------------------------------------------ public
    def render(self, people: np.ndarray, exposures: np.ndarray | int) -> RenderedBatch:
        """Token ids and spans of ``people`` at ``exposures`` (an int or one per person)."""
        people = np.asarray(people, dtype=np.int64)
        exposures = np.broadcast_to(np.asarray(exposures, dtype=np.int64), people.shape)
        slots, order = self._piece_slots(people, exposures)
        texts = self._texts(slots)
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets_map = encoded["input_ids"], encoded["offset_mapping"]
        char_start = np.cumsum(self.piece_chars[slots], axis=1) - self.piece_chars[slots]  # (B, S)
        char_end = char_start + self.piece_chars[slots]
        n = len(people)
        biod = isinstance(self.population, BioDPopulation)
        if biod:
            K, CL = self.population.n_attributes, self.population.chunks_per_value * self.population.chunk_length
            width, parts = _SUBJECT_SLOTS + 1 + CL + 1, CL
        else:
            K, width, parts = 6, _SUBJECT_SLOTS + 1 + _BIOS_VALUE_PARTS + 1, _BIOS_VALUE_PARTS
        position_of = np.argsort(order, axis=1)
        value_slot = _HEAD_SLOTS + position_of * width + _SUBJECT_SLOTS + 1  # (n, K) first value part
        rows = np.arange(n)[:, None]
        name_chars = self._trimmed(slots[:, _HEAD_SLOTS], char_start[:, _HEAD_SLOTS],
                                   char_end[:, _HEAD_SLOTS + _SUBJECT_SLOTS - 1])
        last_part = value_slot + parts - 1
        value_chars = self._trimmed(slots[rows, value_slot], char_start[rows, value_slot], char_end[rows, last_part])
        lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)  # + the leading EOS
        tokens = np.empty(int(lengths.sum()), dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        name = np.empty((n, 2), np.int64)
        values = np.empty((n, K, 2), np.int64)
        pronoun = None if biod else np.empty((n, 2), np.int64)
        first_chunk = np.empty((n, K, 2), np.int64) if biod else None
        if not biod:
            second = _HEAD_SLOTS + width
            pronoun_chars = self._trimmed(slots[:, second], char_start[:, second], char_end[:, second])
        if biod:
            L = self.population.chunk_length
            chunk_end = char_end[rows, value_slot + L - 1]
        for b in range(n):
            tokens[offsets[b]] = self.eos_token_id
            tokens[offsets[b] + 1 : offsets[b + 1]] = ids[b]
            spans = np.asarray(offsets_map[b], dtype=np.int64).reshape(-1, 2)
            name[b] = _overlap(spans, *name_chars[b])
            for k in range(K):
                values[b, k] = _overlap(spans, *value_chars[b, k])
                if biod:
                    first_chunk[b, k] = _overlap(spans, value_chars[b, k, 0], chunk_end[b, k])
            if not biod:
                pronoun[b] = _overlap(spans, *pronoun_chars[b])
        return RenderedBatch(people, tokens, offsets, name, values, pronoun=pronoun, first_chunk=first_chunk)

    def render_text(self, people: np.ndarray, exposures: np.ndarray | int) -> list[str]:
        """The biographies' text (without the EOS token, which is added as a token id)."""
        people = np.asarray(people, dtype=np.int64)
        exposures = np.broadcast_to(np.asarray(exposures, dtype=np.int64), people.shape)
        return self._texts(self._piece_slots(people, exposures)[0])

    def used_token_ids(self, renderings: int = 200_000, chunk: int = 4096) -> np.ndarray:
        """Sorted ids of the tokens in actual renderings, plus EOS (a foreign tokenizer's merges depend on the
        context, so the ids are read off renderings instead of derived from the pieces): every person at the
        evaluation rendering and at exposures 0 … k-1, k = clamp(``renderings`` / N, 1, 32) (bioS-simple: its one
        rendering). With ≥ 200,000 renderings every template meets every neighbour many times over; a rarer
        combination missed would leave out a row or two of P. Computed once."""
        if self._used is None:
            seen = {self.eos_token_id}
            people = np.arange(self.population.n_people, dtype=np.int64)
            k = 1 if self.simple else int(min(32, max(1, -(-renderings // len(people)))))
            for e in [-1, *range(k)]:
                for start in range(0, len(people), chunk):
                    for ids in self.tokenizer(self.render_text(people[start : start + chunk], e),
                                              add_special_tokens=False)["input_ids"]:
                        seen.update(ids)
            self._used = np.array(sorted(seen), dtype=np.int64)
        return self._used

    # ------------------------------------------------------------------ internals
    def _texts(self, slots: np.ndarray) -> list[str]:
        strings = self.book.strings
        return ["".join(strings[i] for i in row[_HEAD_SLOTS:]) for row in slots]

    def _trimmed(self, first_piece: np.ndarray, start: np.ndarray, end: np.ndarray):
        """(start, end) characters of a span, without the space that opens its first piece."""
        spaced = np.vectorize(lambda p: self.book.strings[p].startswith(" "), otypes=[bool])(first_piece)
        return np.stack([start + spaced, end], axis=-1)


def _overlap(token_chars: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """(first token, count) of the tokens overlapping characters [start, end), relative to a biography that
    starts with one EOS token."""
    overlaps = np.flatnonzero((token_chars[:, 0] < end) & (token_chars[:, 1] > start))
    if len(overlaps) == 0:
        raise ValueError(f"no token covers characters {start}-{end}: the tokenizer dropped them")
    return int(overlaps[0]) + 1, int(overlaps[-1] - overlaps[0] + 1)
