"""Populations: who has which attribute values (bioS, bioD), sampled once from a seed; the ground truth.

Everything is a pure function of (seed, person index): names come from a seeded permutation of the N0 full
names (so they are distinct without storing a set, and a junk population can use the indices after the
useful ones), attributes from a counter-based hash. Nothing is re-derived from text anywhere else.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from functools import cached_property, lru_cache
from importlib import resources

import numpy as np

from ..bits import (
    BIOS_ATTRIBUTE_CHOICES,
    BIOS_FIRST_NAMES,
    BIOS_LAST_NAMES,
    BIOS_MIDDLE_NAMES,
    BIOS_NAME_SPACE,
    BioDShape,
)

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
FIRST_BIRTH_YEAR = 1900
N_BIRTH_YEARS = 200
N_BIRTH_DAYS = 28
BIOS_ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "working_city")
"""The six sentences of a bioS biography, in canonical order (working city follows from the employer)."""

_POOL_SIZES = {
    "first_names": BIOS_FIRST_NAMES,
    "middle_names": BIOS_MIDDLE_NAMES,
    "last_names": BIOS_LAST_NAMES,
    "birth_cities": BIOS_ATTRIBUTE_CHOICES["birth_city"],
    "universities": BIOS_ATTRIBUTE_CHOICES["university"],
    "majors": BIOS_ATTRIBUTE_CHOICES["major"],
    "employers": BIOS_ATTRIBUTE_CHOICES["employer"],
}


# --------------------------------------------------------------------------------------------- hashing
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixing map of uint64 arrays (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash64(*keys: int | np.ndarray) -> np.ndarray:
    """Counter-based hash of a tuple of integer keys (scalars or broadcastable arrays) to uint64."""
    h = np.uint64(0x2545F4914F6CDD1D)
    with np.errstate(over="ignore"):
        for k in keys:
            k = np.asarray(k).astype(np.int64).astype(np.uint64)
            h = mix64(h ^ (k + _GOLDEN))
    return np.asarray(h, dtype=np.uint64)


def uniform_int(h: np.ndarray, n: int) -> np.ndarray:
    """Map uint64 hashes to integers uniform in [0, n) (bias < n / 2^64)."""
    return (np.asarray(h, dtype=np.uint64) % np.uint64(n)).astype(np.int64)


def permute_index(indices: np.ndarray, domain: int, seed: int) -> np.ndarray:
    """A seeded bijection of [0, domain) (a 4-round Feistel network with cycle walking), applied to ``indices``.

    Distinct indices map to distinct outputs, which is how N people get N distinct names without sampling
    state, and how a junk population (indices N, N+1, ...) never shares a name with the useful one.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= domain):
        raise ValueError(f"indices must lie in [0, {domain})")
    half_bits = max(1, math.ceil(math.log2(domain) / 2))
    mask = np.uint64((1 << half_bits) - 1)
    keys = [hash64(seed, 0xFE15, r) for r in range(4)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left = x >> np.uint64(half_bits)
        right = x & mask
        for key in keys:
            left, right = right, left ^ (mix64(right ^ key) & mask)
        return (left << np.uint64(half_bits)) | right

    out = feistel(idx.astype(np.uint64))
    pending = out >= np.uint64(domain)
    while pending.any():  # cycle walking: re-apply until the value falls inside the domain
        out[pending] = feistel(out[pending])
        pending = out >= np.uint64(domain)
    return out.astype(np.int64)


def _plain_ints(population) -> None:
    """Store a population's numpy integer fields (N from an ``np.arange``, a pandas column) as Python ints, so
    they compare, hash and save to JSON like the numbers they are."""
    for f in fields(population):
        value = getattr(population, f.name)
        if isinstance(value, numbers.Integral) and not isinstance(value, (int, bool)):
            object.__setattr__(population, f.name, int(value))


# ----------------------------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class Pools:
    """The shipped name and attribute pools (``hf_capacity/data/pools``), sizes as in the paper."""

    first_names: tuple[str, ...]
    middle_names: tuple[str, ...]
    last_names: tuple[str, ...]
    birth_cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    employers: tuple[str, ...]
    employer_hq: tuple[str, ...]
    """Headquarters city of each employer (the working city)."""

    @property
    def working_cities(self) -> tuple[str, ...]:
        """Distinct HQ cities, sorted."""
        return tuple(sorted(set(self.employer_hq)))


def _read_pool(name: str) -> list[str]:
    text = resources.files("hf_capacity.data").joinpath("pools", f"{name}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def load_pools() -> Pools:
    """Read and check the shipped pools (cached; immutable)."""
    raw = {name: _read_pool(name) for name in _POOL_SIZES}
    employers, hq = zip(*(line.split("\t") for line in raw.pop("employers")))
    raw["employers"], raw["employer_hq"] = list(employers), list(hq)
    for name, size in _POOL_SIZES.items():
        items = raw[name]
        if len(items) != size or len(set(items)) != size:
            raise RuntimeError(f"pool {name} must hold {size} distinct items, found {len(set(items))}")
    return Pools(**{k: tuple(v) for k, v in raw.items()})


# --------------------------------------------------------------------------------------------- bioS
_ATTR_KEY = {name: 101 + i for i, name in enumerate(("month", "day", "year", *BIOS_ATTRIBUTES[1:5], "gender"))}


@dataclass(frozen=True)
class BioSPopulation:
    """bioS(N): N people with distinct full names and six uniform, independent attributes.

    People are indexed 0..N-1; ``name_offset`` shifts into the shared name permutation (junk populations use
    the indices after the useful population, so names never collide). Arrays are computed on demand for any
    index array, so a 100M-person junk population costs no memory.
    """

    n_people: int
    seed: int = 0
    name_offset: int = 0

    def __post_init__(self) -> None:
        _plain_ints(self)
        if isinstance(self.n_people, bool) or not isinstance(self.n_people, int) or self.n_people < 1:
            raise ValueError(f"n_people must be a positive integer, got {self.n_people!r}")
        if self.name_offset < 0 or self.name_offset + self.n_people > BIOS_NAME_SPACE:
            raise ValueError(
                f"bioS can hold at most N0 = {BIOS_NAME_SPACE:,} people with distinct names "
                f"(asked for {self.n_people:,} after offset {self.name_offset:,})"
            )

    family = "bioS"

    def attributes(self, people: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Attribute indices (int64 arrays) of ``people`` (default: everybody).

        Keys: first, middle, last (name pool indices), month (0-11), day (1-28), year (e.g. 1900-2099),
        birth_city, university, major, employer (pool indices), gender (0 = male "He", 1 = female "She").
        """
        idx = np.arange(self.n_people) if people is None else np.asarray(people, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_people):
            raise ValueError(f"person indices must lie in [0, {self.n_people})")
        name = permute_index(idx + self.name_offset, BIOS_NAME_SPACE, self.seed)
        first, rest = np.divmod(name, BIOS_MIDDLE_NAMES * BIOS_LAST_NAMES)
        middle, last = np.divmod(rest, BIOS_LAST_NAMES)
        g = idx + self.name_offset

        def draw(attr: str, n: int) -> np.ndarray:
            return uniform_int(hash64(self.seed, _ATTR_KEY[attr], g), n)

        return {
            "first": first,
            "middle": middle,
            "last": last,
            "month": draw("month", 12),
            "day": draw("day", N_BIRTH_DAYS) + 1,
            "year": draw("year", N_BIRTH_YEARS) + FIRST_BIRTH_YEAR,
            "birth_city": draw("birth_city", BIOS_ATTRIBUTE_CHOICES["birth_city"]),
            "university": draw("university", BIOS_ATTRIBUTE_CHOICES["university"]),
            "major": draw("major", BIOS_ATTRIBUTE_CHOICES["major"]),
            "employer": draw("employer", BIOS_ATTRIBUTE_CHOICES["employer"]),
            "gender": draw("gender", 2),
        }

    @cached_property
    def _all(self) -> dict[str, np.ndarray]:
        return self.attributes()

    def person(self, i: int) -> dict[str, str]:
        """One person's facts as strings (for display and tests)."""
        a = {k: int(v[0]) for k, v in self.attributes(np.array([i])).items()}
        pools = load_pools()
        return {
            "name": f"{pools.first_names[a['first']]} {pools.middle_names[a['middle']]} {pools.last_names[a['last']]}",
            "gender": ("male", "female")[a["gender"]],
            "birth_date": f"{MONTHS[a['month']]} {a['day']}, {a['year']}",
            "birth_city": pools.birth_cities[a["birth_city"]],
            "university": pools.universities[a["university"]],
            "major": pools.majors[a["major"]],
            "employer": pools.employers[a["employer"]],
            "working_city": pools.employer_hq[a["employer"]],
        }

    def to_dataset(self):
        """The population as a ``datasets.Dataset`` with one row per person (strings + ``person_id``)."""
        import datasets

        if self.n_people > 2_000_000:
            raise ValueError("to_dataset() materialises strings; use attributes() for more than 2M people")
        a = self._all
        p = load_pools()
        names = [
            f"{p.first_names[first]} {p.middle_names[middle]} {p.last_names[last]}"
            for first, middle, last in zip(a["first"], a["middle"], a["last"])
        ]
        return datasets.Dataset.from_dict(
            {
                "person_id": np.arange(self.n_people),
                "name": names,
                "gender": [("male", "female")[g] for g in a["gender"]],
                "birth_date": [f"{MONTHS[m]} {d}, {y}" for m, d, y in zip(a["month"], a["day"], a["year"])],
                "birth_city": [p.birth_cities[i] for i in a["birth_city"]],
                "university": [p.universities[i] for i in a["university"]],
                "major": [p.majors[i] for i in a["major"]],
                "employer": [p.employers[i] for i in a["employer"]],
                "working_city": [p.employer_hq[i] for i in a["employer"]],
            }
        )

    def to_config(self) -> dict:
        return {"family": self.family, **asdict(self)}


# --------------------------------------------------------------------------------------------- bioD
@dataclass(frozen=True)
class BioDPopulation:
    """bioD(N, K, C, D, L, T): K attributes "ID 1".."ID K"; attribute k has a diversity set of D distinct
    chunks of L alphabet tokens; each person's value for k is C chunks drawn uniformly from that set.

    ``name_offset`` shifts the people into the shared name permutation, as in bioS: bioD(N', offset N) with the
    same seed holds N' new people (distinct names, independent values) over the same diversity sets.
    """

    n_people: int
    n_attributes: int
    chunks_per_value: int
    diversity: int
    chunk_length: int
    alphabet: int
    seed: int = 0
    name_offset: int = 0

    family = "bioD"

    def __post_init__(self) -> None:
        _plain_ints(self)
        self.shape  # validates (clear ValueError for N > N0, D > T^L, K < 1, ...)
        if self.name_offset < 0 or self.name_offset + self.n_people > BIOS_NAME_SPACE:
            raise ValueError(
                f"bioD can hold at most N0 = {BIOS_NAME_SPACE:,} people with distinct names "
                f"(asked for {self.n_people:,} after offset {self.name_offset:,})"
            )

    @property
    def shape(self) -> BioDShape:
        return BioDShape(
            self.n_people, self.n_attributes, self.chunks_per_value, self.diversity, self.chunk_length, self.alphabet
        )

    @cached_property
    def chunks(self) -> np.ndarray:
        """Diversity sets: int64 array (K, D, L) of alphabet token indices; chunks of one attribute distinct."""
        K, D, L, T = self.n_attributes, self.diversity, self.chunk_length, self.alphabet
        out = np.empty((K, D, L), dtype=np.int64)
        space = T**L
        for k in range(K):
            rng = np.random.default_rng(hash64(self.seed, 0xB10D, k).item())
            if space <= 4 * D or space <= 1 << 24:  # dense: sample chunk codes without replacement
                codes = rng.choice(space, size=D, replace=False)
                for j in range(L - 1, -1, -1):
                    codes, out[k, :, j] = np.divmod(codes, T)
            else:  # sparse: random strings, redraw the rare duplicates
                chunk = rng.integers(0, T, size=(D, L))
                while True:
                    _, first = np.unique(chunk, axis=0, return_index=True)
                    dup = np.setdiff1d(np.arange(D), first)
                    if dup.size == 0:
                        break
                    chunk[dup] = rng.integers(0, T, size=(dup.size, L))
                out[k] = chunk
        return out

    def names(self, people: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """First/middle/last pool indices of ``people`` (distinct full names, as in bioS)."""
        idx = np.arange(self.n_people) if people is None else np.asarray(people, dtype=np.int64)
        name = permute_index(idx + self.name_offset, BIOS_NAME_SPACE, self.seed)
        first, rest = np.divmod(name, BIOS_MIDDLE_NAMES * BIOS_LAST_NAMES)
        middle, last = np.divmod(rest, BIOS_LAST_NAMES)
        return {"first": first, "middle": middle, "last": last}

    def values(self, people: np.ndarray | None = None) -> np.ndarray:
        """Chunk indices of every value: int64 array (len(people), K, C) into the diversity sets."""
        idx = np.arange(self.n_people) if people is None else np.asarray(people, dtype=np.int64)
        k = np.arange(self.n_attributes)[None, :, None]
        c = np.arange(self.chunks_per_value)[None, None, :]
        g = idx[:, None, None] + self.name_offset
        return uniform_int(hash64(self.seed, 0xD1A, g, k, c), self.diversity)

    def to_config(self) -> dict:
        config = {"family": self.family, **asdict(self)}
        if not self.name_offset:  # folders written before name_offset existed read the same
            del config["name_offset"]
        return config


Population = BioSPopulation | BioDPopulation


def population_from_config(config: dict) -> Population:
    """Rebuild a population from ``to_config()`` output (e.g. read from ``knowledge_data.json``)."""
    config = dict(config)
    family = config.pop("family", None)
    if family == "bioS":
        return BioSPopulation(**config)
    if family == "bioD":
        return BioDPopulation(**config)
    raise ValueError(f"unknown population family {family!r}: expected 'bioS' or 'bioD'")
