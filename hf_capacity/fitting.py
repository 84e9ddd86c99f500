"""What every fit in the package shares (the scaling laws, the memorization plateau): boundary checks that name the
bad argument, rows grouped by run, and bootstrap intervals."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def as_array(name: str, values: Any, *, positive: bool = False) -> np.ndarray:
    """`values` as a float array; finite (and > 0 when `positive`), else a ValueError naming `name`."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {type(values).__name__}") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite; found {int(bad.sum())} NaN/inf value(s)")
    if positive and arr.size and arr.min() <= 0:
        raise ValueError(f"{name} must be > 0; smallest value is {arr.min():g}")
    return arr


def as_vectors(min_length: int = 1, **named: tuple[Any, bool]) -> list[np.ndarray]:
    """Validate 1-D arrays of equal length (each given as (values, positive))."""
    arrays = []
    for name, (values, positive) in named.items():
        arr = as_array(name, values, positive=positive)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
        arrays.append(arr)
    lengths = {name: arr.size for name, arr in zip(named, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths; got {lengths}")
    if arrays and arrays[0].size < min_length:
        raise ValueError(f"need at least {min_length} measurement(s); got {arrays[0].size}")
    return arrays


def scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def require_columns(df: Any, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} (have {list(df.columns)})")


def bootstrap_ci(estimate: float, samples: np.ndarray, level: float, method: str) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    if method == "percentile":
        return (float(lo), float(hi))
    return (float(2 * estimate - hi), float(2 * estimate - lo))  # "basic" (reverse percentile)


def check_ci_args(n_bootstrap: int, ci_level: float, ci_method: str) -> None:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer; got {n_bootstrap!r}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1); got {ci_level!r}")
    if ci_method not in ("basic", "percentile"):
        raise ValueError(f"ci_method must be 'basic' or 'percentile'; got {ci_method!r}")


def run_groups(run_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices of each run, in order of first appearance."""
    _, first, inverse = np.unique(run_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]
