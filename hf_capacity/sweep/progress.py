"""How far the runs of a sweep folder, of one run folder or of a folder of runs (e.g. a memorization study's) have
got: what ``hf-capacity status`` prints.

For each run: its status (as in the results table: done, incomplete, failed, pending), the share of its steps
trained and the exposures that makes, the newest checkpoint, the latest knowledge measurement during training
(bits/param and the share of bits_max learned, from the newest checkpoint's ``trainer_state.json``), and how long
ago the run last wrote to its folder (a run still training writes its log at every logging step).

Where it reads what: a finished run's ``results.json``; an unfinished run's newest ``checkpoint-<step>``
(``trainer_state.json``: the step, the logged measurements) and, for a position or a measurement newer than that
checkpoint (or a run that saves none), what the Trainer printed into the sweep's ``train_log.txt``: the last
``epoch`` (a capacity run is one pass over its stream, so the epoch is the share of its steps trained) and the
last knowledge measurement. Plain reads, no model is loaded.
"""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoints import last_checkpoint
from ..training import CONFIG_FILE
from .folders import LOG_FILE, PLAN_FILE, RUN_FILE, RUNS_DIR, read_json
from .table import run_folders, run_row

_EPOCH = re.compile(r"'epoch': '?([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)'?")
_LOG_TAIL_BYTES = 65536

COLUMNS = ("run_id", "index", "status", "step", "max_steps", "trained", "exposures", "exposures_planned",
           "checkpoint", "measured_exposures", "measured_bits_per_param", "measured_fraction_learned",
           "bits_per_param", "fraction_learned", "last_write_s", "error")


def _last_logged_epoch(tail: str) -> float | None:
    """The last ``'epoch': x`` the Trainer printed in ``tail`` (of its log), or None."""
    found = _EPOCH.findall(tail)
    return float(found[-1]) if found else None


def _log_tail(log: Path) -> str:
    """The last 64 KB of ``log`` as text ("" when it cannot be read)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _last_logged_measurement(tail: str) -> dict | None:
    """The last knowledge measurement the Trainer printed (a ``{'knowledge_bits': ..., 'epoch': ...}`` line) as
    floats: bits_per_param, fraction_learned and epoch; None when the text holds none."""
    for line in reversed(tail.splitlines()):
        if line.startswith("{") and "'bits_per_param'" in line and "'epoch'" in line:
            try:
                logged = ast.literal_eval(line.strip())
                return {k: float(logged[k]) if k in logged else None
                        for k in ("bits_per_param", "fraction_learned", "epoch")}
            except (ValueError, SyntaxError, TypeError):
                continue
    return None


def _last_write(folder: Path) -> float | None:
    """The newest modification time (seconds since the epoch) of ``folder``'s files and first-level folders."""
    times = []
    for path in [folder, *folder.iterdir()]:
        try:
            times.append(path.stat().st_mtime)
        except OSError:  # removed meanwhile (a checkpoint rotated out)
            continue
    return max(times) if times else None


def _last_entry(history: list[dict], *keys: str) -> dict | None:
    """The last entry of a Trainer's ``log_history`` that holds any of ``keys`` (a measurement), or None."""
    return next((h for h in reversed(history) if any(k in h for k in keys)), None)


def _latest_measurement(history: list[dict]) -> dict | None:
    """The last knowledge measurement in a Trainer's ``log_history``, with the exposures logged at its step."""
    last = _last_entry(history, "knowledge_bits", "bits_per_param")
    if last is None:
        return None
    logged = [h["exposures"] for h in history if "exposures" in h and h.get("step", -1) <= last.get("step", -1)]
    return {"step": last.get("step"), "logged_exposures": logged[-1] if logged else None,
            "bits_per_param": last.get("bits_per_param"), "fraction_learned": last.get("fraction_learned")}


def run_progress(folder: str | os.PathLike, planned: dict | None = None, *, now: float | None = None) -> dict:
    """One run folder's progress (the ``COLUMNS``; None where unknown); ``planned``: its sweep plan entry, if any.

    ``trained`` is the share of the run's steps done (0-1): 1 for a finished run; for an unfinished one the newer
    of its newest checkpoint's step and the last epoch in its log (a run whose steps come from its exposures is one
    pass over its stream). ``exposures`` is then ``trained`` × the exposures the run plans; for a run given
    ``max_steps``, the exposures its checkpoint logged. ``last_write_s``: seconds since the folder last changed."""
    folder = Path(folder)
    row = run_row(folder, planned)
    config = read_json(folder / CONFIG_FILE) or (planned or {}).get("config") or {}
    applied = config.get("applied") or {}
    max_steps = applied.get("max_steps") or config.get("max_steps") or None
    one_pass = not config.get("max_steps")  # steps from the exposures: one pass over the stream, epoch = share
    planned_exposures = config.get("exposures") if one_pass else None
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update(run_id=row["run_id"], index=row.get("index"), status=row["status"], error=row.get("error"),
               max_steps=max_steps, exposures_planned=planned_exposures)
    if not folder.is_dir():
        return out
    out["last_write_s"] = None if (t := _last_write(folder)) is None else max(0.0, (now or time.time()) - t)
    results = read_json(folder / "results.json")
    # a sweep run is done once its DONE marker is written; an `hf-capacity train` folder once results.json is
    if results is not None and (row["status"] == "done" or not (folder / RUN_FILE).is_file()):
        out.update(status="done", step=row.get("steps") or max_steps, trained=1.0,
                   exposures=results.get("exposures") or planned_exposures,
                   bits_per_param=results.get("bits_per_param"), fraction_learned=results.get("fraction_learned"))
        return out
    checkpoint = last_checkpoint(folder)
    trained, step, history = None, None, []
    if checkpoint is not None:
        state = read_json(Path(checkpoint) / "trainer_state.json") or {}
        step, history = state.get("global_step"), state.get("log_history") or []
        max_steps = max_steps or state.get("max_steps") or None
        out.update(checkpoint=Path(checkpoint).name, max_steps=max_steps)
        if step is not None and max_steps:
            trained = step / max_steps
    tail = _log_tail(folder / LOG_FILE) if one_pass else ""
    epoch = _last_logged_epoch(tail)
    if epoch is not None and (trained is None or epoch > trained):
        trained = min(epoch, 1.0)
        step = round(trained * max_steps) if max_steps else step
    out.update(step=step, trained=trained)
    if trained is not None and planned_exposures:
        out["exposures"] = trained * planned_exposures
    elif logged := [h["exposures"] for h in history if "exposures" in h]:  # a run of max_steps: as logged
        out["exposures"] = logged[-1]
    measured = _latest_measurement(history)
    if measured is not None:  # its exposures as the run's knowledge curve gives them (results.json's history)
        exposures = measured["logged_exposures"]
        if measured["step"] is not None and max_steps and planned_exposures:
            exposures = measured["step"] / max_steps * planned_exposures
        out.update(measured_exposures=exposures, measured_bits_per_param=measured["bits_per_param"],
                   measured_fraction_learned=measured["fraction_learned"])
    printed = _last_logged_measurement(tail)  # newer than the checkpoint's, or a run that saves none
    if printed is not None and planned_exposures and printed["epoch"] is not None and (
            out["measured_exposures"] is None or printed["epoch"] * planned_exposures > out["measured_exposures"]):
        out.update(measured_exposures=printed["epoch"] * planned_exposures,
                   measured_bits_per_param=printed["bits_per_param"],
                   measured_fraction_learned=printed["fraction_learned"])
    return out


def memorization_progress(folder: str | os.PathLike, *, now: float | None = None) -> dict:
    """An ``hf-capacity memorize`` run folder's progress, in ``run_progress``'s columns: ``exposures`` are the
    epochs trained (each sequence is seen once an epoch), the knowledge columns the memorized bits/param and the
    share of the data's bits memorized."""
    from ..memorization import RESULT_NAME, RUN_CONFIG_NAME

    folder = Path(folder)
    config = read_json(folder / RUN_CONFIG_NAME) or {}
    max_steps, epochs = config.get("steps"), config.get("epochs")
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update(run_id=folder.name, status="incomplete", max_steps=max_steps, exposures_planned=epochs)
    if (t := _last_write(folder)) is not None:
        out["last_write_s"] = max(0.0, (now or time.time()) - t)

    def epochs_at(step: int | None) -> float | None:  # the epochs trained after ``step`` of ``max_steps``
        return step / max_steps * epochs if step is not None and max_steps and epochs else None

    result = read_json(folder / RESULT_NAME)
    if result is not None:
        steps = result.get("steps_trained") or max_steps
        out.update(status="done", step=steps, trained=1.0 if not max_steps else steps / max_steps,
                   exposures=epochs_at(steps) or epochs, bits_per_param=result.get("bits_per_param"),
                   fraction_learned=(result.get("memorized_bits") or 0.0) / result["data_bits"]
                   if result.get("data_bits") else None)
        return out
    checkpoint = last_checkpoint(folder)
    if checkpoint is None:
        return out
    state = read_json(Path(checkpoint) / "trainer_state.json") or {}
    step = state.get("global_step")
    out.update(checkpoint=Path(checkpoint).name, step=step, exposures=epochs_at(step),
               trained=step / max_steps if step is not None and max_steps else None)
    last = _last_entry(state.get("log_history") or [], "memorized_bits_per_param")
    if last is not None:
        out.update(measured_bits_per_param=last["memorized_bits_per_param"],
                   measured_fraction_learned=last.get("memorized_fraction"),
                   measured_exposures=epochs_at(last.get("step")))
    return out


def _is_memorization_run(folder: Path) -> bool:
    from ..memorization import RESULT_NAME, RUN_CONFIG_NAME

    return (folder / RUN_CONFIG_NAME).is_file() or (folder / RESULT_NAME).is_file()


def _is_run(folder: Path) -> bool:
    return ((folder / CONFIG_FILE).is_file() or (folder / "results.json").is_file()
            or bool(last_checkpoint(folder)))


def sweep_progress(path: str | os.PathLike, *, now: float | None = None) -> pd.DataFrame:
    """The progress of every run of a sweep folder (planned runs in plan order, then other run folders), or of
    the one run in a run folder (``hf-capacity train``'s output, or a sweep's ``runs/<run_id>``). Raises
    FileNotFoundError naming what was expected when ``path`` is neither."""
    path = Path(path)
    if (path / PLAN_FILE).is_file() or (path / RUNS_DIR).is_dir():
        rows = [run_progress(folder, entry, now=now) for folder, entry in run_folders(path)]
    elif path.is_dir() and _is_memorization_run(path):
        rows = [memorization_progress(path, now=now)]
    elif path.is_dir() and _is_run(path):
        rows = [run_progress(path, now=now)]
    elif path.is_dir() and (children := sorted(p for p in path.iterdir() if p.is_dir())) and (
            runs := [p for p in children if _is_memorization_run(p) or _is_run(p)]):  # a folder of runs
        rows = [memorization_progress(p, now=now) if _is_memorization_run(p) else run_progress(p, now=now)
                for p in runs]
    else:
        raise FileNotFoundError(f"{path} is neither a sweep folder ({PLAN_FILE} or {RUNS_DIR}/), a run folder "
                                f"({CONFIG_FILE}, results.json or a checkpoint-<step> folder; a memorization run's "
                                "memorization_run.json) nor a folder of run folders")
    return pd.DataFrame(rows, columns=list(COLUMNS))
