"""Sweeps of capacity training runs: a YAML grid → one folder per run → one results table, resumable.

A sweep file (see ``examples/sweeps/README.md``)::

    name: cpu_study
    output_dir: sweeps/cpu_study            # the sweep folder
    base:    {n_people: 200, head_dim: 16, exposures: 100}     # CapacityTrainingConfig fields
    grid:    {model: [gpt2-1-1, gpt2-2-2], seed: [0, 1]}       # Cartesian product (or a list of products)
    runs:    [{model: gpt2-4-4, n_people: 1000}]               # extra runs (union with the grid)
    rules:   [{when: {n_people: [500000, 1000000]}, set: {learning_rate: 5.0e-4}}]

By concept:

- ``config``: the file and its validation → ``Sweep`` → one ``SweepRun`` per resolved config, with a
  deterministic id (``run_slug`` plus ``config_hash``) and its folder ``runs/<run_id>/``;
- ``runner``: ``run_sweep`` trains the runs one after another (finished ones skipped, crashed ones restarted,
  failures recorded; ``--shard i/n`` splits them between processes), or checks them in a dry run;
- ``table``: ``rebuild_table`` / ``load_results``, one row per run (``results.csv``, ``results.parquet``);
- ``progress``: ``sweep_progress``, how far each run has got while it trains (``hf-capacity status``);
- ``analysis``: ``capacity_points``, ``fit_sweep`` and ``plot_sweep`` turn the table into fits and figures;
- ``folders``: the file names of a sweep folder and its run folders.
"""

from .analysis import (
    SweepFit,
    adapter_table,
    architecture_label,
    capacity_law_table,
    capacity_points,
    fit_sweep,
    plot_sweep,
    precision_table,
)
from .config import Sweep, SweepConfigError, SweepRun, config_hash, load_sweep, run_slug
from .progress import sweep_progress
from .runner import SweepRunFailed, parse_shard, run_sweep
from .table import NoFinishedRunError, load_results, rebuild_table, require_finished_runs

__all__ = [
    "SweepConfigError",
    "SweepRunFailed",
    "NoFinishedRunError",
    "Sweep",
    "SweepRun",
    "load_sweep",
    "parse_shard",
    "run_sweep",
    "rebuild_table",
    "load_results",
    "require_finished_runs",
    "sweep_progress",
    "architecture_label",
    "capacity_points",
    "fit_sweep",
    "plot_sweep",
    "precision_table",
    "capacity_law_table",
    "adapter_table",
    "SweepFit",
    "run_slug",
    "config_hash",
]
