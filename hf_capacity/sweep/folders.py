"""The files of a sweep folder and of its run folders, and the atomic JSON reads and writes they go through.

    <output_dir>/sweep.json               the plan: every run's index, id, overrides and resolved config
    <output_dir>/results.csv, .parquet    the results table (``table.rebuild_table``)
    <output_dir>/runs/<run_id>/           one run: sweep_run.json, train_log.txt, the run's own outputs,
                                          then DONE (written last) or error.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..checkpoints import last_checkpoint
from ..training import CONFIG_FILE, CapacityTrainingConfig, run_differences

DONE = "DONE"
"""Marker written into a run folder after ``results.json``: its presence means the run is finished."""
ERROR_FILE = "error.json"
"""A failed run's exception (one line) and traceback."""
RUN_FILE = "sweep_run.json"
PLAN_FILE = "sweep.json"
TABLE_CSV = "results.csv"
TABLE_PARQUET = "results.parquet"
LOG_FILE = "train_log.txt"
RUNS_DIR = "runs"


def is_done(folder: Path) -> bool:
    """Whether a run folder holds a finished run (``results.json`` and the ``DONE`` marker)."""
    return (folder / "results.json").is_file() and (folder / DONE).is_file()


def stale_message(folder: Path, config: Mapping[str, Any]) -> str | None:
    """Why the finished (or checkpointed) run in ``folder`` is not the planned run ``config`` (a resolved config,
    every field but output_dir), in one line; None when it is, or when there is nothing to compare.

    A run id hashes only the fields that differ from the defaults, so a default changed since a run was recorded
    keeps its folder name; its ``training_config.json`` says what it ran (``training.run_differences``)."""
    if not (is_done(folder) or last_checkpoint(folder)):
        return None
    recorded = read_json(folder / CONFIG_FILE)
    try:
        planned = CapacityTrainingConfig(output_dir=str(folder),
                                         **{**config, "quantized": tuple(config.get("quantized") or ())})
    except (TypeError, ValueError):  # an invalid run: it fails on its own when it starts
        return None
    differences = run_differences(recorded, planned) if recorded is not None else []
    if not differences:
        return None
    shown = ", ".join(differences[:3]) + (f" and {len(differences) - 3} more" if len(differences) > 3 else "")
    return (f"stale: {folder} holds this run id trained with other settings ({shown}; see its {CONFIG_FILE}): "
            "delete that folder to train it with these settings, or give the sweep another name or output_dir")


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process: shards share the folder
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``, or None when it is missing or unreadable (a run still being written)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
