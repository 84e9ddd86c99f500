"""Checks that a training run can start, without training it: the model name, the data settings, the model's own
config (built on the meta device: no weights, no memory) and the evaluation options.

``train_capacity`` finds the same problems, but only after it has built the data; ``hf-capacity sweep --dry-run``
calls these for every run, so a run that cannot start says why, in the user's words, before anything trains.
(``hf-capacity train`` does not: its settings are checked when its config is built, the rest by the run itself.)
"""

from __future__ import annotations

import dataclasses

from .adapters import run_parts
from .data import JunkConfig, KnowledgeData
from .training import CapacityTrainingConfig, build_data


def planning_data(config: CapacityTrainingConfig) -> KnowledgeData:
    """The run's own people, tokenizer and renderings, without its junk people: what the run's P, bits_max and
    biography lengths are measured on (junk adds neither to P nor to bits_max).

    All N people, not a sample: the tokenizer is trained on the population and P counts the embedding rows its
    biographies use, so a 1,000-person sample of a bioD(4,400) run counted 197,056 parameters where the run has
    222,464 (R_max 13% too high). Building them takes seconds (bioS(60,000): ~10 s on one CPU core)."""
    return build_data(dataclasses.replace(config, junk_fraction=0.0))


def check_run(config: CapacityTrainingConfig, data: KnowledgeData | None = None) -> int | None:
    """Raise ValueError if ``config`` could not start training; trains nothing. Returns the model's P (the paper's
    count, on ``data``'s tokens: the run's own with ``planning_data``), or None for a run from a base model.

    Checks what ``train_capacity`` checks before its first step: the model name, the data settings (on ``data``,
    by default ``planning_data(config)``), the junk options, the training stream, the model's config, eval_steps
    and the quantization schemes.
    """
    from .quantization import quantization_config

    if config.junk_fraction > 0:  # the model name was checked when the config was built
        JunkConfig(config.junk_fraction, config.junk_n_people)
    data = data if data is not None else planning_data(config)
    data.stream(config.exposures, config.context_length, block_diagonal=config.block_diagonal)
    num_params = run_parts(config).planned_params(data)  # the model on the meta device; None for an adapter run
    if config.eval_steps is not None and config.eval_steps < 1:
        raise ValueError(f"eval_steps must be >= 1 (or None: only at the end), got {config.eval_steps}")
    for scheme in config.quantized:
        quantization_config(scheme)
    return num_params
