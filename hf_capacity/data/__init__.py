"""Synthetic knowledge data: populations, rendering with exact spans, the corpus tokenizer, packed streams."""

from .knowledge_data import KnowledgeData
from .population import BioDPopulation, BioSPopulation, load_pools, population_from_config
from .random_sequences import RandomSequences
from .render import RenderedBatch, Renderer, evaluation_exposure, load_templates
from .stream import JunkConfig, PackedStream, collate_windows, exposure_rounds, mix_knowledge
from .tokenizer import train_tokenizer

__all__ = [
    "BioDPopulation",
    "BioSPopulation",
    "JunkConfig",
    "KnowledgeData",
    "PackedStream",
    "RandomSequences",
    "RenderedBatch",
    "Renderer",
    "collate_windows",
    "evaluation_exposure",
    "exposure_rounds",
    "load_pools",
    "load_templates",
    "mix_knowledge",
    "population_from_config",
    "train_tokenizer",
]
