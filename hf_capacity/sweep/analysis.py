"""Fits and figures over a sweep's results table: runs → capacity-law points → R* per group (with a bootstrap CI)
and a Chinchilla-form loss law; paper-style PNGs of bits and R against parameters and exposures."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..model_names import match_model_name
from .config import DEFAULT_MLP, plural, short_number

FULL_PRECISION = "fp32"
"""The precision label of a run's own (unquantized) measurement."""
LOSS_EXPONENT_LIMIT = 3.0
"""Fitted loss-law exponents outside (0, 3) mean the sweep does not constrain the law (published: 0.07-0.37)."""
MIN_RUNS = 5
"""Runs under which a fit of R* says that its bootstrap interval, resampling so few runs, cannot be trusted."""
UNDERTRAINED_EXPOSURES = 100
UNDERTRAINED_SHARE = 0.1
"""A run looks undertrained when it saw fewer than ``UNDERTRAINED_EXPOSURES`` exposures per person (the paper's
models reach ~1 bit/param at 100, ~2 at 1,000) or stored under ``UNDERTRAINED_SHARE`` of what the capacity law lets
it store, min(bits_max, 2·P): its bits/param then measure the training more than the capacity."""


def architecture_label(model: Any, mlp_type: Any = None, num_experts: Any = 0) -> str:
    """``gpt2``, ``gpt2-quarter``, ``gpt2-moe32``, ``llama``, ``llama-standard``, ...: the model family plus any
    non-default MLP and the number of experts (sizes ℓ-h are what a capacity law is fitted across)."""
    text = str(model)
    parsed = match_model_name(text)
    family = parsed.family if parsed else text
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
    if df.empty:  # nothing finished (a failed run's row has no metric columns to check)
        return pd.DataFrame(columns=["run_id", "params", "bits", "bits_max", "architecture", "precision"])
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


def undertrained(points: pd.DataFrame) -> pd.Series:
    """Whether each capacity-law point (``capacity_points``) looks undertrained: fewer than
    ``UNDERTRAINED_EXPOSURES`` exposures (``exposures_trained`` when the table has it, else ``exposures``), or bits
    under ``UNDERTRAINED_SHARE`` · min(bits_max, 2·P)."""
    low = points["bits"] < UNDERTRAINED_SHARE * np.minimum(points["bits_max"], 2.0 * points["params"])
    for column in ("exposures_trained", "exposures"):
        if column in points.columns:
            exposures = pd.to_numeric(points[column], errors="coerce")
            low |= exposures < UNDERTRAINED_EXPOSURES
    return low



@dataclass
class SweepFit:
    """``fit_sweep``'s result: R* per group, and the optional Chinchilla fit of final train loss (or why not)."""

    capacity: pd.DataFrame
    by: list[str]
    loss_fit: Any = None
    loss_note: str = ""
    n_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and math.isnan(v):
                return None
            if hasattr(v, "item"):
                return clean(v.item())
            return v

        out = {"n_runs": self.n_runs, "by": self.by, "warnings": self.warnings,
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
    from ..scaling import capacity_ratio_by_group, fit_chinchilla

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
    _caveats(result, points)
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


def _caveats(result: SweepFit, points: pd.DataFrame) -> None:
    """Say what the fit cannot promise: fewer than ``MIN_RUNS`` runs (a warning, or a group's note when the
    sweep has enough runs), and per group the runs that look undertrained (column ``n_undertrained``, a note)."""
    if result.n_runs < MIN_RUNS:
        result.warnings.append(f"only {plural(result.n_runs, 'run')}: R* and its 95% interval need {MIN_RUNS} or "
                               "more (a bootstrap over fewer runs cannot say how far off it is)")
    flagged = points.assign(_undertrained=undertrained(points))
    counts, notes = [], []
    for row in result.capacity.to_dict("records"):
        group = flagged
        for b in result.by:
            group = group[(group[b] == row[b]) | (group[b].isna() & pd.isna(row[b]))]
        n_runs, n_low = group["run_id"].nunique(), group.loc[group["_undertrained"], "run_id"].nunique()
        note = [row.get("note") or ""]
        if n_runs < MIN_RUNS <= result.n_runs:
            note.append(f"only {plural(n_runs, 'run')} in this group: its R* interval cannot be trusted")
        if n_low:
            note.append(f"{n_low} of {plural(n_runs, 'run')} look undertrained (under {UNDERTRAINED_EXPOSURES} "
                        f"exposures, or under {UNDERTRAINED_SHARE:.0%} of min(bits_max, 2·P) stored): their "
                        "bits/param measure the training, not the capacity")
        counts.append(n_low)
        notes.append("; ".join(n for n in note if n))
    result.capacity = result.capacity.assign(n_undertrained=counts, note=notes)


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
            f"N={short_number(int(row['n_people']))}" if "n_people" in row else None,
            f"seed {row['seed']}" if row.get("seed") not in (None, 0) and not pd.isna(row.get("seed")) else None,
        ) if x is not None)
        curves[label] = ([e for e, _ in curve], [b / row["params"] for _, b in curve])
    return curves


def plot_sweep(df: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Paper-style PNGs of a sweep table into ``out_dir``, per exposures value when there are several:
    ``capacity*.png`` (bits vs P with the 2 and 1 bit/param lines and, when it can be fitted, the R* law),
    ``capacity_ratio*.png`` (R vs P per architecture), ``knowledge_curves*.png`` (R vs exposures during training,
    ~10 points a run unless its ``eval_steps`` says otherwise) and ``capacity_ratio_precision*.png`` with quantized
    runs."""
    from ..plots import plot_capacity, plot_capacity_ratio, plot_knowledge_curves
    from ..scaling import NoCapacityLimitedRunError, fit_capacity_law

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
            full = full.assign(series=[f"{a}, N={short_number(int(n))}" for a, n in zip(full[by], full["n_people"])])
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


PRECISION_COLUMNS = ["model", "head_dim", "mlp_type", "seed", "exposures", "precision", "N", "P", "P_non_embedding",
                     "R_max", "bits", "bits_per_param", "run_id"]


def precision_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run and precision (the trained one, then each quantized scheme measured).

    Columns ``PRECISION_COLUMNS``: P is the paper's parameter count (the same for every precision), R_max =
    bits_max / P (above ~2.5 the data is not what limits a model), bits in bits, bits_per_param = bits / P."""
    rows = []
    for _, run in df[df["status"] == "done"].iterrows():
        mlp = run.get("mlp_type")
        if not isinstance(mlp, str) or not mlp:
            parsed = match_model_name(run["model"])
            mlp = DEFAULT_MLP.get(parsed.family if parsed else "", "standard")
        common = {
            "model": run["model"], "head_dim": int(run["head_dim"]), "mlp_type": mlp, "seed": int(run["seed"]),
            "exposures": int(run["exposures"]), "N": int(run["n_people"]), "P": int(run["num_params"]),
            "P_non_embedding": int(run["num_params_non_embedding"]),
            "R_max": float(run["bits_max"]) / float(run["num_params"]), "run_id": run["run_id"],
        }
        trained = "bf16" if bool(run.get("bf16")) else "fp32"
        rows.append({**common, "precision": trained, "bits": float(run["bits"]),
                     "bits_per_param": float(run["bits_per_param"])})
        for scheme in _quantized_schemes(df):
            if pd.notna(run.get(f"bits_{scheme}")):
                rows.append({**common, "precision": scheme, "bits": float(run[f"bits_{scheme}"]),
                             "bits_per_param": float(run[f"bits_per_param_{scheme}"])})
    return pd.DataFrame(rows, columns=PRECISION_COLUMNS)


CAPACITY_LAW_COLUMNS = ["dataset", "model", "layers", "width", "exposures", "precision", "P", "non_embedding_share",
                        "N", "R_max", "bits", "bits_per_param", "fraction_learned", "learning_rate", "context_length",
                        "vocabulary", "seed", "wall_time_s", "run_id"]


def table_flag(value: Any) -> bool:
    """A table cell read as a flag: True, "True"/"true" or 1; missing (NaN, None) is False."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value) and not pd.isna(value)


def capacity_law_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run, sorted by dataset and P: the points of a capacity law (bits against P).

    Columns ``CAPACITY_LAW_COLUMNS``: layers and width (hidden size = heads × head_dim) from the model name, P the
    paper's count, non_embedding_share = non-embedding parameters / P, R_max = bits_max / P (a run storing R bits
    a parameter learned R / R_max of its data: capacity-limited when that is well below 1), bits and bits_per_param
    as trained (quantized measurements are in ``precision_table``); vocabulary ``"whole"`` (the project's BPE
    tokenizer) or ``"fitted"`` (``fit_vocabulary``: only the tokens the renderings use)."""
    rows = []
    for _, run in df[df["status"] == "done"].iterrows():
        parsed = match_model_name(run["model"])
        layers, heads = (parsed.layers, parsed.heads) if parsed else (None, None)
        p = float(run["num_params"])
        rows.append({
            "dataset": run["dataset"], "model": run["model"], "layers": layers,
            "width": heads * int(run["head_dim"]) if heads else None, "exposures": int(run["exposures"]),
            "precision": "bf16" if bool(run.get("bf16")) else "fp32", "P": int(p),
            "non_embedding_share": float(run["num_params_non_embedding"]) / p, "N": int(run["n_people"]),
            "R_max": float(run["bits_max"]) / p, "bits": float(run["bits"]),
            "bits_per_param": float(run["bits_per_param"]),
            "fraction_learned": float(run["fraction_learned"]), "learning_rate": float(run["learning_rate"]),
            "context_length": int(run["context_length"]),
            "vocabulary": "fitted" if table_flag(run.get("fit_vocabulary")) else "whole", "seed": int(run["seed"]),
            "wall_time_s": run.get("wall_time_s"), "run_id": run["run_id"],
        })
    table = pd.DataFrame(rows, columns=CAPACITY_LAW_COLUMNS)
    return table.sort_values(["dataset", "P", "context_length"]).reset_index(drop=True)


ADAPTER_COLUMNS = ["method", "lora_r", "learning_rate", "N", "exposures", "P", "P_base", "R_max", "bits", "bits_max",
                   "bits_per_param", "fraction_learned", "base_bits_before", "base_bits_after", "base_bits_forgotten",
                   "wall_time_s", "run_id"]


def adapter_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finished adapter run (LoRA, QLoRA, full fine-tuning from ``init_from``), by trainable P.

    Columns ``ADAPTER_COLUMNS``: P = the trainable parameters (the whole model for full fine-tuning), P_base the
    base model's P on its own population, R_max = bits_max / P (above ~2.5 the new data is not what limits the
    run), bits of the new population, and the base population's bits before and after (forgetting)."""
    if "init_from" not in df.columns:
        return pd.DataFrame(columns=ADAPTER_COLUMNS)
    rows = []
    for _, run in df[(df["status"] == "done") & df["init_from"].notna()].iterrows():
        method = run.get("adapter_method") if isinstance(run.get("adapter_method"), str) else "full"
        base_p = run.get("base_num_params")
        rows.append({
            "method": method, "lora_r": int(run.get("lora_r") or 0), "learning_rate": float(run["learning_rate"]),
            "N": int(run["n_people"]),
            "exposures": int(run["exposures"]), "P": int(run["num_params"]),
            "P_base": int(base_p) if pd.notna(base_p) else None,
            "R_max": float(run["bits_max"]) / float(run["num_params"]), "bits": float(run["bits"]),
            "bits_max": float(run["bits_max"]), "bits_per_param": float(run["bits_per_param"]),
            "fraction_learned": float(run["fraction_learned"]),
            "base_bits_before": run.get("base_bits_before"), "base_bits_after": run.get("base_bits_after"),
            "base_bits_forgotten": run.get("base_bits_forgotten"), "wall_time_s": run.get("wall_time_s"),
            "run_id": run["run_id"],
        })
    table = pd.DataFrame(rows, columns=ADAPTER_COLUMNS)
    order = table["method"].map({"lora": 0, "qlora": 1, "full": 2})  # the rank ladder, then QLoRA, then the reference
    return (table.assign(_order=order).sort_values(["_order", "P", "learning_rate"]).drop(columns="_order")
            .reset_index(drop=True))
