"""Shared fixtures: small populations with trained tokenizers (built once per session)."""

import pytest

from hf_capacity.data import BioDPopulation, BioSPopulation, KnowledgeData


@pytest.fixture(scope="session")
def bios_data() -> KnowledgeData:
    return KnowledgeData.create(BioSPopulation(n_people=300, seed=7), vocab_size=1024)


@pytest.fixture(scope="session")
def biod_data() -> KnowledgeData:
    population = BioDPopulation(n_people=200, n_attributes=4, chunks_per_value=2, diversity=30, chunk_length=3,
                                alphabet=12, seed=3)
    return KnowledgeData.create(population, vocab_size=512)
