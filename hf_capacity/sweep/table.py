"""The results table of a sweep: one row per run (its config, status and metrics), rebuilt from the run folders.

``rebuild_table`` reads ``sweep.json`` and ``runs/*/`` and writes ``results.csv`` (and ``results.parquet``);
``load_results`` reads a table or a sweep folder; ``require_finished_runs`` says, in one line, why a table has
nothing to fit or plot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .config import SWEEP_OWNED
from .folders import (
    DONE,
    ERROR_FILE,
    PLAN_FILE,
    RUN_FILE,
    RUNS_DIR,
    TABLE_CSV,
    TABLE_PARQUET,
    is_done,
    read_json,
    stale_message,
)


class NoFinishedRunError(ValueError):
    """A sweep table has no finished run (all failed, pending or running); the message says where to look."""


def flatten_config(config: Mapping[str, Any]) -> dict:
    """A resolved run config as table columns: nested mappings as ``biod.diversity``, lists comma-joined."""
    row = {}
    for key, value in config.items():
        if key in SWEEP_OWNED:
            continue
        if isinstance(value, Mapping):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, (list, tuple)):
            row[key] = ",".join(map(str, value))
        else:
            row[key] = value
    return row


_RESULT_KEYS = (
    "family", "n_evaluated", "p1", "p2", "p3", "bits", "bits_max", "bits_lower_bound", "bits_per_person",
    "fraction_learned", "bits_per_param", "bits_max_per_param", "num_params", "num_params_total",
    "num_params_non_embedding", "num_params_active_per_token", "bits_per_active_param", "name_bits",
    "value_bits", "diversity_bits", "model_type",
)


def run_row(folder: Path, planned: dict | None) -> dict:
    """One table row from a run folder (config, status, metrics); ``planned``: the plan's entry, if any."""
    run_file = read_json(folder / RUN_FILE) or {}
    planned = planned or {}
    config = read_json(folder / "training_config.json") or run_file.get("config") or planned.get("config") or {}
    row: dict[str, Any] = {"run_id": folder.name, "index": run_file.get("index", planned.get("index")),
                           "status": "pending", "error": None, "wall_time_s": None}
    row.update(flatten_config(config))
    if not folder.exists():
        return row
    done, error = read_json(folder / DONE), read_json(folder / ERROR_FILE)
    results = read_json(folder / "results.json")
    stale = stale_message(folder, planned["config"]) if planned.get("config") is not None else None
    if stale is not None:  # trained with other settings than the plan's (a default changed since)
        row.update(status="failed", error=stale)
        return row
    if is_done(folder) and results is not None:
        row["status"] = "done"
    elif error is not None:
        row.update(status="failed", error=error.get("error"), wall_time_s=error.get("wall_time_s"))
    else:
        row["status"] = "incomplete"  # crashed, or running right now in another shard
    if results is None or row["status"] != "done":
        return row
    done = done or {}
    row["wall_time_s"] = done.get("wall_time_s")
    for key in _RESULT_KEYS:
        row[key] = results.get(key)
    row["exposures_trained"] = results.get("exposures")
    if results.get("bits_ci95"):
        row["bits_ci95_low"], row["bits_ci95_high"] = results["bits_ci95"]
    for attribute, values in (results.get("per_attribute") or {}).items():
        row[f"accuracy_{attribute.replace(' ', '_')}"] = values.get("accuracy")
    for scheme, q in (results.get("quantized") or {}).items():
        row[f"bits_per_param_{scheme}"] = q.get("bits_per_param")
        row[f"bits_{scheme}"] = q.get("bits")
        row[f"quantized_ratio_{scheme}"] = q.get("ratio_to_full_precision")
    adapter = results.get("adapter") or {}
    if adapter:  # an adapter run: how it adapted, the base's P, and what its own population kept
        row["adapter_method"] = adapter.get("method")
        row["num_params_base"] = results.get("num_params_base")
    for key, value in (results.get("base_population") or {}).items():
        row[f"base_{key}"] = value
    state = read_json(folder / "trainer_state.json") or {}
    history = state.get("log_history") or []
    losses = [h["loss"] for h in history if "loss" in h]
    means = [h["train_loss"] for h in history if "train_loss" in h]
    row["train_loss_final"] = losses[-1] if losses else None
    row["train_loss_mean"] = means[-1] if means else None
    steps = state.get("global_step", done.get("steps"))
    row["steps"] = steps
    if steps is not None and done.get("tokens_per_step"):
        row["tokens"] = steps * done["tokens_per_step"]
    curve = _knowledge_curve(results, steps)
    if curve:
        row["knowledge_curve"] = json.dumps(curve)
    return row


def _knowledge_curve(results: dict, steps: int | None) -> list[list[float]]:
    """[[exposures, bits], ...] from a run's evaluations during training (results.json's history); exposures
    are proportional to steps (every step trains on the same number of tokens)."""
    exposures = results.get("exposures")
    if not steps or not exposures:
        return []
    return [[round(exposures * h["step"] / steps, 4), h["knowledge_bits"]]
            for h in results.get("history") or [] if "step" in h and h.get("knowledge_bits") is not None]


def _write_table(df: pd.DataFrame, sweep_dir: Path) -> list[Path]:
    written = []
    tmp = sweep_dir / f".{TABLE_CSV}.{os.getpid()}.tmp"  # unique per process: shards share the folder
    df.to_csv(tmp, index=False)
    os.replace(tmp, sweep_dir / TABLE_CSV)
    written.append(sweep_dir / TABLE_CSV)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    tmp = sweep_dir / f".{TABLE_PARQUET}.{os.getpid()}.tmp"
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, sweep_dir / TABLE_PARQUET)
        written.append(sweep_dir / TABLE_PARQUET)
    except (ValueError, TypeError, ImportError):  # a column pyarrow cannot type: the CSV is the reference
        tmp.unlink(missing_ok=True)
    return written


def run_folders(sweep_dir: str | os.PathLike) -> list[tuple[Path, dict | None]]:
    """A sweep folder's runs as (run folder, plan entry): planned runs in plan order (their folders may not exist
    yet), then the run folders under ``runs/`` that are not in the plan (entry None)."""
    sweep_dir = Path(sweep_dir)
    plan = (read_json(sweep_dir / PLAN_FILE) or {}).get("runs", [])
    planned = {entry["run_id"]: entry for entry in plan}
    runs_dir = sweep_dir / RUNS_DIR
    others = sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name not in planned) if runs_dir.is_dir() else []
    return [(runs_dir / run_id, entry) for run_id, entry in planned.items()] + [(p, None) for p in others]


def rebuild_table(sweep_dir: str | os.PathLike, *, write: bool = True) -> pd.DataFrame:
    """The results table of a sweep folder, rebuilt from ``sweep.json`` (the plan) and ``runs/*/``.

    One row per run: planned runs in plan order (status pending / incomplete / failed / done), then run folders
    that are not in the current plan (e.g. from an earlier version of the grid). With ``write``, saves
    ``results.csv`` (and ``results.parquet`` when pyarrow is importable) into the sweep folder.
    """
    sweep_dir = Path(sweep_dir)
    rows = [run_row(folder, entry) for folder, entry in run_folders(sweep_dir)]
    df = pd.DataFrame(rows)
    if write and (rows or sweep_dir.is_dir()):
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _write_table(df, sweep_dir)
    return df


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """A sweep's table from ``results.csv`` / ``results.parquet`` or a sweep folder (rebuilt from its runs)."""
    path = Path(path)
    if path.is_dir():
        if (path / RUNS_DIR).is_dir() or (path / PLAN_FILE).is_file():
            return rebuild_table(path, write=False)
        for name in (TABLE_CSV, TABLE_PARQUET):
            if (path / name).is_file():
                return load_results(path / name)
        raise FileNotFoundError(f"{path} is not a sweep folder (no runs/, {TABLE_CSV} or {PLAN_FILE})")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a results.csv or a sweep folder")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def require_finished_runs(df: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """``df`` itself when it holds a finished run (or has no status column: a table made elsewhere).

    Otherwise raises ``NoFinishedRunError`` in one line, e.g. "no finished run in sweeps/x; 3 failed, see
    sweeps/x/runs/<run_id>/error.json (ValueError: ...)", or, for a failed run without an error file (a stale run,
    trained with other settings), the table's reason itself: ``source`` is the table or sweep folder it came from.
    """
    if "status" not in df.columns or (df["status"] == "done").any():
        return df
    source = Path(source)
    if df.empty:
        raise NoFinishedRunError(f"no run in {source} yet: train it with `hf-capacity sweep <sweep.yaml>`")
    counts = ", ".join(f"{n} {status}" for status, n in df["status"].value_counts().items())
    failed = df[df["status"] == "failed"]
    if failed.empty:
        raise NoFinishedRunError(f"no finished run in {source}; {counts}: run the sweep (again) to train them")
    first = failed.iloc[0]
    error = first.get("error")
    error = error.strip().splitlines()[0] if isinstance(error, str) and error.strip() else ""
    folder = (source if source.is_dir() else source.parent) / RUNS_DIR / str(first["run_id"])
    others = len(failed) > 1
    if (folder / ERROR_FILE).is_file():  # the run raised: its error file has the traceback
        raise NoFinishedRunError(f"no finished run in {source}; {counts}, see {folder / ERROR_FILE}"
                                 + (f" ({error[:200]})" if error else "")
                                 + (" and the error column of the table" if others else ""))
    # a stale run (trained with other settings) or a killed one has no error file: the table's error says why
    reason = error or f"{folder} has no {ERROR_FILE}: run the sweep again to see why it fails"
    raise NoFinishedRunError(f"no finished run in {source}; {counts}: {reason}"
                             + (" (the others: the error column of the table)" if others else ""))
