"""Templates and rendering: biographies as token ids composed from pre-tokenized pieces, with exact spans.

A biography is a fixed-length row of *pieces* (EOS, optional domain token, then per sentence: subject, template
prefix, value parts, template suffix). Each distinct piece string is tokenized once; a batch of biographies is
assembled with numpy gathers, and the token span of every name and value is read off the piece lengths. The
project tokenizer guarantees that encoding the joined text gives the same ids (tested), so this is exactly what
tokenizing the rendered string would give, only much faster.

Random choices (template per sentence, sentence order) are a hash of (seed, person, exposure): deterministic,
reproducible and resumable. bioS-simple ignores the exposure (one rendering per person). Evaluation renderings
use negative exposure indices, which training never uses.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .population import (
    BIOS_ATTRIBUTES,
    FIRST_BIRTH_YEAR,
    MONTHS,
    N_BIRTH_DAYS,
    N_BIRTH_YEARS,
    BioDPopulation,
    BioSPopulation,
    Population,
    hash64,
    load_pools,
    uniform_int,
)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
DOMAIN_TOKEN = "<|domain|>"
PRONOUNS = ("He", "She")
_PERMUTATIONS_6 = np.array(list(itertools.permutations(range(6))), dtype=np.int64)  # 720 sentence orders
_RENDER_KEY = 0x5E17
_ORDER_KEY = 6
_EXACT_USED_LIMIT = 5_000_000
_HEAD_SLOTS = 2  # EOS, then the domain token or an empty piece
_SUBJECT_SLOTS = 3  # first, middle, last name pieces (a pronoun uses one slot and two empty ones)
_BIOS_VALUE_PARTS = 4  # a birth date is month, day, comma, year; other values use one part and 3 empty ones


def evaluation_exposure(rendering: int = 0) -> int:
    """The exposure index of evaluation rendering number ``rendering`` (negative: never used in training)."""
    return -1 - rendering


# ------------------------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class Template:
    """One sentence template split around its value: ``{subject}{prefix}{value}{suffix}``.

    ``prefix`` starts with a space and has no trailing space (the value piece carries its own leading space).
    """

    prefix: str
    suffix: str

    @classmethod
    def parse(cls, line: str) -> Template:
        if not line.startswith("{subject} ") or line.count("{subject}") != 1 or line.count("{value}") != 1:
            raise ValueError(f"template must start with '{{subject}} ' and hold one {{value}}: {line!r}")
        body = line[len("{subject}") :]
        prefix, suffix = body.split("{value}")
        if not prefix.endswith(" ") or (suffix and suffix[0].isalnum()):
            raise ValueError(f"{{value}} must follow a space and precede punctuation or a space: {line!r}")
        return cls(prefix[:-1], suffix)


@lru_cache(maxsize=1)
def load_templates() -> dict[str, tuple[Template, ...]]:
    """The shipped sentence templates of each bioS attribute (``hf_capacity/data/templates/<attribute>.txt``)."""
    folder = resources.files("hf_capacity.data").joinpath("templates")
    out = {}
    for attribute in BIOS_ATTRIBUTES:
        lines = folder.joinpath(f"{attribute}.txt").read_text(encoding="utf-8").splitlines()
        out[attribute] = tuple(Template.parse(line) for line in lines if line.strip())
    return out


# ----------------------------------------------------------------------------------------------- pieces
class PieceBook:
    """All distinct piece strings of one family, with named index ranges into one list.

    Piece 0 is the empty string; 1 is EOS; 2 is the domain token.
    """

    def __init__(self) -> None:
        self.strings: list[str] = ["", EOS_TOKEN, DOMAIN_TOKEN]
        self.ranges: dict[str, np.ndarray] = {}

    EMPTY, EOS, DOMAIN = 0, 1, 2

    def add(self, name: str, strings: list[str] | tuple[str, ...]) -> np.ndarray:
        start = len(self.strings)
        self.strings.extend(strings)
        ids = np.arange(start, len(self.strings), dtype=np.int64)
        self.ranges[name] = ids
        return ids

    def __getitem__(self, name: str) -> np.ndarray:
        return self.ranges[name]


def bios_piece_book() -> PieceBook:
    """Pieces of bioS: names, pronouns, template prefixes/suffixes, value parts."""
    pools, templates = load_pools(), load_templates()
    book = PieceBook()
    book.add("first", pools.first_names)
    book.add("middle", [" " + s for s in pools.middle_names])
    book.add("last", [" " + s for s in pools.last_names])
    book.add("pronoun", [" " + s for s in PRONOUNS])
    for attribute in BIOS_ATTRIBUTES:
        book.add(f"prefix:{attribute}", [t.prefix for t in templates[attribute]])
        book.add(f"suffix:{attribute}", [t.suffix for t in templates[attribute]])
    book.add("month", [" " + m for m in MONTHS])
    book.add("day", [f" {d}" for d in range(1, N_BIRTH_DAYS + 1)])
    book.add("comma", [","])
    book.add("year", [f" {y}" for y in range(FIRST_BIRTH_YEAR, FIRST_BIRTH_YEAR + N_BIRTH_YEARS)])
    book.add("birth_city", [" " + s for s in pools.birth_cities])
    book.add("university", [" " + s for s in pools.universities])
    book.add("major", [" " + s for s in pools.majors])
    book.add("employer", [" " + s for s in pools.employers])
    book.add("working_city", [" " + s for s in pools.employer_hq])  # indexed by employer
    return book


def alphabet_token(i: int) -> str:
    """The dedicated tokenizer token of bioD alphabet symbol ``i``."""
    return f"<t{i}>"


def biod_piece_book(population: BioDPopulation) -> PieceBook:
    """Pieces of bioD: names, "'s ID k is" per attribute, one piece per alphabet token, the final period."""
    pools = load_pools()
    book = PieceBook()
    book.add("first", pools.first_names)
    book.add("first_spaced", [" " + s for s in pools.first_names])
    book.add("middle", [" " + s for s in pools.middle_names])
    book.add("last", [" " + s for s in pools.last_names])
    book.add("prefix", [f"'s ID {k} is" for k in range(1, population.n_attributes + 1)])
    book.add("alphabet", [alphabet_token(i) for i in range(population.alphabet)])
    book.add("period", ["."])
    return book


def piece_book(population: Population) -> PieceBook:
    return biod_piece_book(population) if isinstance(population, BioDPopulation) else bios_piece_book()


# --------------------------------------------------------------------------------------------- batches
@dataclass
class RenderedBatch:
    """A batch of biographies as one flat token array, with spans relative to each biography's start.

    ``tokens``: int32, every biography starting with EOS; ``offsets``: int64 (B+1,), biography b is
    ``tokens[offsets[b]:offsets[b+1]]``. Spans are (start, length) int64 arrays:
    ``name`` (B, 2); ``values`` (B, A, 2) for A attributes (bioS: the six sentences in canonical order,
    bioD: the K attributes); ``pronoun`` (B, 2) the first pronoun (bioS only); ``first_chunk`` (B, K, 2)
    (bioD only).
    """

    people: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray
    name: np.ndarray
    values: np.ndarray
    pronoun: np.ndarray | None = None
    first_chunk: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def biography(self, b: int) -> np.ndarray:
        return self.tokens[self.offsets[b] : self.offsets[b + 1]]


def _assemble(piece_ids: np.ndarray, table_ids: np.ndarray, table_starts: np.ndarray, table_lens: np.ndarray):
    """Concatenate the token ids of ``piece_ids`` (B, S) row-major; return flat tokens and per-slot starts."""
    lens = table_lens[piece_ids]  # (B, S)
    flat_lens = lens.ravel()
    slot_end = np.cumsum(flat_lens)
    total = int(slot_end[-1]) if slot_end.size else 0
    slot_start = slot_end - flat_lens
    src = np.repeat(table_starts[piece_ids].ravel() - slot_start, flat_lens) + np.arange(total)
    return table_ids[src], slot_start.reshape(lens.shape), lens


class Renderer:
    """Renders biographies of a population as token ids (and text) with exact spans.

    ``tokenizer``: the project tokenizer (``hf_capacity.data.tokenizer``), used once to tokenize the pieces.
    ``simple``: bioS-simple (one fixed rendering per person). ``domain_token``: put the domain token right
    after EOS (the junk-data mitigation); it is not part of any span.
    """

    def __init__(self, population: Population, tokenizer, *, simple: bool = False, domain_token: bool = False):
        self.population = population
        self.simple = simple
        self.domain_token = domain_token
        self.book = piece_book(population)
        encoded = tokenizer(self.book.strings[3:], add_special_tokens=False)["input_ids"]
        special = [[]] + [[tokenizer.convert_tokens_to_ids(t)] for t in (EOS_TOKEN, DOMAIN_TOKEN)]
        pieces = special + list(encoded)
        unk = tokenizer.unk_token_id
        if any(i is None or (unk is not None and i == unk) for p in special[1:] for i in p):
            raise ValueError(
                f"the tokenizer lacks {EOS_TOKEN!r} or {DOMAIN_TOKEN!r}: use hf_capacity.data.train_tokenizer"
            )
        self.table_lens = np.array([len(p) for p in pieces], dtype=np.int64)
        self.table_starts = np.concatenate([[0], np.cumsum(self.table_lens)[:-1]]).astype(np.int64)
        self.table_ids = np.array([i for p in pieces for i in p], dtype=np.int32)
        self.eos_token_id = special[1][0]
        self.domain_token_id = special[2][0]

    # ------------------------------------------------------------------ public
    def used_token_ids(self) -> np.ndarray:
        """Sorted ids of every token this population's biographies can contain (for the paper's P).

        Exact: names and values are those of the actual people (a small N uses few of the 1000 last names);
        template pieces are those the renderings can select (bioS: every template of every attribute, since
        each exposure draws afresh; bioS-simple: only each person's one fixed template per attribute); bioD's
        spaced first names only where a biography has a second sentence (K >= 2). Above
        ``_EXACT_USED_LIMIT`` people (e.g. a 100M-person junk population) every pool item occurs with
        overwhelming probability, so every piece counts.
        """
        pieces = self._used_pieces()
        return np.unique(np.concatenate([self._piece_tokens(p) for p in pieces] + [np.empty(0, np.int32)]))

    def used_piece_strings(self) -> list[str]:
        """The piece strings this population's biographies can contain (what ``used_token_ids`` tokenizes)."""
        return [self.book.strings[p] for p in self._used_pieces()]

    def _piece_tokens(self, piece: int) -> np.ndarray:
        start = self.table_starts[piece]
        return self.table_ids[start : start + self.table_lens[piece]]

    def _used_pieces(self) -> list[int]:
        book, pop = self.book, self.population
        used = [PieceBook.EOS] + ([PieceBook.DOMAIN] if self.domain_token else [])
        if pop.n_people > _EXACT_USED_LIMIT and isinstance(pop, BioSPopulation):
            return used + list(range(3, len(book.strings)))
        if isinstance(pop, BioDPopulation):
            return used + self._used_biod_pieces()
        a = pop.attributes()
        chosen = self._selectable_templates()
        for i, attribute in enumerate(BIOS_ATTRIBUTES):
            used += list(book[f"prefix:{attribute}"][chosen[i]]) + list(book[f"suffix:{attribute}"][chosen[i]])
        used += list(book["first"][np.unique(a["first"])]) + list(book["pronoun"][np.unique(a["gender"])])
        used += list(book["month"][np.unique(a["month"])]) + list(book["day"][np.unique(a["day"]) - 1])
        used += list(book["comma"]) + list(book["year"][np.unique(a["year"]) - FIRST_BIRTH_YEAR])
        for attribute in ("birth_city", "university", "major", "employer"):
            used += list(book[attribute][np.unique(a[attribute])])
        used += list(book["working_city"][np.unique(a["employer"])])
        used += list(book["middle"][np.unique(a["middle"])]) + list(book["last"][np.unique(a["last"])])
        return [int(p) for p in used]

    def _used_biod_pieces(self, chunk: int = 1 << 18) -> list[int]:
        """bioD's name, prefix, period and alphabet pieces that occur (people scanned ``chunk`` at a time). Above
        ``_EXACT_USED_LIMIT`` people every name piece counts, and every alphabet token of the diversity sets once
        each chunk is drawn ~40 times on average (a chunk is then missed with probability e^-40)."""
        book, pop = self.book, self.population
        K = pop.n_attributes
        used = list(book["prefix"]) + list(book["period"])
        big = pop.n_people > _EXACT_USED_LIMIT
        if big and pop.n_people * pop.chunks_per_value >= 40 * pop.diversity:
            first, middle, last = (np.arange(len(book[part])) for part in ("first", "middle", "last"))
            symbols = np.unique(pop.chunks)
        else:
            if big:
                warnings.warn(f"scanning all {pop.n_people:,} bioD people for their tokens (slow)", stacklevel=3)
            seen = {part: np.zeros(len(book[part]), dtype=bool) for part in ("first", "middle", "last")}
            seen_symbols = np.zeros(pop.alphabet, dtype=bool)
            for start in range(0, pop.n_people, chunk):
                people = np.arange(start, min(start + chunk, pop.n_people), dtype=np.int64)
                for part, index in pop.names(people).items():
                    seen[part][index] = True
                seen_symbols[pop.chunks[np.arange(K)[None, :, None], pop.values(people)]] = True
            first, middle, last = (np.flatnonzero(seen[part]) for part in ("first", "middle", "last"))
            symbols = np.flatnonzero(seen_symbols)
        used += list(book["first"][first])
        if K >= 2:  # later sentences open with the spaced first name
            used += list(book["first_spaced"][first])
        used += list(book["alphabet"][symbols]) + list(book["middle"][middle]) + list(book["last"][last])
        return [int(p) for p in used]

    def _selectable_templates(self, chunk: int = 1 << 20) -> list[np.ndarray]:
        """Per bioS attribute, the template indices the renderings can select: all of them, or for bioS-simple
        those of the people's fixed renderings."""
        n_templates = [len(self.book[f"prefix:{attr}"]) for attr in BIOS_ATTRIBUTES]
        if not self.simple:
            return [np.arange(n) for n in n_templates]
        seen = [np.zeros(n, dtype=bool) for n in n_templates]
        for start in range(0, self.population.n_people, chunk):
            people = np.arange(start, min(start + chunk, self.population.n_people), dtype=np.int64)
            templates, _ = self._choices(people, np.zeros_like(people), n_templates)
            for i in range(len(n_templates)):
                seen[i][templates[:, i]] = True
        return [np.flatnonzero(s) for s in seen]

    def render(self, people: np.ndarray, exposures: np.ndarray | int) -> RenderedBatch:
        """Token ids and spans of ``people`` at ``exposures`` (an int or one per person)."""
        people = np.asarray(people, dtype=np.int64)
        exposures = np.broadcast_to(np.asarray(exposures, dtype=np.int64), people.shape)
        if isinstance(self.population, BioDPopulation):
            return self._render_biod(people, exposures)
        return self._render_bios(people, exposures)

    def render_text(self, people: np.ndarray, exposures: np.ndarray | int) -> list[str]:
        """The same biographies as strings (EOS string first), e.g. for display or the naive baseline."""
        people = np.asarray(people, dtype=np.int64)
        exposures = np.broadcast_to(np.asarray(exposures, dtype=np.int64), people.shape)
        slots = self._piece_slots(people, exposures)[0]
        strings = self.book.strings
        return ["".join(strings[i] for i in row) for row in slots]

    def mean_tokens_per_biography(self, sample: int = 2048, seed: int = 0) -> float:
        """Average biography length in tokens (EOS and domain token included), estimated on a sample."""
        rng = np.random.default_rng(seed)
        people = rng.integers(0, self.population.n_people, size=sample)
        return float(self.render(people, rng.integers(0, 1 << 20, size=sample)).lengths.mean())

    # ------------------------------------------------------------------ internals
    def _head(self, n: int) -> np.ndarray:
        head = np.empty((n, 2), dtype=np.int64)
        head[:, 0] = PieceBook.EOS
        head[:, 1] = PieceBook.DOMAIN if self.domain_token else PieceBook.EMPTY
        return head

    def _piece_slots(self, people: np.ndarray, exposures: np.ndarray):
        if isinstance(self.population, BioDPopulation):
            return self._biod_slots(people, exposures)
        return self._bios_slots(people, exposures)

    def _choices(self, people: np.ndarray, exposures: np.ndarray, n_templates: list[int]):
        exposures = np.zeros_like(exposures) if self.simple else exposures
        h = hash64(self.population.seed, _RENDER_KEY, people, exposures)
        templates = np.stack([uniform_int(hash64(h, a), n) for a, n in enumerate(n_templates)], axis=1)
        order = _PERMUTATIONS_6[uniform_int(hash64(h, _ORDER_KEY), len(_PERMUTATIONS_6))]
        return templates, order

    def _bios_slots(self, people: np.ndarray, exposures: np.ndarray):
        book, pop = self.book, self.population
        assert isinstance(pop, BioSPopulation)
        a = pop.attributes(people)
        n = len(people)
        n_templates = [len(book[f"prefix:{attr}"]) for attr in BIOS_ATTRIBUTES]
        templates, order = self._choices(people, exposures, n_templates)
        empty = np.full(n, PieceBook.EMPTY, dtype=np.int64)
        # values in canonical attribute order: (n, 6, 4)
        values = np.stack(
            [
                np.stack(
                    [
                        book["month"][a["month"]],
                        book["day"][a["day"] - 1],
                        np.full(n, book["comma"][0]),
                        book["year"][a["year"] - FIRST_BIRTH_YEAR],
                    ],
                    axis=1,
                ),
                np.stack([book["birth_city"][a["birth_city"]], empty, empty, empty], axis=1),
                np.stack([book["university"][a["university"]], empty, empty, empty], axis=1),
                np.stack([book["major"][a["major"]], empty, empty, empty], axis=1),
                np.stack([book["employer"][a["employer"]], empty, empty, empty], axis=1),
                np.stack([book["working_city"][a["employer"]], empty, empty, empty], axis=1),
            ],
            axis=1,
        )
        prefix = np.stack([book[f"prefix:{attr}"][templates[:, i]] for i, attr in enumerate(BIOS_ATTRIBUTES)], axis=1)
        suffix = np.stack([book[f"suffix:{attr}"][templates[:, i]] for i, attr in enumerate(BIOS_ATTRIBUTES)], axis=1)
        sentences = np.concatenate(
            [np.zeros((n, 6, _SUBJECT_SLOTS), np.int64), prefix[:, :, None], values, suffix[:, :, None]], axis=2
        )  # (n, 6, 9) canonical order
        rows = np.arange(n)[:, None]
        sentences = sentences[rows, order]  # (n, 6, 9) in rendered order
        sentences[:, 0, 0] = book["first"][a["first"]]
        sentences[:, 0, 1] = book["middle"][a["middle"]]
        sentences[:, 0, 2] = book["last"][a["last"]]
        sentences[:, 1:, 0] = book["pronoun"][a["gender"]][:, None]
        sentences[:, 1:, 1:_SUBJECT_SLOTS] = PieceBook.EMPTY
        slots = np.concatenate([self._head(n), sentences.reshape(n, -1)], axis=1)
        return slots, order

    def _layout(self, slots: np.ndarray, order: np.ndarray, width: int):
        """Assemble ``slots`` (head + sentences of ``width`` slots in ``order``) and locate the shared spans.

        Returns the flat tokens, per-biography offsets, per-slot start (relative to the biography) and length,
        the name span (the first sentence's subject) and the slot of each attribute's first value part.
        """
        tokens, slot_start, lens = _assemble(slots, self.table_ids, self.table_starts, self.table_lens)
        row_start = slot_start[:, 0]
        rel = slot_start - row_start[:, None]
        subject = slice(_HEAD_SLOTS, _HEAD_SLOTS + _SUBJECT_SLOTS)
        name = np.stack([rel[:, _HEAD_SLOTS], lens[:, subject].sum(1)], axis=1)
        position_of = np.argsort(order, axis=1)  # rendered position of each canonical attribute
        value_slot = _HEAD_SLOTS + position_of * width + _SUBJECT_SLOTS + 1  # after the subject and the prefix
        offsets = np.append(row_start, len(tokens))
        return tokens, offsets, rel, lens, name, value_slot

    def _render_bios(self, people: np.ndarray, exposures: np.ndarray) -> RenderedBatch:
        slots, order = self._bios_slots(people, exposures)
        width = _SUBJECT_SLOTS + 1 + _BIOS_VALUE_PARTS + 1
        tokens, offsets, rel, lens, name, value_slot = self._layout(slots, order, width)
        second_subject = _HEAD_SLOTS + width  # the first pronoun opens the second sentence
        pronoun = np.stack([rel[:, second_subject], lens[:, second_subject]], axis=1)
        rows = np.arange(len(people))[:, None]
        value_len = sum(lens[rows, value_slot + j] for j in range(_BIOS_VALUE_PARTS))
        values = np.stack([rel[rows, value_slot], value_len], axis=2)
        return RenderedBatch(people, tokens, offsets, name, values, pronoun=pronoun)

    def _biod_slots(self, people: np.ndarray, exposures: np.ndarray):
        book, pop = self.book, self.population
        assert isinstance(pop, BioDPopulation)
        n, K, C, L = len(people), pop.n_attributes, pop.chunks_per_value, pop.chunk_length
        exposures = np.zeros_like(exposures) if self.simple else exposures
        names = pop.names(people)
        h = hash64(pop.seed, _RENDER_KEY, people, exposures)
        order = np.argsort(uniform_int(hash64(h[:, None], np.arange(K)[None, :]), 1 << 62), axis=1)  # (n, K)
        chunk_tokens = pop.chunks[np.arange(K)[None, :, None], pop.values(people)]  # (n, K, C, L)
        value_pieces = book["alphabet"][chunk_tokens.reshape(n, K, C * L)]
        rows = np.arange(n)[:, None]
        sentences = np.concatenate(
            [
                np.stack(
                    [
                        book["first_spaced"][names["first"]],
                        book["middle"][names["middle"]],
                        book["last"][names["last"]],
                    ],
                    axis=1,
                )[:, None, :].repeat(K, 1),
                np.broadcast_to(book["prefix"][None, :, None], (n, K, 1)),
                value_pieces,
                np.full((n, K, 1), book["period"][0]),
            ],
            axis=2,
        )[rows, order]
        sentences[:, 0, 0] = book["first"][names["first"]]
        slots = np.concatenate([self._head(n), sentences.reshape(n, -1)], axis=1)
        return slots, order

    def _render_biod(self, people: np.ndarray, exposures: np.ndarray) -> RenderedBatch:
        pop = self.population
        slots, order = self._biod_slots(people, exposures)
        n, K, CL, L = len(people), pop.n_attributes, pop.chunks_per_value * pop.chunk_length, pop.chunk_length
        tokens, offsets, rel, _, name, value_slot = self._layout(slots, order, _SUBJECT_SLOTS + 1 + CL + 1)
        start = rel[np.arange(n)[:, None], value_slot]  # each alphabet piece is one token
        values = np.stack([start, np.full((n, K), CL)], axis=2)
        first_chunk = np.stack([start, np.full((n, K), L)], axis=2)
        return RenderedBatch(people, tokens, offsets, name, values, first_chunk=first_chunk)
