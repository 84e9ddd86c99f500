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

import itertools

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
            raise ValueError(
                "the tokenizer has no eos_token: biographies are separated by EOS (set tokenizer.eos_token)"
            )
        self.population = population
        self.simple = simple
        self.domain_token = False
        self.tokenizer = tokenizer
        self.book = piece_book(population)
        self.piece_chars = np.array([len(s) for s in self.book.strings], dtype=np.int64)
        self.piece_chars[:_HEAD_SLOTS + 1] = 0  # empty, EOS and domain pieces are not part of the text
        self.spaced = np.array([s.startswith(" ") for s in self.book.strings], dtype=np.int64)
        self.eos_token_id = tokenizer.eos_token_id
        self.domain_token_id = None
        self._used: np.ndarray | None = None

    # ------------------------------------------------------------------ public
    def render(self, people: np.ndarray, exposures: np.ndarray | int) -> RenderedBatch:
        """Token ids and spans of ``people`` at ``exposures`` (an int or one per person)."""
        people = np.asarray(people, dtype=np.int64)
        exposures = np.broadcast_to(np.asarray(exposures, dtype=np.int64), people.shape)
        slots, order = self._piece_slots(people, exposures)
        encoded = self.tokenizer(self._texts(slots), add_special_tokens=False, return_offsets_mapping=True)
        ids, offset_lists = encoded["input_ids"], encoded["offset_mapping"]
        n = len(people)
        counts = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        lengths = counts + 1  # + the leading EOS
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.full(int(offsets[-1]), self.eos_token_id, dtype=np.int32)
        body = np.ones(len(tokens), dtype=bool)
        body[offsets[:-1]] = False
        tokens[body] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(counts.sum()))

        # characters of every slot, and of every token, on one axis: biography b's text starts at text_base[b]
        chars = self.piece_chars[slots]
        char_end = np.cumsum(chars, axis=1)
        text_base = np.concatenate([[0], np.cumsum(char_end[:, -1])[:-1]])
        char_start = char_end - chars + text_base[:, None]
        char_end = char_end + text_base[:, None]
        token_chars = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(offset_lists)),
                                  dtype=np.int64, count=2 * int(counts.sum())).reshape(-1, 2)
        token_chars += np.repeat(text_base, counts)[:, None]
        token_base = np.concatenate([[0], np.cumsum(counts)[:-1]])

        def span(rows, first_slot, last_slot):
            start = char_start[rows, first_slot] + self.spaced[slots[rows, first_slot]]
            return _overlap(token_chars, token_base[rows], start, char_end[rows, last_slot])

        biod = isinstance(self.population, BioDPopulation)
        if biod:
            CL = self.population.chunks_per_value * self.population.chunk_length
            width, parts = _SUBJECT_SLOTS + 1 + CL + 1, CL
        else:
            width, parts = _SUBJECT_SLOTS + 1 + _BIOS_VALUE_PARTS + 1, _BIOS_VALUE_PARTS
        every = np.arange(n)
        rows = every[:, None]
        value_slot = _HEAD_SLOTS + np.argsort(order, axis=1) * width + _SUBJECT_SLOTS + 1  # first value part
        name = span(every, _HEAD_SLOTS, _HEAD_SLOTS + _SUBJECT_SLOTS - 1)
        values = span(rows, value_slot, value_slot + parts - 1)
        if biod:
            first_chunk = span(rows, value_slot, value_slot + self.population.chunk_length - 1)
            return RenderedBatch(people, tokens, offsets, name, values, first_chunk=first_chunk)
        second = _HEAD_SLOTS + width  # the first pronoun opens the second sentence
        return RenderedBatch(people, tokens, offsets, name, values, pronoun=span(every, second, second))

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


def _overlap(token_chars: np.ndarray, token_base: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(first token, count) of the tokens overlapping characters [start, end) (on the batch's common character
    axis), the first token counted from its biography's start, which is one EOS token; shape start.shape + (2,).

    Token character ranges are non-decreasing along the batch, so the first overlapping token is the first whose
    end lies after ``start`` and the last is the last whose start lies before ``end``."""
    first = np.searchsorted(token_chars[:, 1], start, side="right")
    last = np.searchsorted(token_chars[:, 0], end, side="left") - 1
    if (last < first).any():
        raise ValueError("no token covers the characters of a span: the tokenizer dropped them")
    return np.stack([first - token_base.reshape(start.shape[:1] + (1,) * (start.ndim - 1)) + 1, last - first + 1],
                    axis=-1)
