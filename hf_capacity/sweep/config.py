"""A sweep file and its validation: YAML → ``Sweep`` (base, grid, runs, rules) → a ``SweepRun`` per resolved config.

Every run is resolved to a full ``CapacityTrainingConfig`` (defaults < base < matching rules < the grid point or run
entry) and gets a deterministic id: a readable slug plus a hash of its resolved config (``run_slug``,
``config_hash``). The fields and their types are the config's (``hf_capacity.schema``); unknown fields, wrong types
and misplaced keys raise ``SweepConfigError`` naming the place.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..adapters import run_label
from ..model_names import match_model_name
from ..schema import Setting, coerce, settings
from ..training import CapacityTrainingConfig
from .folders import RUNS_DIR, is_done

TOP_LEVEL_KEYS = ("name", "description", "output_dir", "base", "grid", "runs", "rules")
NESTED_FIELDS = tuple(name for name, s in settings(CapacityTrainingConfig).items() if s.kind is dict)
"""The fields that hold a mapping (``biod``, ``memory``): a sweep may set one key of them (``biod.diversity``)."""
SWEEP_OWNED = ("output_dir", "overwrite_output_dir")
"""Fields the sweep sets itself (each run's folder; it skips finished runs, resumes or restarts the others)."""
NOT_IN_RUN_ID = ("output_dir", "progress", "logging_steps", "report_to", "push_to_hub", "hub_model_id")
"""Fields that do not change what a run learns, so they do not change its id (toggle them without retraining)."""
BIOD_KEYS = ("n_attributes", "chunks_per_value", "diversity", "chunk_length", "alphabet")
BIOD_LETTERS = dict(zip(BIOD_KEYS, "KCDLT"))
DEFAULT_MLP = {"gpt2": "standard", "llama": "gated", "memory-llama": "gated"}


class SweepConfigError(ValueError):
    """The sweep file is malformed (unknown field, wrong type, ...); the message says where and what to do."""


# ------------------------------------------------------------------------------------------------- config fields
def _settings() -> dict[str, Setting]:
    """The ``CapacityTrainingConfig`` fields with their types and help (``hf_capacity.schema``)."""
    return settings(CapacityTrainingConfig)


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


def _check_overrides(mapping: Any, where: str) -> dict:
    """Validate one mapping of field → value (``biod.diversity`` style keys allowed); returns it coerced."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise SweepConfigError(f"{where} must be a mapping of CapacityTrainingConfig fields, got {mapping!r}")
    types = _settings()
    valid = [n for n in types if n not in SWEEP_OWNED]
    unknown = []
    out = {}
    for key, value in mapping.items():
        key = str(key)
        if key == "overwrite_output_dir":
            raise SweepConfigError(f"{where}.{key}: the sweep decides about its run folders (finished runs are "
                                   "skipped, unfinished ones resumed): delete a run's folder to train it again")
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
                value = coerce(value, int, f"{where}.{key}", SweepConfigError)
            out[key] = value
            continue
        value = types[key].coerce(value, f"{where}.{key}", SweepConfigError)
        if top == "biod":
            bad = set(value) - set(BIOD_KEYS)
            if bad:
                raise _unknown(bad, BIOD_KEYS, f"{where}.biod")
            value = {k: coerce(v, int, f"{where}.biod.{k}", SweepConfigError) for k, v in value.items()}
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
def short_number(n: int) -> str:
    """10000 → 10K, 1000000 → 1M; numbers below 10,000 (or not round) stay as they are."""
    for div, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1000, "K")):
        if n >= 10_000 and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def plural(count: int, noun: str) -> str:
    """A count with its noun: "1 run", "2 runs"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def run_slug(config: Mapping[str, Any]) -> str:
    """A readable name from the run's own config: ``gpt2-2-2_N1000_E100_seed0``, plus a non-default MLP or MoE,
    the bioD shape, a head dim other than 64, junk and the domain token. It never depends on the other runs, so
    a finished run keeps its id (and folder) when the grid grows; the hash in the run id tells the rest apart."""
    model = config["model"]
    parsed = match_model_name(model)
    family = parsed.family if parsed else None
    if config.get("mlp_type") and config["mlp_type"] != DEFAULT_MLP.get(family):
        model += f"-{config['mlp_type']}"
    if config.get("num_experts"):
        model += f"-moe{config['num_experts']}"
    data = ""
    if config["dataset"] == "bioD":
        letters = "".join(f"{BIOD_LETTERS[k]}{config['biod'][k]}" for k in BIOD_KEYS if k in config["biod"])
        data = "bioD-" + letters + "_"
    elif config["dataset"] != "bioS":
        data = config["dataset"] + "_"
    parts = [model, f"{data}N{short_number(int(config['n_people']))}", f"E{config['exposures']}",
             f"seed{config['seed']}"]
    if config.get("head_dim", 64) != 64:
        parts.append(f"hd{config['head_dim']}")
    if config.get("junk_fraction"):
        parts.append(f"junk{config['junk_fraction']:g}")
    if config.get("domain_token"):
        parts.append("dom")
    adapter = run_label(config)  # an adapter run: from which base, and how
    if adapter:
        parts[0] = adapter
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
        return CapacityTrainingConfig(output_dir=str(self.output_dir), **self.config)

    @property
    def done(self) -> bool:
        return is_done(self.output_dir)


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
            runs.append(SweepRun(len(runs), run_id, config, point, self.output_dir / RUNS_DIR / run_id))
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
            raise SweepConfigError(
                f"{path}: expected a mapping with base:, grid: and/or runs:, got {type(raw).__name__}"
            )
    unknown = set(map(str, raw)) - set(TOP_LEVEL_KEYS)
    if unknown:
        fields_here = unknown & set(_settings())
        hint = (f" (training fields go under base:, e.g. base: {{{sorted(fields_here)[0]}: ...}})"
                if fields_here else "")
        raise SweepConfigError(
            f"unknown top-level key(s) {', '.join(map(repr, sorted(unknown)))}{hint}; "
            f"valid: {', '.join(TOP_LEVEL_KEYS)}"
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
