"""Populations: exact pool sizes, distinct names, determinism from the seed, bioD diversity sets."""

import numpy as np
import pytest

from hf_capacity.bits import BIOS_ATTRIBUTE_CHOICES
from hf_capacity.data import BioDPopulation, BioSPopulation, load_pools, population_from_config
from hf_capacity.data.population import permute_index


def test_shipped_pools_have_the_paper_sizes():
    pools = load_pools()
    assert len(pools.first_names) == 400 and len(pools.middle_names) == 400 and len(pools.last_names) == 1000
    assert len(pools.birth_cities) == BIOS_ATTRIBUTE_CHOICES["birth_city"] == 200
    assert len(pools.universities) == 300 and len(pools.majors) == 100
    assert len(pools.employers) == len(pools.employer_hq) == 263
    for pool in (pools.first_names, pools.middle_names, pools.last_names, pools.birth_cities, pools.employers):
        assert len(set(pool)) == len(pool)
        assert all(item.isascii() and item == item.strip() for item in pool)


def test_names_are_distinct_and_deterministic():
    pop = BioSPopulation(n_people=50_000, seed=11)
    a = pop.attributes()
    names = a["first"] * 400_000 + a["middle"] * 1000 + a["last"]
    assert len(np.unique(names)) == 50_000
    again = BioSPopulation(n_people=50_000, seed=11).attributes()
    assert all(np.array_equal(a[k], again[k]) for k in a)
    other = BioSPopulation(n_people=50_000, seed=12).attributes()
    assert not np.array_equal(a["first"], other["first"])


def test_attributes_are_uniform_over_their_ranges():
    a = BioSPopulation(n_people=100_000, seed=0).attributes()
    assert a["day"].min() == 1 and a["day"].max() == 28
    assert a["year"].min() == 1900 and a["year"].max() == 2099
    assert set(np.unique(a["gender"])) == {0, 1}
    counts = np.bincount(a["major"], minlength=100)
    assert counts.min() > 800 and counts.max() < 1200  # 1000 expected per major


def test_permutation_is_a_bijection():
    out = permute_index(np.arange(5000), 5000, seed=3)
    assert sorted(out.tolist()) == list(range(5000))


def test_junk_population_never_shares_a_name_with_the_useful_one():
    useful = BioSPopulation(1000, seed=5)
    junk = BioSPopulation(100_000, seed=5, name_offset=1000)

    def key(a):
        return set((a["first"] * 400_000 + a["middle"] * 1000 + a["last"]).tolist())

    assert not key(useful.attributes()) & key(junk.attributes())


def test_person_and_dataset_views_agree():
    pop = BioSPopulation(20, seed=1)
    table = pop.to_dataset()
    assert table.num_rows == 20
    assert table[3]["name"] == pop.person(3)["name"]
    assert table[3]["working_city"] == pop.person(3)["working_city"]


def test_biod_chunks_are_distinct_per_attribute_and_values_in_range():
    pop = BioDPopulation(100, n_attributes=3, chunks_per_value=4, diversity=50, chunk_length=2, alphabet=8, seed=0)
    chunks = pop.chunks
    assert chunks.shape == (3, 50, 2) and chunks.max() < 8
    for k in range(3):
        assert len(np.unique(chunks[k], axis=0)) == 50
    values = pop.values()
    assert values.shape == (100, 3, 4) and values.min() >= 0 and values.max() < 50


def test_biod_can_use_every_chunk_of_a_small_space():
    pop = BioDPopulation(10, n_attributes=1, chunks_per_value=1, diversity=27, chunk_length=3, alphabet=3)
    assert len(np.unique(pop.chunks[0], axis=0)) == 27


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_people=10, n_attributes=1, chunks_per_value=1, diversity=100, chunk_length=2, alphabet=5), "D <= T"),
        (dict(n_people=10, n_attributes=0, chunks_per_value=1, diversity=2, chunk_length=2, alphabet=5), "K"),
    ],
)
def test_invalid_biod_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BioDPopulation(**kwargs)


def test_invalid_bios_sizes():
    with pytest.raises(ValueError, match="N0"):
        BioSPopulation(n_people=160_000_001)
    with pytest.raises(ValueError, match="positive"):
        BioSPopulation(n_people=0)


def test_config_round_trip():
    pop = BioDPopulation(10, 2, 1, 5, 2, 4, seed=9)
    assert population_from_config(pop.to_config()) == pop
    with pytest.raises(ValueError, match="family"):
        population_from_config({"family": "bioX"})


def test_numpy_integers_make_the_same_population_and_stream(bios_data):
    import json

    bios = BioSPopulation(np.int64(300), seed=np.int64(7))
    assert bios == bios_data.population and json.dumps(bios.to_config())  # plain ints in the saved config
    biod = BioDPopulation(*np.array([50, 2, 2, 10, 1, 20]))
    assert biod == BioDPopulation(50, 2, 2, 10, 1, 20) and json.dumps(biod.to_config())
    same = [w["input_ids"].tolist() for w in bios_data.stream(np.int64(2), 64)]
    assert same == [w["input_ids"].tolist() for w in bios_data.stream(2, 64)]
