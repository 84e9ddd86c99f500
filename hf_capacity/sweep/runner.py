"""Running a sweep: each planned run trains in its own folder, one after another; finished runs are skipped,
unfinished runs resume from their newest checkpoint (``save_steps``; restart when they have none), failures
recorded; ``--shard i/n`` splits the runs between processes. A finished or checkpointed folder whose recorded
``training_config.json`` differs from its run's resolved config (a default changed since: run ids hash only the
non-default fields) is neither skipped nor resumed: the run counts as failed ("stale: ...") and its folder is kept.

A run is finished when its folder holds ``results.json`` and the ``DONE`` marker (written last). On a machine with
several GPUs launch one ``hf-capacity sweep --shard i/n`` per GPU: the shards share the sweep folder. The dry run
checks every run as the real run would before training (``preflight.check_run``) and estimates its steps.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import time
import traceback
from typing import Any, Callable, Mapping

import pandas as pd

from ..adapters import run_parts
from ..checkpoints import last_checkpoint
from ..preflight import PopulationSize, check_run, people_for_r_max, planning_data
from ..steps import tokens_per_step
from ..training import CONFIG_FILE, steps_for_exposures, train_capacity
from .config import Sweep, SweepRun, load_sweep, plural
from .folders import DONE, ERROR_FILE, LOG_FILE, PLAN_FILE, RUN_FILE, TABLE_CSV, read_json, stale_message, write_json
from .table import flatten_config, rebuild_table


class SweepRunFailed(RuntimeError):
    """A run failed and the sweep was stopped (``fail_fast``); the run's exception is the ``__cause__``."""


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` → (i, n) with 0 <= i < n; None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i, n = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    else:
        i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard i/n needs 0 <= i < n, got {i}/{n}")
    return i, n




def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _execute(run: SweepRun, sweep_name: str) -> dict:
    """Train one run into its folder (fresh, or resuming from its newest checkpoint; the log is appended then);
    returns {"status", "error", "wall_time_s", "bits_per_param"} (wall time of this attempt)."""
    folder = run.output_dir
    resuming = folder.is_dir()  # the caller keeps a folder only when it holds a checkpoint to resume from
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RUN_FILE, {"sweep": sweep_name, "index": run.index, "run_id": run.run_id,
                                    "overrides": run.overrides, "config": run.config})
    start = time.time()
    trainer = None
    try:
        config = run.training_config()
        with open(folder / LOG_FILE, "a" if resuming else "w", buffering=1) as log, contextlib.redirect_stdout(log):
            report, trainer = train_capacity(config)
        if not (folder / "results.json").is_file():
            raise RuntimeError(f"train_capacity finished without writing {folder / 'results.json'}")
        trainer.state.save_to_json(str(folder / "trainer_state.json"))
        wall = time.time() - start
        write_json(folder / DONE, {"wall_time_s": wall, "steps": trainer.state.global_step,
                                    "tokens_per_step": tokens_per_step(trainer.args, config.context_length),
                                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return {"status": "done", "error": None, "wall_time_s": wall, "bits_per_param": report.bits_per_param}
    except Exception as err:  # noqa: BLE001 - one run's crash is recorded, the sweep goes on
        wall = time.time() - start
        message = f"{type(err).__name__}: {err}"
        write_json(folder / ERROR_FILE, {"error": message, "traceback": traceback.format_exc(), "wall_time_s": wall})
        err = err.with_traceback(None)  # drop the frames (and the model they hold) before freeing memory
        return {"status": "failed", "error": message, "wall_time_s": wall, "bits_per_param": None, "exception": err}
    finally:
        del trainer
        _release_memory()


# -------------------------------------------------------------------------------------------------- dry run
def _data_key(config) -> str:
    """Runs with the same key share ``planning_data``: every setting that changes its population, tokenizer or
    renderings (the run's ``DATA_FIELDS``; ``planning_data`` drops junk)."""
    key = {name: getattr(config, name) for name in run_parts(config).DATA_FIELDS}
    key.update(biod=config.biod if config.dataset == "bioD" else None, n_people=config.n_people)
    return json.dumps(key, sort_keys=True, default=str)


def _estimate_steps(config, data) -> int:
    """Training steps of a run: ``max_steps`` or ceil(E·N·tokens per biography / (1 − junk) / tokens per step),
    the tokens per step of the run's ``TrainingArguments`` on this machine (``training.steps_for_exposures``).

    Tokens per biography are measured on ``data``, the run's ``planning_data``.
    """
    if config.max_steps:
        return int(config.max_steps)
    windows = math.ceil(config.exposures * config.n_people * data.renderer.mean_tokens_per_biography()
                        / config.context_length / (1.0 - config.junk_fraction))
    return steps_for_exposures(config, data, windows=windows)


def _bits_max(config, data) -> float:
    """bits_max of the run's population (``data``: its ``planning_data``), the part new to its model
    (``RunParts.new_bits_max``: for an adapter run from an hf-capacity bioD run, without the diversity sets it
    shares with its base, as the run reports)."""
    return run_parts(config).new_bits_max(data).total


def _check(run: SweepRun, cache: dict) -> tuple[dict, str | None]:
    """({"estimated_steps", "num_params", "bits_max", "R_max"}, None) for a run that can start (P is None for a run
    from a base model), or ({}, why not): what the real run would reject."""
    try:
        config = run.training_config()
        key = _data_key(config)
        if key not in cache:
            cache[key] = planning_data(config)
        num_params = check_run(config, cache[key])
        bits_max = _bits_max(config, cache[key])
        return {"estimated_steps": _estimate_steps(config, cache[key]), "num_params": num_params,
                "bits_max": bits_max, "R_max": bits_max / num_params if num_params else None}, None
    except ValueError as err:
        return {}, str(err)



def _format_status(result: dict) -> str:
    if result["status"] == "failed":
        return f"failed: {result['error']}"
    r = result.get("bits_per_param")
    text = result["status"]
    if r is not None and not (isinstance(r, float) and math.isnan(r)):
        text += f"  {r:.4f} bits/param"
    if result.get("wall_time_s"):
        text += f"  ({result['wall_time_s']:.0f} s)"
    return text


def _sized(run: SweepRun, r_max: float, checked: dict) -> tuple[dict, str]:
    """The columns and the log text of ``people_for_r_max`` for a valid run (``checked``: its ``_check`` figures,
    the first round's size)."""
    config = run.training_config()
    known = PopulationSize(config.n_people, checked["num_params"], checked["bits_max"])
    try:
        size = people_for_r_max(config, r_max, known=known)
    except ValueError as err:
        return {}, f"; no N for R_max {r_max:g}: {err}"
    return ({"n_people_for_r_max": size.n_people, "num_params_for_r_max": size.num_params},
            f"; R_max {size.r_max:.3f} at N = {size.n_people:,} (P = {size.num_params:,})")


def _dry_run(sweep: Sweep, selected: list[SweepRun], log: Callable[[str], None],
             r_max: float | None = None) -> pd.DataFrame:
    cache: dict = {}
    rows = []
    for k, run in enumerate(selected, 1):
        row = {"index": run.index, "run_id": run.run_id, "status": "would run", "estimated_steps": None,
               "num_params": None, "bits_max": None, "R_max": None, "error": None, **flatten_config(run.config)}
        if r_max is not None:
            row.update(n_people_for_r_max=None, num_params_for_r_max=None)
        checked, error = _check(run, cache)
        steps = checked.get("estimated_steps")
        stale = stale_message(run.output_dir, run.config)
        if stale is not None:  # the real run leaves it as it is and counts it as failed
            row.update(status="stale", error=stale)
        elif run.done:  # skipped by the real run, so never rejected by it
            row["status"] = "done (skip)"
        elif error is not None:
            row.update(status="invalid", error=error)
        elif run.output_dir.exists():
            checkpoint = last_checkpoint(run.output_dir)
            row["status"] = (f"incomplete (resume from {os.path.basename(checkpoint)})" if checkpoint
                             else "incomplete (restart)")
        row.update(checked)
        size = ""
        if checked:
            p = checked["num_params"]
            size = (f", P = {p:,}, R_max = {checked['R_max']:.3f} bits/param" if p else
                    f", P counted when it starts (a base model), bits_max = {checked['bits_max']:,.0f}")
            if r_max is not None and p:
                columns, text = _sized(run, r_max, checked)
                row.update(columns)
                size += text
        log(f"[{k}/{len(selected)}] {run.run_id}  {row['status']}"
            + (f": {row['error']}" if row["status"] in ("invalid", "stale")
               else f"  ~{steps:,} steps{size}" if steps is not None else ""))
        rows.append(row)
    df = pd.DataFrame(rows)
    todo = df[df["status"].isin(["would run"]) | df["status"].str.startswith("incomplete")]
    total = int(todo["estimated_steps"].fillna(0).sum()) if len(todo) else 0
    invalid = int((df["status"] == "invalid").sum()) if len(df) else 0
    log(f"dry run: {plural(len(selected), 'run')} in {sweep.output_dir} ({len(todo)} to train, ~{total:,} steps in all"
        + (f"; {invalid} invalid" if invalid else "") + "); nothing was trained")
    return df


def run_sweep(
    config: str | os.PathLike | Mapping[str, Any] | Sweep,
    *,
    dry_run: bool = False,
    fail_fast: bool = False,
    max_runs: int | None = None,
    shard: str | tuple[int, int] | None = None,
    log: Callable[[str], None] | None = None,
    r_max: float | None = None,
) -> pd.DataFrame:
    """Run (or resume) a sweep and return its results table (also written to ``<output_dir>/results.csv``).

    ``dry_run``: list the runs with their estimated steps and status, train nothing, write nothing (returns the
    listing; a run the real run would reject before training has status "invalid" and the reason in ``error``).
    ``fail_fast``: stop at the first failed run (raises ``SweepRunFailed`` after writing the table); otherwise
    failed runs are recorded (status "failed", ``error``) and the sweep goes on. ``max_runs``: train at
    most this many runs in this call (finished runs, which are skipped, do not count). ``shard="i/n"``: only the
    runs whose index % n == i (one process per GPU; they share the sweep folder). ``log``: progress lines
    (default ``print``). ``r_max`` (dry run only): also the people N at which each run's R_max = bits_max / P
    reaches it (``preflight.people_for_r_max``; columns ``n_people_for_r_max``, ``num_params_for_r_max``), to size a
    capacity-limited run.
    """
    log = log or (lambda line: print(line, flush=True))
    sweep = config if isinstance(config, Sweep) else load_sweep(config)
    if max_runs is not None and max_runs < 0:
        raise ValueError(f"max_runs must be >= 0, got {max_runs}")
    if r_max is not None and not dry_run:
        raise ValueError("r_max sizes the runs of a dry run: add dry_run=True (--dry-run)")
    if r_max is not None and not (isinstance(r_max, (int, float)) and math.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive number of bits/param, got {r_max!r}")
    shard_ = parse_shard(shard)
    plan = sweep.plan()
    selected = [r for r in plan if shard_ is None or r.index % shard_[1] == shard_[0]]
    where = f" (shard {shard_[0]}/{shard_[1]}: {len(selected)} of {len(plan)})" if shard_ else ""
    if dry_run:
        log(f"sweep {sweep.name!r}: {plural(len(plan), 'run')}{where}")
        return _dry_run(sweep, selected, log, r_max)

    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN_FILE, {**sweep.to_dict(), "runs": [
        {"index": r.index, "run_id": r.run_id, "overrides": r.overrides, "config": r.config} for r in plan]})
    log(f"sweep {sweep.name!r}: {plural(len(plan), 'run')} in {out}{where}")
    trained = 0
    failure: tuple[SweepRun, Exception] | None = None
    for k, run in enumerate(selected, 1):
        prefix = f"[{k}/{len(selected)}] {run.run_id}"
        stale = stale_message(run.output_dir, run.config)
        if stale is not None:  # neither done nor resumed: the table counts it as failed
            log(f"{prefix}  failed: {stale}")
            if fail_fast:
                rebuild_table(out)
                raise SweepRunFailed(f"run {run.run_id} failed ({stale}); stopped (fail_fast)")
            continue
        if run.done:
            r = (read_json(run.output_dir / "results.json") or {}).get("bits_per_param")
            log(f"{prefix}  skipped (done)" + (f"  {r:.4f} bits/param" if isinstance(r, (int, float)) else ""))
            continue
        if max_runs is not None and trained >= max_runs:
            log(f"stopping: trained {plural(trained, 'run')} (--max-runs {max_runs}); run the sweep again to continue")
            break
        resumable = run.output_dir.exists() and last_checkpoint(run.output_dir) is not None
        if run.output_dir.exists() and not resumable:  # a crashed (or failed) attempt with no checkpoint
            shutil.rmtree(run.output_dir)
        if resumable:
            log(f"{prefix}  resuming from {os.path.basename(last_checkpoint(run.output_dir))}")
            (run.output_dir / ERROR_FILE).unlink(missing_ok=True)
            (run.output_dir / "results.json").unlink(missing_ok=True)  # killed before DONE: measured again
            if not (run.output_dir / CONFIG_FILE).is_file():  # a folder from before runs recorded it at the start
                write_json(run.output_dir / CONFIG_FILE, run.training_config().to_dict())
        trained += 1
        result = _execute(run, sweep.name)
        log(f"{prefix}  {_format_status(result)}")
        rebuild_table(out)
        if result["status"] == "failed" and fail_fast:
            failure = (run, result["exception"])
            break
    table = rebuild_table(out)
    if failure is not None:
        run, err = failure
        raise SweepRunFailed(f"run {run.run_id} failed ({type(err).__name__}: {err}); stopped (fail_fast). "
                             f"Traceback: {run.output_dir / ERROR_FILE}") from err
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    log(f"sweep {sweep.name!r}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; table: {out / TABLE_CSV}")
    return table


