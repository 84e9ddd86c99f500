"""Checks that a training run can start, without training it: the model name, the data settings, the model's own
config (built on the meta device: no weights, no memory) and the evaluation options.

``train_capacity`` finds the same problems, but only after it has built the data; ``hf-capacity sweep --dry-run``
calls these for every run, so a run that cannot start says why, in the user's words, before anything trains.
(``hf-capacity train`` does not: its settings are checked when its config is built, the rest by the run itself.)

``people_for_r_max`` sizes a run's population so that its model is capacity-limited (``--dry-run --r-max``).
"""

from __future__ import annotations

import dataclasses
import math

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


@dataclasses.dataclass(frozen=True)
class PopulationSize:
    """A population size and what a run on it counts: P (the paper's rule, on its own tokens), bits_max (bits, the
    whole population) and R_max = bits_max / P (bits/param)."""

    n_people: int
    num_params: int
    bits_max: float

    @property
    def r_max(self) -> float:
        return self.bits_max / self.num_params


def population_size(config: CapacityTrainingConfig) -> PopulationSize:
    """P, bits_max and R_max of ``config``'s run as it would record them (``planning_data``); ValueError for a run
    that could not start or whose P is only counted when it starts (a run from a base model)."""
    data = planning_data(config)
    num_params = check_run(config, data)
    if not num_params:
        raise ValueError("this run's P is counted when it starts (it loads a base model): size its population "
                         "from the base model's parameter count instead")
    return PopulationSize(config.n_people, num_params, run_parts(config).new_bits_max(data).total)


def people_for_r_max(config: CapacityTrainingConfig, r_max: float, *, max_rounds: int = 12,
                     known: PopulationSize | None = None) -> PopulationSize:
    """The number of people N at which ``config``'s run has R_max = bits_max / P ≥ ``r_max`` bits/param, within
    about 1% of the smallest such N (``config.n_people`` is the first guess).

    P grows with N (the tokenizer is trained on the people, and more people use more embedding rows), so N is
    found by rounds of N ← N · r_max / R_max(N), each counting P on the N people's own tokens (a second or more
    a round). A run storing 2 bits/param learns at most 2 / R_max of its data: R_max ≥ 2.5-3.5 keeps it
    capacity-limited. ValueError for r_max ≤ 0 or a run whose P is counted only when it starts. ``known``: the
    size already counted for some N (the dry run's, at ``config.n_people``), not counted again.
    """
    if not (isinstance(r_max, (int, float)) and math.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive number of bits/param, got {r_max!r}")
    seen: dict[int, PopulationSize] = {known.n_people: known} if known is not None else {}

    def size(n: int) -> PopulationSize:
        if n not in seen:
            seen[n] = population_size(dataclasses.replace(config, n_people=n))
        return seen[n]

    n = max(int(config.n_people), 1)
    for _ in range(max_rounds):
        current = size(n)
        target = max(math.ceil(n * r_max / current.r_max), 1)
        if current.r_max >= r_max and target >= n * 0.99:  # reached, and no smaller N by more than 1%
            return current
        n = target if target != n else n + 1
    reached = [s for s in seen.values() if s.r_max >= r_max]
    if reached:
        return min(reached, key=lambda s: s.n_people)
    raise ValueError(f"no population size reached R_max {r_max} in {max_rounds} rounds (last: N {n:,}, R_max "
                     f"{size(n).r_max:.3f}); P may grow as fast as the data here")
