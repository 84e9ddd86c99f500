"""Training streams: E exposures of every person, shuffled, EOS-joined and packed into windows, as `datasets`.

Order: exposure rounds; round e is a seeded permutation of all N people, so every person appears exactly once
per round and exactly E times in all (the paper's "every person gets the same number of exposures"), and the
stream never holds more than one batch of biographies. Windows are cut from the concatenation (plain packing,
as in the paper); ``block_diagonal=True`` adds ``position_ids`` that restart at each biography, from which
Hugging Face models build a mask with no attention across biographies. The final partial window is padded
(labels -100) so no exposure is lost.

Junk mixing: a fraction of windows (so, of tokens) comes from a second, huge population of the same format (bioS(N')
for bioS data, bioD(N') of the same shape for bioD data; ``junk_population``) drawn with replacement (each junk
person is seen ~0.2 times for N' = 100M); each window is purely useful or purely junk. With ``domain_token=True``
every useful biography starts with EOS + the domain token (like a site name).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..bits import BIOS_NAME_SPACE
from .population import BioDPopulation, BioSPopulation, Population, hash64, uniform_int
from .render import Renderer

_ROUND_KEY = 0x0DD
_JUNK_KEY = 0x7A4C
_WINDOW_KEY = 0x3D0


@dataclass(frozen=True)
class JunkConfig:
    """Junk-data mixing: ``fraction`` of training windows (so, of tokens) from ``n_people`` never-repeated people of
    the useful population's format (``junk_population``; 7/8 and 100M in the paper; ``n_people=1000`` gives the
    repetitive filler of the paper's control)."""

    fraction: float = 7 / 8
    n_people: int = 100_000_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"junk fraction must lie in [0, 1), got {self.fraction}")
        if self.n_people < 1:
            raise ValueError(f"junk n_people must be >= 1, got {self.n_people}")


def exposure_rounds(
    n_people: int, exposures: int, seed: int, batch_people: int = 8192, start_exposure: int = 0
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (people, exposure index) batches: round e is a seeded permutation of range(n_people)."""
    for e in range(start_exposure, exposures):
        perm = np.random.default_rng(hash64(seed, _ROUND_KEY, e).item()).permutation(n_people)
        for i in range(0, n_people, batch_people):
            yield perm[i : i + batch_people], e


class _Packer:
    """Cuts a stream of token batches into fixed windows, carrying the remainder over (cursor-based)."""

    def __init__(self, context_length: int):
        self.context_length = context_length
        self.buffer = np.empty(0, dtype=np.int32)
        self.doc_start = np.empty(0, dtype=bool)
        self.start_pos = np.empty(0, dtype=np.int64)  # buffer position where each biography starts
        self.start_who = np.empty(0, dtype=np.int64)  # ... and whose biography it is
        self.cursor = 0

    def push(self, tokens: np.ndarray, starts: np.ndarray, people: np.ndarray) -> None:
        c, old = self.cursor, len(self.buffer) - self.cursor
        flags = np.zeros(len(tokens), dtype=bool)
        flags[starts] = True
        keep = self.start_pos >= c
        self.buffer = np.concatenate([self.buffer[c:], tokens])
        self.doc_start = np.concatenate([self.doc_start[c:], flags])
        self.start_pos = np.concatenate([self.start_pos[keep] - c, starts + old])
        self.start_who = np.concatenate([self.start_who[keep], people])
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.buffer) - self.cursor

    def pop(self, n: int | None = None):
        n = self.context_length if n is None else n
        c = self.cursor
        lo, hi = np.searchsorted(self.start_pos, [c, c + n])
        self.cursor = c + n
        return self.buffer[c : c + n], self.doc_start[c : c + n], self.start_who[lo:hi]


class _ListColumn:
    """Rows of a list column gathered in numpy blocks and handed to Arrow without copying each value.

    Rows of ``width`` values (the windows) fill a preallocated block; rows of other lengths (``people``) are
    kept as they come. ``finish`` returns a ``pyarrow.ChunkedArray`` of ``list<dtype>``, one chunk a block."""

    _BLOCK_ROWS = 2048

    def __init__(self, dtype, width: int):
        self.dtype, self.width = np.dtype(dtype), width
        self.chunks: list = []
        self.rows: list[np.ndarray] = []
        self.block = np.empty((self._BLOCK_ROWS, width), dtype=self.dtype)
        self.filled = 0
        self.ragged = False

    def append(self, row: np.ndarray) -> None:
        if not self.ragged and len(row) == self.width:
            self.block[self.filled] = row
            self.filled += 1
            if self.filled == self._BLOCK_ROWS:
                self._flush()
            return
        if not self.ragged:  # first row of another length: the column is ragged from here on
            self.rows = list(self.block[: self.filled])
            self.block, self.filled, self.ragged = None, 0, True
        self.rows.append(np.asarray(row, dtype=self.dtype))
        if len(self.rows) == self._BLOCK_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.ragged:
            lengths = np.fromiter((len(r) for r in self.rows), dtype=np.int32, count=len(self.rows))
            values = np.concatenate(self.rows) if self.rows else np.empty(0, self.dtype)
            self.rows = []
        else:
            lengths = np.full(self.filled, self.width, dtype=np.int32)
            values = self.block[: self.filled].reshape(-1).copy()
            self.filled = 0
        if len(lengths):
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            self.chunks.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))

    def finish(self):
        import pyarrow as pa

        self._flush()
        return pa.chunked_array(self.chunks, type=pa.list_(pa.from_numpy_dtype(self.dtype)))


class PackedStream:
    """E exposures of a population packed into training windows; iterate for dicts of numpy arrays.

    Each item: ``input_ids`` (int32, ``context_length``), ``attention_mask``, ``labels`` (input ids, -100 on
    padding), plus ``position_ids`` with ``block_diagonal=True`` and ``people`` (ids of the useful people whose
    biography starts in the window) with ``with_people=True``.
    """

    def __init__(
        self,
        renderer: Renderer,
        exposures: int,
        context_length: int = 512,
        *,
        seed: int = 0,
        block_diagonal: bool = False,
        junk: JunkConfig | None = None,
        junk_renderer: Renderer | None = None,
        with_people: bool = False,
        batch_people: int = 8192,
        pad_token_id: int = 0,
    ):
        if isinstance(exposures, bool) or not isinstance(exposures, numbers.Integral) or exposures < 1:
            raise ValueError(f"exposures must be a positive integer, got {exposures!r}")
        exposures = int(exposures)  # a numpy integer too
        if context_length < 8:
            raise ValueError(f"context_length must be >= 8 tokens, got {context_length}")
        if junk is not None and junk.fraction > 0 and junk_renderer is None:
            raise ValueError("junk mixing needs junk_renderer (see junk_renderer_for)")
        self.renderer = renderer
        self.exposures = exposures
        self.context_length = context_length
        self.seed = seed
        self.block_diagonal = block_diagonal
        self.junk = junk if junk is not None and junk.fraction > 0 else None
        self.junk_renderer = junk_renderer
        self.with_people = with_people
        self.batch_people = batch_people
        self.pad_token_id = pad_token_id

    @property
    def n_people(self) -> int:
        return self.renderer.population.n_people

    def estimated_windows(self) -> int:
        """Estimated number of windows (exact up to the sampling error of the mean biography length)."""
        useful = self.exposures * self.n_people * self.renderer.mean_tokens_per_biography() / self.context_length
        if self.junk:
            useful /= 1.0 - self.junk.fraction
        return int(np.ceil(useful))

    def _useful_batches(self):
        for people, e in exposure_rounds(self.n_people, self.exposures, self.seed, self.batch_people):
            yield self.renderer.render(people, e)

    def _junk_batches(self):
        n_junk = self.junk_renderer.population.n_people
        for draw in range(0, 1 << 62, self.batch_people):
            counter = np.arange(draw, draw + self.batch_people)
            people = uniform_int(hash64(self.seed, _JUNK_KEY, counter), n_junk)
            yield self.junk_renderer.render(people, counter)

    def _windows(self, batches, packer: _Packer):
        """Full windows from ``batches`` as they fill; then the final partial window."""
        for batch in batches:
            packer.push(batch.tokens, batch.offsets[:-1], batch.people)
            while len(packer) >= self.context_length:
                yield packer.pop()
        if len(packer):
            yield packer.pop(len(packer))

    def _item(self, window: np.ndarray, starts: np.ndarray, people: np.ndarray, useful: bool) -> dict:
        n, ctx = len(window), self.context_length
        input_ids = np.full(ctx, self.pad_token_id, dtype=np.int32)
        input_ids[:n] = window
        labels = input_ids.astype(np.int64)
        labels[n:] = -100
        mask = np.zeros(ctx, dtype=np.int8)
        mask[:n] = 1
        item = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        if self.block_diagonal:
            doc = np.cumsum(starts)  # biography index within the window (0 = continuation of previous)
            first = np.concatenate([[0], np.flatnonzero(starts)])
            pos = np.arange(ctx, dtype=np.int64)
            pos[:n] -= first[doc]
            pos[n:] = np.arange(ctx - n)  # padding: its own segment
            item["position_ids"] = pos
        if self.with_people:
            item["people"] = people if useful else np.empty(0, dtype=np.int64)
        return item

    def __iter__(self) -> Iterator[dict]:
        useful = self._windows(self._useful_batches(), _Packer(self.context_length))
        if self.junk is None:
            for window in useful:
                yield self._item(*window, useful=True)
            return
        junk = self._windows(self._junk_batches(), _Packer(self.context_length))
        for w in range(1 << 62):
            is_junk = uniform_int(hash64(self.seed, _WINDOW_KEY, w), 1 << 24) < self.junk.fraction * (1 << 24)
            if is_junk:
                yield self._item(*next(junk), useful=False)
                continue
            window = next(useful, None)
            if window is None:
                return
            yield self._item(*window, useful=True)

    # ------------------------------------------------------------------ `datasets` views
    def features(self):
        import datasets

        f = {
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "attention_mask": datasets.Sequence(datasets.Value("int8")),
            "labels": datasets.Sequence(datasets.Value("int64")),
        }
        if self.block_diagonal:
            f["position_ids"] = datasets.Sequence(datasets.Value("int64"))
        if self.with_people:
            f["people"] = datasets.Sequence(datasets.Value("int64"))
        return datasets.Features(f)

    def to_dataset(self, progress: bool = True, *, labels: bool = True):
        """Materialise as an in-memory ``datasets.Dataset``; ``to_iterable_dataset`` generates windows instead.

        The windows go straight into Arrow list columns from numpy blocks (no Python int per token), so the
        build peaks at about the size of the finished table: ~13-21 bytes a token (int32 ids, int8 mask, int64
        labels, int64 positions with ``block_diagonal``). ``labels=False`` leaves the labels out (5 bytes a token
        without ``block_diagonal``): they are the input ids with -100 where ``attention_mask`` is 0, and
        `collate_windows` rebuilds them batch by batch (``hf-capacity train`` does this)."""
        import datasets
        import pyarrow as pa
        from datasets.table import InMemoryTable
        from tqdm.auto import tqdm

        features = self.features()
        if not labels:
            del features["labels"]
        columns = {k: _ListColumn(features[k].feature.dtype, self.context_length) for k in features}
        with tqdm(total=self.estimated_windows(), desc="packing windows", disable=not progress, unit="win") as bar:
            for item in self:
                for k, column in columns.items():
                    column.append(item[k])
                bar.update()
            bar.total = bar.n  # the total was an estimate: end the bar at the windows actually packed
            bar.refresh()
        table = pa.table({k: c.finish() for k, c in columns.items()}, schema=features.arrow_schema)
        # the fingerprint is given: left to `datasets`, it would pickle the whole table to hash it (~3x the memory)
        return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features),
                                fingerprint=self.fingerprint())

    def fingerprint(self) -> str:
        """A hash of what fixes the windows' content: the renderer (population, options, token table), the stream
        settings and the junk mixing. Equal streams get the same fingerprint, different ones another."""
        from datasets.fingerprint import Hasher

        def renderer_key(r: Renderer | None):
            if r is None:
                return None
            if hasattr(r, "table_ids"):  # the project tokenizer's pieces, as token ids
                tokens = Hasher.hash((r.table_ids.tobytes(), r.table_lens.tobytes()))
            else:  # a user's tokenizer (OffsetRenderer): its whole definition
                tokens = Hasher.hash(r.tokenizer.backend_tokenizer.to_str())
            return type(r).__name__, repr(r.population), r.simple, r.domain_token, tokens

        return Hasher.hash((
            "PackedStream/1", renderer_key(self.renderer), self.exposures, self.context_length, self.seed,
            self.block_diagonal, self.junk, renderer_key(self.junk_renderer), self.with_people, self.batch_people,
            self.pad_token_id,
        ))

    def to_iterable_dataset(self):
        """A ``datasets.IterableDataset`` generating windows on the fly (constant memory)."""
        import datasets

        def generate():
            for item in self:
                yield {k: v.tolist() for k, v in item.items()}

        return datasets.IterableDataset.from_generator(generate, features=self.features())


def collate_windows(rows: list[dict]) -> dict:
    """A batch of packed windows as tensors: transformers' ``default_data_collator`` (same dtypes), plus the
    ``labels`` where the rows carry none (``PackedStream.to_dataset(labels=False)``): the input ids as int64, -100
    where ``attention_mask`` is 0, exactly what the stream writes in its labels column."""
    from transformers import default_data_collator

    batch = default_data_collator(rows)
    if "labels" not in batch:
        if "attention_mask" not in batch:
            raise ValueError("windows without labels need an attention_mask to rebuild them from")
        batch["labels"] = batch["input_ids"].long().masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def junk_population(population: Population, junk: JunkConfig) -> Population:
    """The junk people of ``population``: ``junk.n_people`` people of the same format, indexed after it.

    bioS: bioS(N') over the same name and attribute pools. bioD: bioD(N') of the same shape (K, C, D, L, T) and seed,
    so over the *same* diversity sets: they are the bioD counterpart of bioS's attribute pools (the values a person
    can have: format). So junk teaches nothing but the format: each junk person's name and values are fresh draws,
    seen (junk biographies drawn) / N' times (~0.2 in the paper), and what junk people share with anyone is the
    diversity sets, which the useful data shows too and whose bits (the diversity term) count once, in the useful
    population's bits_max. Fresh diversity sets would instead add K·D chunks that recur across junk people:
    learnable knowledge of the junk's own, in no bits_max.

    Names come from the same name permutation at the indices after the useful people, so no junk person shares a
    full name with a useful one. Raises ValueError if the N + N' people do not fit in the N0 distinct names."""
    offset = population.name_offset + population.n_people
    if offset + junk.n_people > BIOS_NAME_SPACE:
        raise ValueError(
            f"{junk.n_people:,} junk people do not fit after the useful people (name indices up to {offset:,}): "
            f"useful and junk people together may be at most N0 = {BIOS_NAME_SPACE:,} (one distinct name each); "
            "lower the junk N'"
        )
    if isinstance(population, BioDPopulation):
        return dataclasses.replace(population, n_people=junk.n_people, name_offset=offset)
    if isinstance(population, BioSPopulation):
        return BioSPopulation(n_people=junk.n_people, seed=population.seed, name_offset=offset)
    raise ValueError(f"junk mixing is defined for bioS and bioD populations, not {type(population).__name__}")


def junk_renderer_for(renderer: Renderer, tokenizer, junk: JunkConfig) -> Renderer:
    """The renderer of the junk population (``junk_population``): full renderings, no domain token."""
    return Renderer(junk_population(renderer.population, junk), tokenizer, simple=False, domain_token=False)


KNOWLEDGE_COLUMN = "knowledge"


def mix_knowledge(corpus, knowledge, *, seed: int = 0):
    """The windows of a user's corpus and of a knowledge stream in one shuffled ``datasets.Dataset``.

    ``corpus``: packed windows of the user's text (``input_ids``, optionally ``attention_mask`` and ``labels``;
    missing ones are filled as ones and a copy of the input ids), tokenized with the tokenizer ``knowledge`` was
    rendered with and of the same length; ``knowledge``: ``data.stream(E, context).to_dataset()``. Every window of
    both appears exactly once, so one epoch shows every person exactly E times. The ``knowledge`` column (1 for
    knowledge windows) tells the capacity callbacks which share of the tokens is knowledge; the Trainer drops it
    before the model.
    """
    import datasets

    columns = ["input_ids", "attention_mask", "labels"]
    if "input_ids" not in corpus.column_names:
        raise ValueError(f"the corpus needs an input_ids column (packed windows); it has {corpus.column_names}")
    width = len(knowledge[0]["input_ids"])
    lengths = set(corpus.select(range(min(len(corpus), 1000))).map(
        lambda row: {"n": len(row["input_ids"])}, remove_columns=corpus.column_names)["n"])
    if lengths != {width}:
        raise ValueError(f"corpus windows have {sorted(lengths)[:5]} tokens, the knowledge windows {width}: pack the "
                         f"corpus to the same context length")

    def complete(row):
        ids = row["input_ids"]
        return {"input_ids": ids, "attention_mask": row.get("attention_mask") or [1] * len(ids),
                "labels": row.get("labels") or list(ids), KNOWLEDGE_COLUMN: 0}

    features = knowledge.select_columns(columns).features.copy()
    features[KNOWLEDGE_COLUMN] = datasets.Value("int8")
    user = corpus.map(complete, remove_columns=corpus.column_names, features=features)
    ours = knowledge.select_columns(columns).map(lambda row: {KNOWLEDGE_COLUMN: 1}, features=features)
    return datasets.concatenate_datasets([user, ours]).shuffle(seed=seed).flatten_indices()
