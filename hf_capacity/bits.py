"""Pure math of knowledge capacity: bit complexity of bioS/bioD, knowledge bits learned from losses, R(F).

Units are in the names: losses are natural-log cross-entropies in **nats, summed over the tokens of one
item** (one name, one person's values, one chunk) and averaged over items; bits are base-2 totals over the
whole data set unless the name says ``per_person``. Sources: Allen-Zhu & Li, "Physics of Language Models:
Part 3.3" (arXiv 2404.05405), Definitions 4.1 and 4.3 and Theorem 3.2.

Definition vs. bound. ``bios_bits``/``biod_bits`` implement the paper's Definitions (the quantity it plots).
``bios_bits_lower_bound``/``biod_bits_lower_bound`` implement Theorem 3.2, the rigorous lower bound on the
information a model must store, which replaces N0 by N0 - N (names are drawn without replacement) and T^L by
T^L - D (chunks of one attribute are distinct); it is never larger than the definition.

A term can come out negative for a model that predicts worse than uniform guessing over the pool (e.g. an
untrained model). Such a term carries no knowledge: by default each term is clipped at 0 (``clip=True``);
pass ``clip=False`` for the raw formula.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

LOG2_E = 1.0 / math.log(2.0)

# bioS pools (spec §1): first × middle × last names; attribute choices.
BIOS_FIRST_NAMES = 400
BIOS_MIDDLE_NAMES = 400
BIOS_LAST_NAMES = 1000
BIOS_NAME_SPACE = BIOS_FIRST_NAMES * BIOS_MIDDLE_NAMES * BIOS_LAST_NAMES  # N0 = 1.6e8
BIOS_ATTRIBUTE_CHOICES: dict[str, int] = {
    "birth_date": 12 * 28 * 200,  # month × day (1..28) × year (200 consecutive years)
    "birth_city": 200,
    "university": 300,
    "major": 100,
    "employer": 263,
    "gender": 2,
}  # working city is a function of the employer: 0 bits
BIOS_VALUE_SPACE = math.prod(BIOS_ATTRIBUTE_CHOICES.values())  # S0


@dataclass(frozen=True)
class KnowledgeBits:
    """Knowledge in bits, split into the paper's three terms (totals over the data set, base 2)."""

    name_bits: float
    value_bits: float
    diversity_bits: float = 0.0

    @property
    def total(self) -> float:
        return self.name_bits + self.value_bits + self.diversity_bits

    def per_person(self, n_people: int) -> float:
        return self.total / n_people

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def bits_gained(after: KnowledgeBits, before: KnowledgeBits, *, keep_diversity: bool = True) -> KnowledgeBits:
    """Knowledge added between two measurements of the same people (e.g. an adapter run's base model before
    training and the adapted model after): each term of ``after`` minus ``before``'s, negative where knowledge was
    lost. ``keep_diversity=False`` sets the diversity term to 0: bioD people whose diversity sets the model held
    before (an adapter run's new people share its base run's sets), whose diversity bits are not new knowledge."""
    diversity = after.diversity_bits - before.diversity_bits if keep_diversity else 0.0
    return KnowledgeBits(after.name_bits - before.name_bits, after.value_bits - before.value_bits, diversity)


def _check_count(name: str, value: float, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:  # numpy ints too
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_loss(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite loss >= 0 in nats (summed per item), got {value!r}")


def _clip(x: float, clip: bool) -> float:
    return max(x, 0.0) if clip else x


def _log2_minus(log2_a: float, b: float) -> float:
    """log2(a - b) for a given as log2 a (may be astronomically large) and 0 < b < a."""
    ratio_log2 = math.log2(b) - log2_a  # log2(b / a) < 0
    return log2_a + math.log1p(-(2.0**ratio_log2)) * LOG2_E


def log2_bios_value_space() -> float:
    """log2 S0: bits of the six independent bioS attributes of one person (47.59)."""
    return math.log2(BIOS_VALUE_SPACE)


def log2_bios_name_space() -> float:
    """log2 N0: bits to pick one full name out of the pool (27.25)."""
    return math.log2(BIOS_NAME_SPACE)


def _check_bios_n(n_people: int, name_space: int) -> None:
    _check_count("n_people", n_people)
    if n_people > name_space:
        raise ValueError(
            f"n_people={n_people} exceeds the {name_space} distinct full names the pools can form (N0)"
        )


def bios_bits(
    n_people: int,
    p1_nats: float,
    p2_nats: float,
    *,
    name_space: int = BIOS_NAME_SPACE,
    value_space: int = BIOS_VALUE_SPACE,
    clip: bool = True,
) -> KnowledgeBits:
    """Knowledge bits of a model on bioS(N), Definition 4.3.

    bits = N·log2(N0 / e^p1) + N·log2(S0 / e^p2)

    ``p1_nats``: mean over people of the summed loss on the full-name tokens;
    ``p2_nats``: mean over people of the summed loss on all value tokens (gender = first pronoun token;
    working city excluded).
    """
    _check_bios_n(n_people, name_space)
    return _bios_terms(n_people, math.log2(name_space), p1_nats, p2_nats, value_space, clip)


def _term(count: int, log2_space: float, loss_nats: float) -> float:
    """count · log2(space / e^loss): bits of ``count`` items drawn from ``space`` minus their loss."""
    return count * (log2_space - loss_nats * LOG2_E)


def _bios_terms(
    n_people: int, log2_names: float, p1_nats: float, p2_nats: float, value_space: int, clip: bool
) -> KnowledgeBits:
    _check_loss("p1_nats", p1_nats)
    _check_loss("p2_nats", p2_nats)
    name = _term(n_people, log2_names, p1_nats)
    value = _term(n_people, math.log2(value_space), p2_nats)
    return KnowledgeBits(_clip(name, clip), _clip(value, clip))


def bios_bits_max(
    n_people: int, *, name_space: int = BIOS_NAME_SPACE, value_space: int = BIOS_VALUE_SPACE
) -> KnowledgeBits:
    """Bits of a perfect model on bioS(N): p1 = ln N (uniform over the N names), p2 = 0."""
    _check_bios_n(n_people, name_space)
    return KnowledgeBits(n_people * math.log2(name_space / n_people), n_people * math.log2(value_space))


def bios_bits_lower_bound(
    n_people: int,
    p1_nats: float,
    p2_nats: float,
    *,
    name_space: int = BIOS_NAME_SPACE,
    value_space: int = BIOS_VALUE_SPACE,
    clip: bool = True,
) -> KnowledgeBits:
    """Theorem 3.2's rigorous lower bound for bioS: N·log2((N0 - N) / e^p1) + N·log2(S0 / e^p2)."""
    _check_bios_n(n_people, name_space)
    free_names = name_space - n_people
    log2_names = math.log2(free_names) if free_names > 0 else -math.inf
    return _bios_terms(n_people, log2_names, p1_nats, p2_nats, value_space, clip)


@dataclass(frozen=True)
class BioDShape:
    """bioD(N, K, C, D, L, T): N people, K attributes, C chunks per value, D chunks per attribute, each
    chunk L tokens from an alphabet of T tokens."""

    n_people: int
    n_attributes: int
    chunks_per_value: int
    diversity: int
    chunk_length: int
    alphabet: int
    name_space: int = BIOS_NAME_SPACE

    def __post_init__(self) -> None:
        _check_bios_n(self.n_people, self.name_space)
        for field, value in (
            ("K (n_attributes)", self.n_attributes),
            ("C (chunks_per_value)", self.chunks_per_value),
            ("D (diversity)", self.diversity),
            ("L (chunk_length)", self.chunk_length),
            ("T (alphabet)", self.alphabet),
        ):
            _check_count(field, value)
        if self.alphabet < 2:
            raise ValueError(f"T (alphabet) must be >= 2 tokens, got {self.alphabet}")
        if self.log2_chunk_space < math.log2(self.diversity):
            raise ValueError(
                f"D={self.diversity} distinct chunks cannot be drawn from T^L = "
                f"{self.alphabet}^{self.chunk_length} possible chunks: need D <= T^L"
            )

    @property
    def log2_chunk_space(self) -> float:
        """log2 T^L: bits of one chunk drawn uniformly from all token strings."""
        return self.chunk_length * math.log2(self.alphabet)


def biod_bits(
    shape: BioDShape, p1_nats: float, p2_nats: float, p3_nats: float, *, clip: bool = True
) -> KnowledgeBits:
    """Knowledge bits of a model on bioD, Definition 4.1.

    bits = N·log2(N0/e^p1) + N·K·log2(D^C/e^p2) + K·D·log2(T^L/(D·e^p3))

    ``p2_nats``: mean over (person, attribute) of the summed loss on the value's tokens;
    ``p3_nats``: mean over (person, attribute) of the summed loss on the first chunk of the value.
    """
    s = shape
    return _biod_terms(s, math.log2(s.name_space), s.log2_chunk_space, p1_nats, p2_nats, p3_nats, clip)


def _biod_terms(
    s: BioDShape, log2_names: float, log2_chunks: float, p1: float, p2: float, p3: float, clip: bool
) -> KnowledgeBits:
    for name, v in (("p1_nats", p1), ("p2_nats", p2), ("p3_nats", p3)):
        _check_loss(name, v)
    name = _term(s.n_people, log2_names, p1)
    value = _term(s.n_people * s.n_attributes, s.chunks_per_value * math.log2(s.diversity), p2)
    diversity = _term(s.n_attributes * s.diversity, log2_chunks - math.log2(s.diversity), p3)
    return KnowledgeBits(_clip(name, clip), _clip(value, clip), _clip(diversity, clip))


def biod_bits_max(shape: BioDShape) -> KnowledgeBits:
    """Bits of a perfect model on bioD: N·log2(N0/N) + N·K·C·log2 D + K·D·log2(T^L/D)."""
    s = shape
    return KnowledgeBits(
        s.n_people * math.log2(s.name_space / s.n_people),
        s.n_people * s.n_attributes * s.chunks_per_value * math.log2(s.diversity),
        s.n_attributes * s.diversity * (s.log2_chunk_space - math.log2(s.diversity)),
    )


def biod_bits_lower_bound(
    shape: BioDShape, p1_nats: float, p2_nats: float, p3_nats: float, *, clip: bool = True
) -> KnowledgeBits:
    """Theorem 3.2's rigorous bound for bioD: N0 → N0 - N and T^L → T^L - D in the definition."""
    s = shape
    free_names = s.name_space - s.n_people
    log2_names = math.log2(free_names) if free_names > 0 else -math.inf
    exact = s.log2_chunk_space == math.log2(s.diversity)
    log2_chunks = -math.inf if exact else _log2_minus(s.log2_chunk_space, s.diversity)
    return _biod_terms(s, log2_names, log2_chunks, p1_nats, p2_nats, p3_nats, clip)


def uniform_name_loss_nats(name_space: int = BIOS_NAME_SPACE) -> float:
    """ln N0: the loss on one full name guessed uniformly from the name pools (p1 of a model that knows nothing)."""
    return math.log(name_space)


def bios_uniform_value_loss_nats(value_space: int = BIOS_VALUE_SPACE) -> float:
    """ln S0 (32.99 nats): the loss on one person's bioS values guessed uniformly (p2 of a model knowing nothing)."""
    return math.log(value_space)


def biod_uniform_losses_nats(shape: BioDShape) -> tuple[float, float]:
    """(p2, p3) of uniform guessing on bioD, both per (person, attribute): C·ln D for a value whose C chunks are
    each guessed among the attribute's D chunks, and L·ln T for a first chunk guessed among all T^L strings."""
    return shape.chunks_per_value * math.log(shape.diversity), shape.chunk_length * math.log(shape.alphabet)


def capacity_ratio(bits: float, num_params: int) -> float:
    """R(F) = bits / P in bits per parameter (P counted by ``hf_capacity.params``)."""
    if isinstance(num_params, bool) or not (isinstance(num_params, numbers.Integral) and num_params > 0):
        raise ValueError(f"num_params must be a positive integer, got {num_params!r}")
    if not math.isfinite(bits):
        raise ValueError(f"bits must be finite, got {bits!r}")
    return bits / num_params


def params_for_bits(bits: float, bits_per_param: float) -> int:
    """Parameters needed to store ``bits`` at a capacity of ``bits_per_param`` (rounded up)."""
    if bits_per_param <= 0:
        raise ValueError(f"bits_per_param must be > 0, got {bits_per_param!r}")
    return math.ceil(bits / bits_per_param)
