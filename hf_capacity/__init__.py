"""hf-capacity: measure and grow the factual knowledge a language model stores per parameter.

The public API, by concept (each lives in one module):

- data: ``BioSPopulation``, ``BioDPopulation``, ``KnowledgeData`` (population + tokenizer + rendering)
- math: ``hf_capacity.bits`` (bit complexity, knowledge bits, R(F)); ``count_parameters`` (the paper's P)
- evaluation: ``evaluate_knowledge`` → ``KnowledgeReport``; ``PriorKnowledge`` (bits net of what a model knew before)
- training: ``add_capacity_callbacks`` and the callbacks in ``hf_capacity.callbacks``; ``train_capacity``
- adapters (peft): ``AdapterSettings`` and ``hf_capacity.adapters`` (LoRA/QLoRA/full fine-tuning from a base);
  ``ForgettingCallback`` (the base population's bits before and after)
- memorization (Morris et al. 2025): ``RandomSequences``, ``hf_capacity.memorization``, ``MemorizationCallback``
- the ``evaluate`` metric: ``load_metric()``; scaling laws: ``hf_capacity.scaling``
"""

from importlib import import_module

from . import logging_filters

__version__ = "0.1.0"

logging_filters.install()

_EXPORTS = {
    "BioSPopulation": "hf_capacity.data",
    "BioDPopulation": "hf_capacity.data",
    "KnowledgeData": "hf_capacity.data",
    "JunkConfig": "hf_capacity.data",
    "count_parameters": "hf_capacity.params",
    "ParameterCount": "hf_capacity.params",
    "evaluate_knowledge": "hf_capacity.evaluation",
    "KnowledgeReport": "hf_capacity.evaluation",
    "PriorKnowledge": "hf_capacity.evaluation",
    "add_capacity_callbacks": "hf_capacity.callbacks",
    "KnowledgeCapacityCallback": "hf_capacity.callbacks",
    "ExposureCallback": "hf_capacity.callbacks",
    "QuantizedCapacityCallback": "hf_capacity.callbacks",
    "CapacityReportCallback": "hf_capacity.callbacks",
    "DivergenceCallback": "hf_capacity.callbacks",
    "TrainingDivergedError": "hf_capacity.callbacks",
    "KnowledgeOnlyEvalSet": "hf_capacity.callbacks",
    "ForgettingCallback": "hf_capacity.callbacks",
    "MemorizationCallback": "hf_capacity.callbacks",
    "AdapterSettings": "hf_capacity.adapters",
    "RandomSequences": "hf_capacity.data.random_sequences",
    "mix_knowledge": "hf_capacity.data",
    "CapacityTrainingConfig": "hf_capacity.training",
    "train_capacity": "hf_capacity.training",
    "load_metric": "hf_capacity.metrics",
    "metric_inputs": "hf_capacity.metrics",
    "num_params_for_metric": "hf_capacity.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import public names on first use, so ``import hf_capacity`` stays light (no torch until needed)."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_capacity' has no attribute {name!r}")
