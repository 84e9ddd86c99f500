"""The capacity law (Allen-Zhu & Li): bits ≈ min(bits_max, R*·P). The peak ratio R* with a run-clustered bootstrap
interval, R* per group of runs, the saturation rule, and the log-log slope of bits against parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..fitting import as_array, as_vectors, bootstrap_ci, check_ci_args, require_columns, run_groups, scalar_or_array


class NoCapacityLimitedRunError(ValueError):
    """No run's data ceiling clears the candidate peak ratio, so the capacity cannot be located."""


def predict_bits(params: Any, bits_max: Any, ratio_bits_per_param: float) -> float | np.ndarray:
    """Saturation rule: bits = min(bits_max, R*·P) for P parameters and a data ceiling of bits_max."""
    p = as_array("params", params, positive=True)
    ceiling = as_array("bits_max", bits_max, positive=True)
    ratio = float(as_array("ratio_bits_per_param", ratio_bits_per_param, positive=True))
    return scalar_or_array(np.minimum(ceiling, ratio * p))


@dataclass
class CapacityLawFit:
    """Peak capacity ratio R* (bits/param) with a run-clustered bootstrap interval.

    `n_capacity_limited` counts the runs whose ceiling bits_max/P clears (1 + margin)·R*, i.e. the runs the
    envelope is taken over. `converged` is False when the fixed-point iteration alternated (see
    `fit_capacity_law`).
    """

    ratio_bits_per_param: float
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    n_runs: int
    n_measurements: int
    n_capacity_limited: int
    margin: float
    envelope_quantile: float
    converged: bool
    n_bootstrap: int
    bootstrap_ratios: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    def predict_bits(self, params: Any, bits_max: Any) -> float | np.ndarray:
        """bits = min(bits_max, R*·P) with this fit's R*."""
        return predict_bits(params, bits_max, self.ratio_bits_per_param)


def _peak_ratio(ratio: np.ndarray, ratio_max: np.ndarray, margin: float, quantile: float,
                max_iter: int = 200) -> tuple[float, bool]:
    """(R*, converged): fixed point of r ↦ envelope{ratio : ratio_max > (1 + margin)·r}; nan if none qualifies."""
    r = float(ratio.max())
    history: list[float] = []
    for _ in range(max_iter):
        eligible = ratio_max > (1.0 + margin) * r
        if not eligible.any():
            return (math.nan, False)
        new = float(np.quantile(ratio[eligible], quantile))
        if new == r:
            return (r, True)
        if new in history:  # the map is non-increasing, so the only cycles alternate between two values
            return (max(history[history.index(new):] + [r]), False)
        history.append(r)
        r = new
    return (r, False)


def fit_capacity_law(
    params: Any,
    bits: Any = None,
    bits_max: Any = None,
    run_ids: Any = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    margin: float = 0.1,
    envelope_quantile: float = 1.0,
    ci_level: float = 0.95,
    ci_method: str = "basic",
) -> CapacityLawFit:
    """Fit the peak capacity ratio R* (bits per parameter) and its bootstrap interval.

    Input: one row per measurement (a run may have several, e.g. checkpoints): `params` P (the paper's count),
    `bits` and `bits_max`; or pass a DataFrame as `params` with columns params, bits, bits_max and optional
    run_id. Without run ids every row is its own run.

    Rule: with R = bits/P and R_max = bits_max/P, R* is the fixed point of
    r ↦ envelope{R : R_max > (1 + margin)·r}, iterated from r = max R. The envelope is the max
    (`envelope_quantile=1`) or that quantile of R. Only runs whose data ceiling clears R* can show the
    capacity; data-limited runs (R ≈ R_max ≤ R*) are excluded. The map is non-increasing, so the fixed
    point is unique when it exists; if the iteration alternates between two values (with the max envelope,
    possible only when a run sits within the margin of its own ceiling) the larger is kept, since a run that
    stored that many bits/param proves the capacity, and `converged` is False.
    **decision:** margin = 0.1. The paper's models with R_max ≤ 1.8 learn almost everything while the peak
    is 2, so a run within 10% of its ceiling is treated as data-limited; with margin 0 a set of purely
    data-limited runs would return R* ≈ their largest R_max instead of failing.

    Interval: bootstrap resampling whole runs (clustered; rows of a run stay together), refitting the fixed
    point each time. **decision:** the default "basic" (reverse-percentile) interval, because the sample
    max can only underestimate an upper envelope: the percentile interval of a max lies wholly below the
    estimate, the basic one extends above it. Resamples with no capacity-limited run are skipped.

    Raises NoCapacityLimitedRunError (a ValueError) if no run is capacity-limited (none has
    R_max > (1 + margin)·max R): the data then cannot locate the peak; add runs with a higher ceiling
    bits_max/P (smaller P or larger N).
    """
    if hasattr(params, "columns"):
        if bits is not None or bits_max is not None:
            raise ValueError("pass either a DataFrame or the arrays params, bits, bits_max; not both")
        df = params
        require_columns(df, ["params", "bits", "bits_max"], "fit_capacity_law")
        params, bits, bits_max = df["params"].to_numpy(), df["bits"].to_numpy(), df["bits_max"].to_numpy()
        if run_ids is None and "run_id" in df.columns:
            run_ids = df["run_id"].to_numpy()
    if bits is None or bits_max is None:
        raise ValueError("fit_capacity_law needs params, bits and bits_max (or a DataFrame with those columns)")
    p, b, b_max = as_vectors(params=(params, True), bits=(bits, False), bits_max=(bits_max, True))
    if run_ids is None:
        runs = np.arange(p.size)
    else:
        runs = np.asarray(run_ids)
        if runs.shape != p.shape:
            raise ValueError(f"run_ids must have one id per measurement ({p.size}); got shape {runs.shape}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0; got {margin!r}")
    if not 0 < envelope_quantile <= 1:
        raise ValueError(f"envelope_quantile must be in (0, 1]; got {envelope_quantile!r}")
    check_ci_args(n_bootstrap, ci_level, ci_method)

    ratio, ratio_max = b / p, b_max / p
    r_star, converged = _peak_ratio(ratio, ratio_max, margin, envelope_quantile)
    if math.isnan(r_star):
        raise NoCapacityLimitedRunError(
            "no run is capacity-limited: every run has bits_max/P <= (1 + margin) * max(bits/P) = "
            f"{(1 + margin) * ratio.max():.3g}, so the data cannot locate the peak ratio; add runs with a higher "
            "ceiling bits_max/P (larger N or smaller P), or lower `margin`"
        )
    n_limited = len(np.unique(runs[ratio_max > (1.0 + margin) * r_star]))
    groups = run_groups(runs)
    rng = np.random.default_rng(seed)
    boot = np.full(int(n_bootstrap), math.nan)
    for i in range(int(n_bootstrap)):
        pick = rng.integers(len(groups), size=len(groups))
        rows = np.concatenate([groups[k] for k in pick])
        boot[i] = _peak_ratio(ratio[rows], ratio_max[rows], margin, envelope_quantile)[0]
    ci_low, ci_high = bootstrap_ci(r_star, boot, ci_level, ci_method) if n_bootstrap else (math.nan, math.nan)
    return CapacityLawFit(
        ratio_bits_per_param=r_star, ci_low=ci_low, ci_high=ci_high, ci_level=ci_level, ci_method=ci_method,
        n_runs=len(groups), n_measurements=int(p.size), n_capacity_limited=n_limited, margin=float(margin),
        envelope_quantile=float(envelope_quantile), converged=converged, n_bootstrap=int(n_bootstrap),
        bootstrap_ratios=boot,
    )


def capacity_ratio_by_group(df: Any, by: Sequence[str] = ("architecture", "exposures", "precision"),
                            **fit_kwargs: Any):
    """R* per group (e.g. per architecture, exposures, precision) as a pandas DataFrame, one row a group.

    Columns: the `by` columns, ratio_bits_per_param, ci_low, ci_high, n_runs, n_capacity_limited, converged,
    note. A group with no capacity-limited run gets NaN and the reason in `note` instead of an error.
    `fit_kwargs` go to `fit_capacity_law`.
    """
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    if not by:
        raise ValueError("`by` must name at least one column")
    require_columns(df, [*by, "params", "bits", "bits_max"], "capacity_ratio_by_group")
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        try:
            fit = fit_capacity_law(group, **fit_kwargs)
            row.update(ratio_bits_per_param=fit.ratio_bits_per_param, ci_low=fit.ci_low, ci_high=fit.ci_high,
                       n_runs=fit.n_runs, n_capacity_limited=fit.n_capacity_limited, converged=fit.converged,
                       note="")
        except NoCapacityLimitedRunError as err:
            n_runs = group["run_id"].nunique() if "run_id" in group.columns else len(group)
            row.update(ratio_bits_per_param=math.nan, ci_low=math.nan, ci_high=math.nan, n_runs=n_runs,
                       n_capacity_limited=0, converged=False, note=str(err))
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class LogLogSlope:
    """Least-squares line of log(bits) against log(P): ``bits ≈ prefactor · P^slope`` (slope 1: bits proportional
    to parameters, the capacity law's shape), with the slope's t interval."""

    slope: float
    ci_low: float
    ci_high: float
    ci_level: float
    prefactor: float
    """bits at P = 1 on the fitted line (with slope 1, the bits per parameter)."""
    n_points: int


def fit_loglog_slope(params: Any, bits: Any, *, ci_level: float = 0.95) -> LogLogSlope:
    """Fit log(bits) = log(prefactor) + slope · log(P) by least squares over the points (one a run).

    The interval is the slope's Student-t interval with n − 2 degrees of freedom (exact for normal errors in
    log bits); it needs at least 3 points at 2 or more distinct P. Bits must be > 0 (a run that stored nothing
    has no place on a log-log plot: leave it out and say so).
    """
    from scipy.stats import t as student_t

    p, b = as_vectors(3, params=(params, True), bits=(bits, True))
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1); got {ci_level!r}")
    x, y = np.log(p), np.log(b)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx == 0:
        raise ValueError("every point has the same P: a slope needs runs of different sizes")
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x.mean())
    dof = p.size - 2
    se = math.sqrt(float(((y - intercept - slope * x) ** 2).sum()) / dof / sxx)
    half = float(student_t.ppf(0.5 + ci_level / 2, dof)) * se
    return LogLogSlope(slope=slope, ci_low=slope - half, ci_high=slope + half, ci_level=ci_level,
                       prefactor=math.exp(intercept), n_points=int(p.size))
