"""Sizing a run before it trains: P and R_max on the run's own people, and the N that makes a model
capacity-limited."""

from __future__ import annotations

import dataclasses

import pytest

from hf_capacity.preflight import people_for_r_max, population_size
from hf_capacity.training import CapacityTrainingConfig

BIOD = {"n_attributes": 1, "chunks_per_value": 16, "diversity": 1000, "chunk_length": 1, "alphabet": 1000}


def ladder_config(n_people: int = 400, **extra) -> CapacityTrainingConfig:
    """A capacity-law ladder run (GPT2-1-1 head dim 16 on one-attribute bioD), as the sweeps write it."""
    return CapacityTrainingConfig(output_dir="unused", dataset="bioD", biod=BIOD, model="gpt2-1-1", head_dim=16,
                                  n_people=n_people, vocab_size=4096, exposures=1000, **extra)


def test_the_population_found_is_the_smallest_with_the_wanted_r_max():
    size = people_for_r_max(ladder_config(), 3.0)  # from 400 people (R_max ~1.8) upwards
    assert size.r_max >= 3.0 and size.num_params * size.r_max == pytest.approx(size.bits_max)
    # what a run on those people counts, and 2% fewer people fall short
    assert population_size(ladder_config(size.n_people)) == size
    assert population_size(ladder_config(int(size.n_people * 0.98))).r_max < 3.0


def test_sizing_down_from_too_many_people():
    config = ladder_config(4000)
    assert population_size(config).r_max > 5
    size = people_for_r_max(config, 2.5)
    assert size.n_people < 4000 and size.r_max >= 2.5
    assert population_size(dataclasses.replace(config, n_people=int(size.n_people * 0.98))).r_max < 2.5


@pytest.mark.parametrize("r_max", [0, -1.0, float("nan"), "3"])
def test_a_ratio_that_is_not_a_positive_number_is_refused(r_max):
    with pytest.raises(ValueError, match="r_max must be a positive number"):
        people_for_r_max(ladder_config(), r_max)
