"""Knowledge bits and bit budgets, checked against values computed by hand from the paper's definitions."""

import math

import pytest

from hf_capacity.bits import (
    BioDShape,
    KnowledgeBits,
    biod_bits,
    biod_bits_lower_bound,
    biod_bits_max,
    bios_bits,
    bios_bits_lower_bound,
    bios_bits_max,
    bits_gained,
    capacity_ratio,
    log2_bios_name_space,
    log2_bios_value_space,
    params_for_bits,
)


def test_bios_value_and_name_space():
    # S0 = 2 × 67,200 × 200 × 300 × 100 × 263 = 2.1208e14, N0 = 400 × 400 × 1000
    assert log2_bios_value_space() == pytest.approx(47.59, abs=0.005)
    assert log2_bios_name_space() == pytest.approx(27.25, abs=0.005)


@pytest.mark.parametrize("n, per_person", [(10_000, 61.6), (100_000, 58.2), (1_000_000, 54.9), (10_000_000, 51.6)])
def test_bios_bits_max_per_person_matches_spec(n, per_person):
    assert bios_bits_max(n).per_person(n) == pytest.approx(per_person, abs=0.05)


def test_perfect_model_reaches_bits_max():
    n = 1000
    perfect = bios_bits(n, p1_nats=math.log(n), p2_nats=0.0)
    assert perfect.total == pytest.approx(bios_bits_max(n).total)


def test_bios_bits_by_hand():
    # name: 1000 × (log2 1.6e8 − 10/ln 2) = 1000 × (27.2535 − 14.4270) = 12826.5
    # value: 1000 × (47.5918 − 20/ln 2) = 1000 × (47.5918 − 28.8539) = 18737.9
    b = bios_bits(1000, p1_nats=10.0, p2_nats=20.0)
    assert b.name_bits == pytest.approx(12826.5, abs=0.5)
    assert b.value_bits == pytest.approx(18737.9, abs=0.5)
    assert b.diversity_bits == 0
    assert b.total == pytest.approx(31564.4, abs=1)


def test_terms_worse_than_guessing_are_clipped_unless_asked():
    untrained = bios_bits(100, p1_nats=40.0, p2_nats=80.0)
    assert untrained.total == 0
    raw = bios_bits(100, p1_nats=40.0, p2_nats=80.0, clip=False)
    assert raw.name_bits < 0 and raw.value_bits < 0


def test_lower_bound_uses_n0_minus_n_and_never_exceeds_definition():
    b = bios_bits(10_000_000, 17.0, 5.0)
    lb = bios_bits_lower_bound(10_000_000, 17.0, 5.0)
    assert lb.value_bits == b.value_bits
    expected_name = 1e7 * (math.log2(1.6e8 - 1e7) - 17.0 / math.log(2))
    assert lb.name_bits == pytest.approx(expected_name)
    assert lb.total < b.total


def test_biod_by_hand():
    # bioD(N=1000, K=4, C=2, D=100, L=3, T=20): name 1000·log2(1.6e8/1000) = 17287.7;
    # values 1000·4·2·log2(100) = 53150.8; diversity 4·100·log2(20^3/100) = 400·6.3219 = 2528.8
    shape = BioDShape(1000, 4, 2, 100, 3, 20)
    m = biod_bits_max(shape)
    assert m.name_bits == pytest.approx(17287.7, abs=0.1)
    assert m.value_bits == pytest.approx(53150.8, abs=0.1)
    assert m.diversity_bits == pytest.approx(2528.8, abs=0.1)
    assert biod_bits(shape, math.log(1000), 0.0, 0.0).total == pytest.approx(m.total)
    # half a nat of loss on each value: values lose 1000·4·0.5/ln 2 = 2885.4 bits
    assert biod_bits(shape, math.log(1000), 0.5, 0.0).value_bits == pytest.approx(53150.8 - 2885.4, abs=0.1)
    lb = biod_bits_lower_bound(shape, math.log(1000), 0.0, 0.0)
    assert lb.diversity_bits == pytest.approx(400 * math.log2((20**3 - 100) / 100))


def test_biod_handles_astronomical_chunk_spaces():
    shape = BioDShape(10, 50, 50, 10_000, 50, 40_000)  # T^L = 40000^50
    lb = biod_bits_lower_bound(shape, 3.0, 1.0, 1.0)
    assert math.isfinite(lb.diversity_bits)
    assert lb.diversity_bits == pytest.approx(biod_bits(shape, 3.0, 1.0, 1.0).diversity_bits)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_people=10, n_attributes=0, chunks_per_value=1, diversity=10, chunk_length=1, alphabet=20), "K"),
        (dict(n_people=10, n_attributes=1, chunks_per_value=1, diversity=401, chunk_length=2, alphabet=20), "D <= T"),
        (dict(n_people=200_000_000, n_attributes=1, chunks_per_value=1, diversity=2, chunk_length=1, alphabet=2),
         "N0"),
    ],
)
def test_biod_shape_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BioDShape(**kwargs)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_people"):
        bios_bits(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="N0"):
        bios_bits_max(160_000_001)
    with pytest.raises(ValueError, match="nats"):
        bios_bits(10, -1.0, 1.0)
    with pytest.raises(ValueError, match="nats"):
        bios_bits(10, float("nan"), 1.0)
    with pytest.raises(ValueError, match="num_params"):
        capacity_ratio(10.0, 0)


def test_capacity_ratio_and_params_needed():
    assert capacity_ratio(2_000_000.0, 1_000_000) == 2.0
    assert params_for_bits(54.9e6, 2.0) == 27_450_000


def test_numpy_integers_are_whole_numbers():
    import numpy as np

    # counts read off a pandas column or an np.arange are numpy integers
    assert bios_bits_max(np.int64(1000)).total == bios_bits_max(1000).total
    assert capacity_ratio(2_000_000.0, np.int64(1_000_000)) == 2.0
    shape = BioDShape(*np.array([100, 2, 2, 10, 1, 20]))
    assert biod_bits_max(shape).total == biod_bits_max(BioDShape(100, 2, 2, 10, 1, 20)).total
    with pytest.raises(ValueError, match="n_people"):
        bios_bits_max(1000.0)  # a float is still not a count


def test_bits_gained_is_the_difference_term_by_term():
    before, after = KnowledgeBits(10.0, 0.0, 31.3), KnowledgeBits(25.0, 60.0, 63.6)
    assert bits_gained(after, before) == KnowledgeBits(15.0, 60.0, 32.3)
    # bioD people on the diversity sets the model held before (an adapter run's): that term is not new knowledge
    assert bits_gained(after, before, keep_diversity=False) == KnowledgeBits(15.0, 60.0, 0.0)
    assert bits_gained(before, after).total == pytest.approx(-(15.0 + 60.0 + 32.3))  # knowledge lost is negative
