"""Sweeps of capacity training runs: a YAML grid → one folder per run → one results table, resumable.

A sweep file (see ``examples/sweeps/README.md``)::

    name: cpu_study
    output_dir: sweeps/cpu_study            # the sweep folder
    base:    {n_people: 200, head_dim: 16, exposures: 100}     # CapacityTrainingConfig fields
    grid:    {model: [gpt2-1-1, gpt2-2-2], seed: [0, 1]}       # Cartesian product (or a list of products)
    runs:    [{model: gpt2-4-4, n_people: 1000}]               # extra runs (union with the grid)
    rules:   [{when: {n_people: [500000, 1000000]}, set: {learning_rate: 5.0e-4}}]

Every run is resolved to a full ``CapacityTrainingConfig`` (defaults < base < matching rules < the grid point or
run entry), gets a deterministic id (a readable slug plus a hash of its resolved config) and its own folder
``runs/<run_id>/``. A run is finished when its folder holds ``results.json`` and the ``DONE`` marker (written last);
finished runs are skipped, unfinished folders are deleted and the run restarts. Runs execute one after another in
this process (``train_capacity``); on a machine with several GPUs launch one ``hf-capacity sweep --shard i/n`` per
GPU. The table ``results.csv`` (and ``results.parquet``) is rebuilt from the run folders (``rebuild_table``), one
row per run; ``capacity_points``, ``fit_sweep`` and ``plot_sweep`` turn it into capacity-law fits and figures.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import gc
import hashlib
import itertools
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .training import MODEL_NAME, CapacityTrainingConfig, train_capacity

__all__ = [
    "SweepConfigError",
    "SweepRunFailed",
    "Sweep",
    "SweepRun",
    "load_sweep",
    "parse_shard",
    "run_sweep",
    "rebuild_table",
    "load_results",
    "architecture_label",
    "capacity_points",
    "fit_sweep",
    "plot_sweep",
    "SweepFit",
    "run_slug",
    "config_hash",
]

DONE = "DONE"
"""Marker written into a run folder after ``results.json``: its presence means the run is finished."""
ERROR_FILE = "error.json"
RUN_FILE = "sweep_run.json"
PLAN_FILE = "sweep.json"
TABLE_CSV = "results.csv"
TABLE_PARQUET = "results.parquet"
LOG_FILE = "train_log.txt"

TOP_LEVEL_KEYS = ("name", "description", "output_dir", "base", "grid", "runs", "rules")
NESTED_FIELDS = ("biod", "memory")
SWEEP_OWNED = ("output_dir",)
"""Fields the sweep sets itself (each run's folder)."""
NOT_IN_RUN_ID = ("output_dir", "progress", "logging_steps", "report_to", "push_to_hub", "hub_model_id")
"""Fields that do not change what a run learns, so they do not change its id (toggle them without retraining)."""
BIOD_KEYS = ("n_attributes", "chunks_per_value", "diversity", "chunk_length", "alphabet")
BIOD_LETTERS = dict(zip(BIOD_KEYS, "KCDLT"))
DEFAULT_MLP = {"gpt2": "standard", "llama": "gated", "memory-llama": "gated"}
FULL_PRECISION = "fp32"


class SweepConfigError(ValueError):
    """The sweep file is malformed (unknown field, wrong type, ...); the message says where and what to do."""


class SweepRunFailed(RuntimeError):
    """A run failed and the sweep was stopped (``fail_fast``); the run's exception is the ``__cause__``."""


# ------------------------------------------------------------------------------------------------- config fields
def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(CapacityTrainingConfig)}


def _defaults() -> dict:
    """The resolved defaults of every ``CapacityTrainingConfig`` field (JSON types), without output_dir."""
    d = CapacityTrainingConfig().to_dict()
    for name in SWEEP_OWNED:
        d.pop(name)
    return d


def _unknown(names: Iterable[str], valid: Sequence[str], where: str) -> SweepConfigError:
    names = sorted(names)
    hints = []
    for n in names:
        close = difflib.get_close_matches(n, valid, n=1)
        if close:
            hints.append(f"{n!r} → did you mean {close[0]!r}?")
    hint = (" (" + "; ".join(hints) + ")") if hints else ""
    return SweepConfigError(
        f"{where}: unknown field(s) {', '.join(map(repr, names))}{hint}. Valid fields: {', '.join(valid)}"
    )


def _coerce(name: str, value: Any, type_text: str, where: str) -> Any:
    """``value`` as the field's type (YAML reads ``1e-3`` as a string, ``1.0e+6`` as a float): clear errors."""
    label = f"{where}.{name}"
    optional = "None" in type_text
    if value is None:
        if optional or type_text.startswith(("tuple", "list")):
            return value if optional else []
        raise SweepConfigError(f"{label}: null is not allowed (expected {type_text})")
    base = type_text.split("|")[0].strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise SweepConfigError(f"{label}: expected true or false, got {value!r}")
        return value
    if base in ("int", "float"):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise SweepConfigError(f"{label}: expected a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise SweepConfigError(f"{label}: expected a number, got {value!r}")
        if base == "float":
            return float(number)
        if float(number) != int(number):
            raise SweepConfigError(f"{label}: expected an integer, got {value!r}")
        return int(number)
    if base == "str":
        if not isinstance(value, str):
            raise SweepConfigError(f"{label}: expected a string, got {value!r}")
        return value
    if base.startswith(("tuple", "list")):
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)):
            raise SweepConfigError(f"{label}: expected a list, got {value!r}")
        return list(value)
    if base == "dict":
        if not isinstance(value, Mapping):
            raise SweepConfigError(f"{label}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _check_overrides(mapping: Any, where: str) -> dict:
    """Validate one mapping of field → value (``biod.diversity`` style keys allowed); returns it coerced."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise SweepConfigError(f"{where} must be a mapping of CapacityTrainingConfig fields, got {mapping!r}")
    types = _field_types()
    valid = [n for n in types if n not in SWEEP_OWNED]
    unknown = []
    out = {}
    for key, value in mapping.items():
        key = str(key)
        if key in SWEEP_OWNED:
            raise SweepConfigError(
                f"{where}.{key}: the sweep sets each run's output_dir (runs/<run_id>/); set the sweep folder with "
                "the top-level `output_dir:` instead"
            )
        top, _, sub = key.partition(".")
        if top not in types:
            unknown.append(key)
            continue
        if sub:
            if top not in NESTED_FIELDS:
                raise SweepConfigError(f"{where}.{key}: only {', '.join(NESTED_FIELDS)} take dotted sub-keys")
            if top == "biod":
                if sub not in BIOD_KEYS:
                    raise _unknown([sub], BIOD_KEYS, f"{where}.biod")
                value = _coerce(key, value, "int", where)
            out[key] = value
            continue
        value = _coerce(key, value, types[key], where)
        if top == "biod":
            bad = set(value) - set(BIOD_KEYS)
            if bad:
                raise _unknown(bad, BIOD_KEYS, f"{where}.biod")
            value = {k: _coerce(f"biod.{k}", v, "int", where) for k, v in value.items()}
        out[key] = value
    if unknown:
        raise _unknown(unknown, valid, where)
    return out


def _apply(config: dict, overrides: Mapping[str, Any]) -> None:
    """Set ``overrides`` on a resolved config dict; nested mappings merge into the current value."""
    for key, value in overrides.items():
        top, _, sub = key.partition(".")
        if sub:
            config[top] = {**config[top], sub: value}
        elif top in NESTED_FIELDS:
            config[top] = {**config[top], **value}
        else:
            config[top] = copy.deepcopy(value)


def _matches(when: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    for key, wanted in when.items():
        top, _, sub = key.partition(".")
        value = config[top][sub] if sub else config[top]
        options = wanted if isinstance(wanted, list) else [wanted]
        if value not in options:
            return False
    return True


# --------------------------------------------------------------------------------------------------- run ids
def _short_number(n: int) -> str:
    """10000 → 10K, 1000000 → 1M; numbers below 10,000 (or not round) stay as they are."""
    for div, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1000, "K")):
        if n >= 10_000 and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def run_slug(config: Mapping[str, Any]) -> str:
    """A readable name from the run's own config: ``gpt2-2-2_N1000_E100_seed0``, plus a non-default MLP or MoE,
    the bioD shape, a head dim other than 64, junk and the domain token. It never depends on the other runs, so
    a finished run keeps its id (and folder) when the grid grows; the hash in the run id tells the rest apart."""
    model = config["model"]
    match = MODEL_NAME.match(model)
    family = match.group(1) if match else None
    if config.get("mlp_type") and config["mlp_type"] != DEFAULT_MLP.get(family):
        model += f"-{config['mlp_type']}"
    if config.get("num_experts"):
        model += f"-moe{config['num_experts']}"
    data = ""
    if config["dataset"] == "bioD":
        data = "bioD-" + "".join(f"{BIOD_LETTERS[k]}{config['biod'][k]}" for k in BIOD_KEYS if k in config["biod"]) + "_"
    elif config["dataset"] != "bioS":
        data = config["dataset"] + "_"
    parts = [model, f"{data}N{_short_number(int(config['n_people']))}", f"E{config['exposures']}", f"seed{config['seed']}"]
    if config.get("head_dim", 64) != 64:
        parts.append(f"hd{config['head_dim']}")
    if config.get("junk_fraction"):
        parts.append(f"junk{config['junk_fraction']:g}")
    if config.get("domain_token"):
        parts.append("dom")
    return "".join(ch if ch.isalnum() or ch in "._+-" else "-" for ch in "_".join(parts))[:100]


def config_hash(config: Mapping[str, Any]) -> str:
    """8 hex digits of the SHA-1 of the fields that differ from ``CapacityTrainingConfig``'s defaults.

    Fields in ``NOT_IN_RUN_ID`` are left out. Hashing only the non-default fields keeps ids (and finished runs)
    stable when the config class gains new fields; each folder's ``training_config.json`` has the full config.
    """
    defaults = _defaults()
    missing = object()
    identity = {k: v for k, v in config.items() if k not in NOT_IN_RUN_ID and v != defaults.get(k, missing)}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------------- the plan
@dataclass
class SweepRun:
    """One run of a sweep: its resolved config (every field but output_dir), id and folder."""

    index: int
    run_id: str
    config: dict
    overrides: dict
    output_dir: Path

    def training_config(self) -> CapacityTrainingConfig:
        """The ``CapacityTrainingConfig`` (raises ValueError for an invalid one, e.g. an unknown model name)."""
        values = dict(self.config)
        values["quantized"] = tuple(values.get("quantized") or ())
        return CapacityTrainingConfig(output_dir=str(self.output_dir), **values)

    @property
    def done(self) -> bool:
        return _is_done(self.output_dir)


@dataclass
class Sweep:
    """A validated sweep file: the sweep folder, base config, grid blocks, explicit runs and rules."""

    name: str
    output_dir: Path
    base: dict = field(default_factory=dict)
    grid: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)
    description: str = ""

    def points(self) -> list[dict]:
        """The override mappings of every run, in order: each grid block's product, then ``runs``."""
        points: list[dict] = []
        for block in self.grid:
            keys = list(block)
            for values in itertools.product(*(block[k] for k in keys)):
                points.append(dict(zip(keys, values)))
        points += [dict(r) for r in self.runs]
        return points or [{}]

    def resolve(self, point: Mapping[str, Any]) -> dict:
        """defaults < base < matching rules (fields the point does not set) < the point."""
        config = _defaults()
        _apply(config, self.base)
        _apply(config, point)
        for rule in self.rules:
            if _matches(rule["when"], config):
                _apply(config, {k: v for k, v in rule["set"].items() if k not in point})
        return config

    def plan(self) -> list[SweepRun]:
        """Every distinct run (duplicates of an earlier run's resolved config are dropped), indexed from 0."""
        runs: list[SweepRun] = []
        seen: set[str] = set()
        for point in self.points():
            config = self.resolve(point)
            run_id = f"{run_slug(config)}_{config_hash(config)}"
            if run_id in seen:
                continue
            seen.add(run_id)
            runs.append(SweepRun(len(runs), run_id, config, point, self.output_dir / "runs" / run_id))
        return runs

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "output_dir": str(self.output_dir),
                "base": self.base, "grid": self.grid, "runs": self.runs, "rules": self.rules}


def load_sweep(source: str | os.PathLike | Mapping[str, Any]) -> Sweep:
    """Read and validate a sweep (a YAML path or an already-loaded mapping). Raises ``SweepConfigError``."""
    name = "sweep"
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        import yaml

        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise SweepConfigError(f"{path} is not valid YAML: {err}") from None
        name = path.stem
        if not isinstance(raw, Mapping):
            raise SweepConfigError(f"{path}: expected a mapping with base:, grid: and/or runs:, got {type(raw).__name__}")
    unknown = set(map(str, raw)) - set(TOP_LEVEL_KEYS)
    if unknown:
        fields_here = unknown & set(_field_types())
        hint = f" (training fields go under base:, e.g. base: {{{sorted(fields_here)[0]}: ...}})" if fields_here else ""
        raise SweepConfigError(
            f"unknown top-level key(s) {', '.join(map(repr, sorted(unknown)))}{hint}; valid: {', '.join(TOP_LEVEL_KEYS)}"
        )
    name = str(raw.get("name") or name)
    output_dir = Path(str(raw.get("output_dir") or Path("sweeps") / name))
    base = _check_overrides(raw.get("base"), "base")

    grid_raw = raw.get("grid") or []
    blocks = [grid_raw] if isinstance(grid_raw, Mapping) else grid_raw
    if not isinstance(blocks, list):
        raise SweepConfigError("grid must be a mapping field → list of values, or a list of such mappings")
    grid = []
    for b, block in enumerate(blocks):
        where = "grid" if isinstance(grid_raw, Mapping) else f"grid[{b}]"
        if not isinstance(block, Mapping):
            raise SweepConfigError(f"{where} must be a mapping field → list of values, got {block!r}")
        for key, values in block.items():
            if not isinstance(values, list) or not values:
                raise SweepConfigError(
                    f"{where}.{key} must be a non-empty list of values (got {values!r}); put a fixed value under base:"
                )
        _check_overrides({k: v[0] for k, v in block.items()}, where)  # names every unknown field at once
        grid.append({str(k): [_check_overrides({k: v}, where)[str(k)] for v in values] for k, values in block.items()})

    runs_raw = raw.get("runs") or []
    if not isinstance(runs_raw, list):
        raise SweepConfigError("runs must be a list of mappings (each: fields that override base)")
    runs = [_check_overrides(r, f"runs[{i}]") for i, r in enumerate(runs_raw)]

    rules_raw = raw.get("rules") or []
    if not isinstance(rules_raw, list):
        raise SweepConfigError("rules must be a list of {when: {field: value or [values]}, set: {field: value}}")
    rules = []
    for i, rule in enumerate(rules_raw):
        if not isinstance(rule, Mapping) or set(rule) != {"when", "set"}:
            raise SweepConfigError(f"rules[{i}] must have exactly the keys when: and set:, got {rule!r}")
        when = rule["when"]
        if not isinstance(when, Mapping):
            raise SweepConfigError(f"rules[{i}].when must be a mapping field → value or list of values")
        _check_overrides({k: (v[0] if isinstance(v, list) and v else v) for k, v in when.items()}, f"rules[{i}].when")
        when = {str(k): ([_check_overrides({k: x}, f"rules[{i}].when")[str(k)] for x in v] if isinstance(v, list)
                         else _check_overrides({k: v}, f"rules[{i}].when")[str(k)]) for k, v in when.items()}
        rules.append({"when": when, "set": _check_overrides(rule["set"], f"rules[{i}].set")})
    return Sweep(name=name, output_dir=output_dir, base=base, grid=grid, runs=runs, rules=rules,
                 description=str(raw.get("description") or ""))


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


# ------------------------------------------------------------------------------------------------ run folders
def _is_done(folder: Path) -> bool:
    return (folder / "results.json").is_file() and (folder / DONE).is_file()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process: shards share the folder
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _execute(run: SweepRun, sweep_name: str) -> dict:
    """Train one run into its (fresh) folder; returns {"status", "error", "wall_time_s", "bits_per_param"}."""
    folder = run.output_dir
    folder.mkdir(parents=True)
    _write_json(folder / RUN_FILE, {"sweep": sweep_name, "index": run.index, "run_id": run.run_id,
                                    "overrides": run.overrides, "config": run.config})
    start = time.time()
    trainer = None
    try:
        config = run.training_config()
        with open(folder / LOG_FILE, "w", buffering=1) as log, contextlib.redirect_stdout(log):
            report, trainer = train_capacity(config)
        if not (folder / "results.json").is_file():
            raise RuntimeError(f"train_capacity finished without writing {folder / 'results.json'}")
        trainer.state.save_to_json(str(folder / "trainer_state.json"))
        args = trainer.args
        tokens_per_step = (args.train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
                           * config.context_length)
        wall = time.time() - start
        _write_json(folder / DONE, {"wall_time_s": wall, "steps": trainer.state.global_step,
                                    "tokens_per_step": tokens_per_step, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return {"status": "done", "error": None, "wall_time_s": wall, "bits_per_param": report.bits_per_param}
    except Exception as err:  # noqa: BLE001 - one run's crash is recorded, the sweep goes on
        wall = time.time() - start
        message = f"{type(err).__name__}: {err}"
        _write_json(folder / ERROR_FILE, {"error": message, "traceback": traceback.format_exc(), "wall_time_s": wall})
        err = err.with_traceback(None)  # drop the frames (and the model they hold) before freeing memory
        return {"status": "failed", "error": message, "wall_time_s": wall, "bits_per_param": None, "exception": err}
    finally:
        del trainer
        _release_memory()


# ----------------------------------------------------------------------------------------------- the table
def _flatten_config(config: Mapping[str, Any]) -> dict:
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


def _run_row(folder: Path, planned: dict | None) -> dict:
    """One table row from a run folder (config, status, metrics); ``planned``: the plan's entry, if any."""
    run_file = _read_json(folder / RUN_FILE) or {}
    planned = planned or {}
    config = _read_json(folder / "training_config.json") or run_file.get("config") or planned.get("config") or {}
    row: dict[str, Any] = {"run_id": folder.name, "index": run_file.get("index", planned.get("index")),
                           "status": "pending", "error": None, "wall_time_s": None}
    row.update(_flatten_config(config))
    if not folder.exists():
        return row
    done, error = _read_json(folder / DONE), _read_json(folder / ERROR_FILE)
    results = _read_json(folder / "results.json")
    if _is_done(folder) and results is not None:
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
    state = _read_json(folder / "trainer_state.json") or {}
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


def rebuild_table(sweep_dir: str | os.PathLike, *, write: bool = True) -> pd.DataFrame:
    """The results table of a sweep folder, rebuilt from ``sweep.json`` (the plan) and ``runs/*/``.

    One row per run: planned runs in plan order (status pending / incomplete / failed / done), then run folders
    that are not in the current plan (e.g. from an earlier version of the grid). With ``write``, saves
    ``results.csv`` (and ``results.parquet`` when pyarrow is importable) into the sweep folder.
    """
    sweep_dir = Path(sweep_dir)
    plan = (_read_json(sweep_dir / PLAN_FILE) or {}).get("runs", [])
    planned = {entry["run_id"]: entry for entry in plan}
    runs_dir = sweep_dir / "runs"
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    rows = [_run_row(runs_dir / run_id, entry) for run_id, entry in planned.items()]
    rows += [_run_row(folder, None) for folder in folders if folder.name not in planned]
    df = pd.DataFrame(rows)
    if write and (rows or sweep_dir.is_dir()):
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _write_table(df, sweep_dir)
    return df


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """A sweep's table from ``results.csv`` / ``results.parquet`` or a sweep folder (rebuilt from its runs)."""
    path = Path(path)
    if path.is_dir():
        if (path / "runs").is_dir() or (path / PLAN_FILE).is_file():
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


# -------------------------------------------------------------------------------------------------- running
def _estimate_steps(run: SweepRun, cache: dict) -> int:
    """Training steps of a run: ``max_steps`` or ceil(E·N·tokens per biography / context / (1 − junk) / batch).

    Tokens per biography are measured on a population of min(N, 1000) people with the run's tokenizer settings
    (exact for N ≤ 1000, within a few percent above), cached across runs with the same data settings.
    """
    config = run.training_config()
    if config.max_steps:
        return int(config.max_steps)
    key = json.dumps([config.dataset, config.vocab_size, config.domain_token,
                      config.biod if config.dataset == "bioD" else None, min(config.n_people, 1000)], sort_keys=True)
    if key not in cache:
        from .training import build_data

        proxy = dataclasses.replace(config, n_people=min(config.n_people, 1000), junk_fraction=0.0)
        cache[key] = build_data(proxy).renderer.mean_tokens_per_biography()
    windows = math.ceil(config.exposures * config.n_people * cache[key] / config.context_length
                        / (1.0 - config.junk_fraction))
    return math.ceil(windows / (config.batch_size * config.gradient_accumulation_steps))


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


def _dry_run(sweep: Sweep, selected: list[SweepRun], log: Callable[[str], None]) -> pd.DataFrame:
    cache: dict = {}
    rows = []
    for k, run in enumerate(selected, 1):
        row = {"index": run.index, "run_id": run.run_id, "status": "would run", "estimated_steps": None,
               **_flatten_config(run.config)}
        if run.done:
            row["status"] = "done (skip)"
        elif run.output_dir.exists():
            row["status"] = "incomplete (restart)"
        try:
            row["estimated_steps"] = _estimate_steps(run, cache)
        except ValueError as err:
            row["status"] = f"invalid: {err}"
        steps = row["estimated_steps"]
        log(f"[{k}/{len(selected)}] {run.run_id}  {row['status']}  "
            + (f"~{steps:,} steps" if steps is not None else ""))
        rows.append(row)
    df = pd.DataFrame(rows)
    todo = df[df["status"].isin(["would run", "incomplete (restart)"])]
    total = int(todo["estimated_steps"].fillna(0).sum()) if len(todo) else 0
    log(f"dry run: {len(selected)} runs in {sweep.output_dir} ({len(todo)} to train, ~{total:,} steps in all); "
        "nothing was trained")
    return df


def run_sweep(
    config: str | os.PathLike | Mapping[str, Any] | Sweep,
    *,
    dry_run: bool = False,
    fail_fast: bool = False,
    max_runs: int | None = None,
    shard: str | tuple[int, int] | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a sweep and return its results table (also written to ``<output_dir>/results.csv``).

    ``dry_run``: list the runs with their estimated steps and status, train nothing, write nothing (returns the
    listing). ``fail_fast``: stop at the first failed run (raises ``SweepRunFailed`` after writing the table);
    otherwise failed runs are recorded (status "failed", ``error``) and the sweep goes on. ``max_runs``: train at
    most this many runs in this call (finished runs, which are skipped, do not count). ``shard="i/n"``: only the
    runs whose index % n == i (one process per GPU; they share the sweep folder). ``log``: progress lines
    (default ``print``).
    """
    log = log or (lambda line: print(line, flush=True))
    sweep = config if isinstance(config, Sweep) else load_sweep(config)
    if max_runs is not None and max_runs < 0:
        raise ValueError(f"max_runs must be >= 0, got {max_runs}")
    shard_ = parse_shard(shard)
    plan = sweep.plan()
    selected = [r for r in plan if shard_ is None or r.index % shard_[1] == shard_[0]]
    where = f" (shard {shard_[0]}/{shard_[1]}: {len(selected)} of {len(plan)})" if shard_ else ""
    if dry_run:
        log(f"sweep {sweep.name!r}: {len(plan)} runs{where}")
        return _dry_run(sweep, selected, log)

    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / PLAN_FILE, {**sweep.to_dict(), "runs": [
        {"index": r.index, "run_id": r.run_id, "overrides": r.overrides, "config": r.config} for r in plan]})
    log(f"sweep {sweep.name!r}: {len(plan)} runs in {out}{where}")
    trained = 0
    failure: tuple[SweepRun, Exception] | None = None
    for k, run in enumerate(selected, 1):
        prefix = f"[{k}/{len(selected)}] {run.run_id}"
        if run.done:
            r = (_read_json(run.output_dir / "results.json") or {}).get("bits_per_param")
            log(f"{prefix}  skipped (done)" + (f"  {r:.4f} bits/param" if isinstance(r, (int, float)) else ""))
            continue
        if max_runs is not None and trained >= max_runs:
            log(f"stopping: trained {trained} run(s) (--max-runs {max_runs}); run the sweep again to continue")
            break
        if run.output_dir.exists():  # a crashed (or failed) earlier attempt: start over
            shutil.rmtree(run.output_dir)
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


# ----------------------------------------------------------------------------------------------- analysis
def architecture_label(model: Any, mlp_type: Any = None, num_experts: Any = 0) -> str:
    """``gpt2``, ``gpt2-quarter``, ``gpt2-moe32``, ``llama``, ``llama-standard``, ...: the model family plus any
    non-default MLP and the number of experts (sizes ℓ-h are what a capacity law is fitted across)."""
    text = str(model)
    match = MODEL_NAME.match(text)
    family = match.group(1) if match else text
    label = family
    if isinstance(mlp_type, str) and mlp_type and mlp_type != DEFAULT_MLP.get(family):
        label += f"-{mlp_type}"
    try:
        experts = int(num_experts) if num_experts is not None and not pd.isna(num_experts) else 0
    except (TypeError, ValueError):
        experts = 0
    if experts:
        label += f"-moe{experts}"
    return label


def _quantized_schemes(df: pd.DataFrame) -> list[str]:
    return [c[len("bits_per_param_"):] for c in df.columns
            if c.startswith("bits_per_param_") and df[c].notna().any()]


def capacity_points(df: pd.DataFrame) -> pd.DataFrame:
    """Finished runs as capacity-law points: columns params (the paper's P), bits, bits_max, run_id,
    architecture and precision — one ``fp32`` row per run plus one row per quantized scheme with
    bits = bits_per_param_<scheme> × P."""
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    df = df.copy()
    if "params" not in df.columns:
        if "num_params" not in df.columns:
            raise ValueError(f"the table needs a num_params (or params) column; have {list(df.columns)}")
        df["params"] = df["num_params"]
    if "run_id" not in df.columns:
        df["run_id"] = range(len(df))
    if "architecture" not in df.columns and "model" in df.columns:
        df["architecture"] = [
            architecture_label(m, t, e) for m, t, e in zip(
                df["model"], df["mlp_type"] if "mlp_type" in df.columns else [None] * len(df),
                df["num_experts"] if "num_experts" in df.columns else [0] * len(df))
        ]
    for column in ("params", "bits", "bits_max"):
        if column not in df.columns:
            raise ValueError(f"the table needs a {column} column; have {list(df.columns)}")
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df[df["params"].gt(0) & df["bits_max"].gt(0) & df["bits"].notna()]
    full = df.assign(precision=FULL_PRECISION)
    parts = [full]
    for scheme in _quantized_schemes(df):
        q = df[df[f"bits_per_param_{scheme}"].notna()].copy()
        q["bits"] = q[f"bits_per_param_{scheme}"].astype(float) * q["params"]
        parts.append(q.assign(precision=scheme))
    return pd.concat(parts, ignore_index=True)


@dataclass
class SweepFit:
    """``fit_sweep``'s result: R* per group, and the optional Chinchilla fit of final train loss (or why not)."""

    capacity: pd.DataFrame
    by: list[str]
    loss_fit: Any = None
    loss_note: str = ""
    n_runs: int = 0

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and math.isnan(v):
                return None
            if hasattr(v, "item"):
                return clean(v.item())
            return v

        out = {"n_runs": self.n_runs, "by": self.by,
               "capacity": [{k: clean(v) for k, v in row.items()} for row in self.capacity.to_dict("records")]}
        if self.loss_fit is not None:
            law = self.loss_fit.law
            out["loss_law"] = {"form": "L(N, D) = E + A/N^alpha + B/D^beta (N: non-embedding params, D: tokens; "
                                       "final train loss, nats/token)",
                               "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
                               "n_points": self.loss_fit.n_points}
        else:
            out["loss_law"] = {"note": self.loss_note}
        return out


def _loss_points(df: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    needed = ["train_loss_final", "num_params_non_embedding", "tokens"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        return None, f"loss-law fit skipped: the table has no {', '.join(missing)} column(s)"
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    pts = df[needed].apply(pd.to_numeric, errors="coerce")
    pts = pts[(pts > 0).all(axis=1)]
    if len(pts) < 5:
        return None, f"loss-law fit skipped: needs >= 5 finished runs with a train loss, got {len(pts)}"
    if pts["num_params_non_embedding"].nunique() < 2 or pts["tokens"].nunique() < 2:
        return None, ("loss-law fit skipped: needs at least 2 distinct model sizes and 2 distinct token counts "
                      "(vary model and N or exposures)")
    return pts, ""


def fit_sweep(df: pd.DataFrame, by: Sequence[str] = ("architecture", "exposures", "precision"), *,
              n_bootstrap: int = 1000, loss_fit: bool = True, seed: int = 0) -> SweepFit:
    """R* with a run-clustered bootstrap CI per group (``scaling.capacity_ratio_by_group``), and, when the table
    has ≥ 5 finished runs with train losses over ≥ 2 sizes and ≥ 2 token counts, a Chinchilla-form fit of the
    final train loss against (non-embedding params, tokens). Without ``precision`` in ``by``, only the
    full-precision points are used."""
    from .scaling import capacity_ratio_by_group, fit_chinchilla

    by = [b for b in by if b]
    points = capacity_points(df)
    if "precision" not in by:
        points = points[points["precision"] == FULL_PRECISION]
    if points.empty:
        raise ValueError("no finished runs with bits, bits_max and params > 0 to fit")
    missing = [b for b in by if b not in points.columns]
    if missing:
        raise ValueError(f"cannot group by {missing}: not a column of the table (have {sorted(points.columns)})")
    capacity = capacity_ratio_by_group(points, by=by, n_bootstrap=n_bootstrap, seed=seed)
    result = SweepFit(capacity=capacity, by=list(by), n_runs=int(points["run_id"].nunique()))
    if not loss_fit:
        result.loss_note = "loss-law fit not requested"
        return result
    pts, note = _loss_points(df)
    if pts is None:
        result.loss_note = note
        return result
    try:
        with np.errstate(all="ignore"):  # far grid starts overflow harmlessly on their way to the optimum
            result.loss_fit = fit_chinchilla(pts["num_params_non_embedding"].to_numpy(), pts["tokens"].to_numpy(),
                                             pts["train_loss_final"].to_numpy())
    except ValueError as err:
        result.loss_note = f"loss-law fit failed: {err}"
        return result
    law = result.loss_fit.law
    if not (0 < law.alpha < LOSS_EXPONENT_LIMIT and 0 < law.beta < LOSS_EXPONENT_LIMIT):
        result.loss_fit = None  # the optimiser found *a* minimum, but the runs do not determine the law
        result.loss_note = (
            f"loss law not identifiable from these runs (fitted α = {law.alpha:.3g}, β = {law.beta:.3g}, outside "
            f"(0, {LOSS_EXPONENT_LIMIT})): add runs that span several model sizes and token counts"
        )
    return result


def _curves_of(points: pd.DataFrame, by: str | None) -> dict[str, tuple[list[float], list[float]]]:
    """label -> (exposures, bits/param) for the runs whose row carries a knowledge curve."""
    if "knowledge_curve" not in points.columns:
        return {}
    curves = {}
    for row in points.to_dict("records"):
        text = row.get("knowledge_curve")
        if not isinstance(text, str) or not text:
            continue
        curve = json.loads(text)
        if len(curve) < 2:  # only the final evaluation: not a curve
            continue
        size = f"P={row['params'] / 1e3:,.0f}K" if row["params"] >= 1e4 else f"P={row['params']:.0f}"
        label = " ".join(str(x) for x in (
            row.get(by) if by else None, size,
            f"N={_short_number(int(row['n_people']))}" if "n_people" in row else None,
            f"seed {row['seed']}" if row.get("seed") not in (None, 0) and not pd.isna(row.get("seed")) else None,
        ) if x is not None)
        curves[label] = ([e for e, _ in curve], [b / row["params"] for _, b in curve])
    return curves


LOSS_EXPONENT_LIMIT = 3.0
"""Fitted loss-law exponents outside (0, 3) mean the sweep does not constrain the law (published: 0.07-0.37)."""


def plot_sweep(df: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Paper-style PNGs of a sweep table into ``out_dir``, per exposures value when there are several:
    ``capacity*.png`` (bits vs P with the 2 and 1 bit/param lines and, when it can be fitted, the R* law),
    ``capacity_ratio*.png`` (R vs P per architecture), ``knowledge_curves*.png`` (R vs exposures during training,
    for runs evaluated with ``eval_steps``) and ``capacity_ratio_precision*.png`` with quantized runs."""
    from .plots import plot_capacity, plot_capacity_ratio, plot_knowledge_curves
    from .scaling import NoCapacityLimitedRunError, fit_capacity_law

    points = capacity_points(df)
    if points.empty:
        raise ValueError("no finished runs to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups: list[tuple[str, pd.DataFrame, str]] = []
    if "exposures" in points.columns and points["exposures"].nunique() > 1:
        for e, part in points.groupby("exposures"):
            groups.append((f"_E{int(e) if float(e).is_integer() else e}", part, f", {e:g} exposures"))
    else:
        e = points["exposures"].iloc[0] if "exposures" in points.columns else None
        groups.append(("", points, f", {e:g} exposures" if e is not None and not pd.isna(e) else ""))
    written: list[Path] = []
    by = "architecture" if "architecture" in points.columns else None
    for suffix, part, title in groups:
        full = part[part["precision"] == FULL_PRECISION]
        fit = None
        try:
            fit = fit_capacity_law(full, n_bootstrap=0)
        except (NoCapacityLimitedRunError, ValueError):
            pass
        written.append(Path(plot_capacity(full, out / f"capacity{suffix}.png", group_by=by, fit=fit,
                                          title=f"Knowledge bits vs parameters{title}")))
        series = by
        if by and "n_people" in full.columns and full["n_people"].nunique() > 1:  # one line per (architecture, N)
            full = full.assign(series=[f"{a}, N={_short_number(int(n))}" for a, n in zip(full[by], full["n_people"])])
            series = "series"
        written.append(Path(plot_capacity_ratio(full, out / f"capacity_ratio{suffix}.png", by=series,
                                                title=f"Capacity ratio{title}")))
        curves = _curves_of(full, by)
        if curves:
            written.append(Path(plot_knowledge_curves(curves, out / f"knowledge_curves{suffix}.png",
                                                      title=f"Knowledge learned during training{title}")))
        if part["precision"].nunique() > 1:
            written.append(Path(plot_capacity_ratio(part, out / f"capacity_ratio_precision{suffix}.png",
                                                    by="precision", title=f"Capacity ratio by precision{title}")))
    return written
