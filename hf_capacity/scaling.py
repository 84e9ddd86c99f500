"""Scaling laws: the capacity law bits ≈ min(bits_max, R*·P), Kaplan 2020, Chinchilla fits, ARE, Niu diagnostics,
the memorization plateau."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

__all__ = [
    # capacity law
    "CapacityLawFit",
    "NoCapacityLimitedRunError",
    "fit_capacity_law",
    "predict_bits",
    "capacity_ratio_by_group",
    "LogLogSlope",
    "fit_loglog_slope",
    # Kaplan et al. 2020
    "KaplanLaws",
    "KaplanJointLaw",
    "KAPLAN_2020",
    "KAPLAN_2020_JOINT",
    "kaplan_loss_n",
    "kaplan_loss_d",
    "kaplan_loss_nd",
    "kaplan_critical_batch_tokens",
    "kaplan_compute_optimal_params",
    # Chinchilla form
    "ChinchillaLaw",
    "ChinchillaFit",
    "HOFFMANN_2022",
    "BESIROGLU_2024",
    "chinchilla_loss",
    "compute_optimal_allocation",
    "fit_chinchilla",
    "bootstrap_chinchilla",
    "UnidentifiedFitWarning",
    # Hitchhiker's guide
    "LawEvaluation",
    "drop_early_checkpoints",
    "split_target",
    "absolute_relative_error",
    "evaluate_law_fit",
    # Niu et al.
    "NiuDiagnostic",
    "niu_cross_entropy_floor",
    "niu_params_vs_data_squared",
    # memorization plateau (Morris et al. 2025)
    "MemorizationPlateau",
    "fit_memorization_plateau",
]


# ----------------------------------------------------------------------------------------------------------------------
# Input validation (boundary checks shared by every public function)
# ----------------------------------------------------------------------------------------------------------------------


def _array(name: str, values: Any, *, positive: bool = False) -> np.ndarray:
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


def _vectors(min_length: int = 1, **named: tuple[Any, bool]) -> list[np.ndarray]:
    """Validate 1-D arrays of equal length (each given as (values, positive))."""
    arrays = []
    for name, (values, positive) in named.items():
        arr = _array(name, values, positive=positive)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
        arrays.append(arr)
    lengths = {name: arr.size for name, arr in zip(named, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths; got {lengths}")
    if arrays and arrays[0].size < min_length:
        raise ValueError(f"need at least {min_length} measurement(s); got {arrays[0].size}")
    return arrays


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def _require_columns(df: Any, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} (have {list(df.columns)})")


def _bootstrap_ci(estimate: float, samples: np.ndarray, level: float, method: str) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    if method == "percentile":
        return (float(lo), float(hi))
    return (float(2 * estimate - hi), float(2 * estimate - lo))  # "basic" (reverse percentile)


def _check_ci_args(n_bootstrap: int, ci_level: float, ci_method: str) -> None:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer; got {n_bootstrap!r}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1); got {ci_level!r}")
    if ci_method not in ("basic", "percentile"):
        raise ValueError(f"ci_method must be 'basic' or 'percentile'; got {ci_method!r}")


def _run_groups(run_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices of each run, in order of first appearance."""
    _, first, inverse = np.unique(run_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == k) for k in order]


# ----------------------------------------------------------------------------------------------------------------------
# 1. Capacity law: bits ≈ min(bits_max, R*·P)
# ----------------------------------------------------------------------------------------------------------------------


class NoCapacityLimitedRunError(ValueError):
    """No run's data ceiling clears the candidate peak ratio, so the capacity cannot be located."""


def predict_bits(params: Any, bits_max: Any, ratio_bits_per_param: float) -> float | np.ndarray:
    """Saturation rule: bits = min(bits_max, R*·P) for P parameters and a data ceiling of bits_max."""
    p = _array("params", params, positive=True)
    ceiling = _array("bits_max", bits_max, positive=True)
    ratio = float(_array("ratio_bits_per_param", ratio_bits_per_param, positive=True))
    return _scalar_or_array(np.minimum(ceiling, ratio * p))


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
        _require_columns(df, ["params", "bits", "bits_max"], "fit_capacity_law")
        params, bits, bits_max = df["params"].to_numpy(), df["bits"].to_numpy(), df["bits_max"].to_numpy()
        if run_ids is None and "run_id" in df.columns:
            run_ids = df["run_id"].to_numpy()
    if bits is None or bits_max is None:
        raise ValueError("fit_capacity_law needs params, bits and bits_max (or a DataFrame with those columns)")
    p, b, b_max = _vectors(params=(params, True), bits=(bits, False), bits_max=(bits_max, True))
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
    _check_ci_args(n_bootstrap, ci_level, ci_method)

    ratio, ratio_max = b / p, b_max / p
    r_star, converged = _peak_ratio(ratio, ratio_max, margin, envelope_quantile)
    if math.isnan(r_star):
        raise NoCapacityLimitedRunError(
            "no run is capacity-limited: every run has bits_max/P <= (1 + margin) * max(bits/P) = "
            f"{(1 + margin) * ratio.max():.3g}, so the data cannot locate the peak ratio; add runs with a higher "
            "ceiling bits_max/P (larger N or smaller P), or lower `margin`"
        )
    n_limited = len(np.unique(runs[ratio_max > (1.0 + margin) * r_star]))
    groups = _run_groups(runs)
    rng = np.random.default_rng(seed)
    boot = np.full(int(n_bootstrap), math.nan)
    for i in range(int(n_bootstrap)):
        pick = rng.integers(len(groups), size=len(groups))
        rows = np.concatenate([groups[k] for k in pick])
        boot[i] = _peak_ratio(ratio[rows], ratio_max[rows], margin, envelope_quantile)[0]
    ci_low, ci_high = _bootstrap_ci(r_star, boot, ci_level, ci_method) if n_bootstrap else (math.nan, math.nan)
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
    _require_columns(df, [*by, "params", "bits", "bits_max"], "capacity_ratio_by_group")
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

    p, b = _vectors(3, params=(params, True), bits=(bits, True))
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


# ----------------------------------------------------------------------------------------------------------------------
# 2. Kaplan et al. 2020 (N = non-embedding parameters, D = tokens, loss in nats/token)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KaplanLaws:
    """Kaplan et al. 2020 one-variable fits L(N), L(D), the critical batch and the compute-optimal exponent.

    Do not mix with `KaplanJointLaw`: the joint L(N, D) fit has its own constants.
    """

    alpha_n: float = 0.076
    n_c_params: float = 8.8e13
    alpha_d: float = 0.095
    d_c_tokens: float = 5.4e13
    b_star_tokens: float = 2e8
    alpha_b: float = 0.21
    compute_optimal_n_exponent: float = 0.73  # N_opt ∝ C^0.73


@dataclass(frozen=True)
class KaplanJointLaw:
    """Kaplan et al. 2020 joint fit L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD, with its own constants."""

    alpha_n: float = 0.076
    alpha_d: float = 0.103
    n_c_params: float = 6.4e13
    d_c_tokens: float = 1.8e13


KAPLAN_2020 = KaplanLaws()
KAPLAN_2020_JOINT = KaplanJointLaw()


def kaplan_loss_n(n_params: Any, laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """L(N) = (Nc/N)^αN in nats/token; N = non-embedding parameters (data not limiting)."""
    n = _array("n_params", n_params, positive=True)
    return _scalar_or_array((laws.n_c_params / n) ** laws.alpha_n)


def kaplan_loss_d(n_tokens: Any, laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """L(D) = (Dc/D)^αD in nats/token; D = training tokens (model size not limiting, early stopping)."""
    d = _array("n_tokens", n_tokens, positive=True)
    return _scalar_or_array((laws.d_c_tokens / d) ** laws.alpha_d)


def kaplan_loss_nd(n_params: Any, n_tokens: Any, law: KaplanJointLaw = KAPLAN_2020_JOINT) -> float | np.ndarray:
    """Joint L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD in nats/token."""
    n = _array("n_params", n_params, positive=True)
    d = _array("n_tokens", n_tokens, positive=True)
    return _scalar_or_array(((law.n_c_params / n) ** (law.alpha_n / law.alpha_d) + law.d_c_tokens / d) ** law.alpha_d)


def kaplan_critical_batch_tokens(loss_nats: Any, laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """Critical batch size B_crit(L) = B*/L^(1/αB) in tokens, for a loss in nats/token."""
    loss = _array("loss_nats", loss_nats, positive=True)
    return _scalar_or_array(laws.b_star_tokens / loss ** (1.0 / laws.alpha_b))


def kaplan_compute_optimal_params(compute: Any, reference_compute: float, reference_params: float,
                                  laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """Compute-optimal N from N ∝ C^0.73, anchored at a known (reference_compute, reference_params) point.

    The law fixes only the exponent; `compute` and `reference_compute` must share units (FLOPs or PF-days).
    """
    c = _array("compute", compute, positive=True)
    c_ref = float(_array("reference_compute", reference_compute, positive=True))
    n_ref = float(_array("reference_params", reference_params, positive=True))
    return _scalar_or_array(n_ref * (c / c_ref) ** laws.compute_optimal_n_exponent)


# ----------------------------------------------------------------------------------------------------------------------
# 3. Chinchilla form L(N, D) = E + A/N^α + B/D^β
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^α + B/D^β (loss in nats/token, N parameters, D training tokens)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def predict(self, n_params: Any, n_tokens: Any) -> float | np.ndarray:
        """Loss in nats/token at N parameters and D tokens."""
        return chinchilla_loss(n_params, n_tokens, self)

    def compute_optimal(self, compute_flops: Any, flops_per_param_token: float = 6.0):
        """(N_opt, D_opt) minimising the loss at C = 6·N·D FLOPs."""
        return compute_optimal_allocation(compute_flops, self, flops_per_param_token)


HOFFMANN_2022 = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. 2022, approach 3, as printed in the paper: their Huber-loss fit (δ = 1e-3 on log loss, L-BFGS
from a grid of starts; what `fit_chinchilla` implements) on their ~400 runs. These are the rounded digits of the
text; the TeX source holds E = 1.6934, α = 0.3392, β = 0.2849, and Besiroglu et al. 2024 found the fit stopped
before convergence, so treat them as the published reference, not as that objective's optimum."""

BESIROGLU_2024 = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
"""Besiroglu et al. 2024 (Epoch AI, "Chinchilla Scaling: A replication attempt", arXiv 2404.10102), at the
published digits: their maximum-likelihood estimate under a Huber error distribution (δ = 1e-3) on the 240
points they digitised from Hoffmann's Figure 4. It is not the Huber-loss grid fit that `fit_chinchilla`
implements, so refitting their points with `fit_chinchilla` need not reproduce these digits."""


def chinchilla_loss(n_params: Any, n_tokens: Any, law: ChinchillaLaw = HOFFMANN_2022) -> float | np.ndarray:
    """E + A/N^α + B/D^β in nats/token."""
    n = _array("n_params", n_params, positive=True)
    d = _array("n_tokens", n_tokens, positive=True)
    return _scalar_or_array(law.E + law.A / n ** law.alpha + law.B / d ** law.beta)


def compute_optimal_allocation(compute_flops: Any, law: ChinchillaLaw = HOFFMANN_2022,
                               flops_per_param_token: float = 6.0):
    """(N_opt, D_opt) minimising E + A/N^α + B/D^β subject to C = 6·N·D (Hoffmann et al. eq. 4).

    Closed form: N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)^(α/(α+β))/G, G = (αA/(βB))^(1/(α+β)).
    """
    c = _array("compute_flops", compute_flops, positive=True)
    k = float(_array("flops_per_param_token", flops_per_param_token, positive=True))
    if not (law.alpha > 0 and law.beta > 0 and law.A > 0 and law.B > 0):
        raise ValueError(f"compute-optimal allocation needs A, B, alpha, beta > 0; got {law}")
    s = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / s)
    n_opt = g * (c / k) ** (law.beta / s)
    d_opt = (c / k) ** (law.alpha / s) / g
    return _scalar_or_array(n_opt), _scalar_or_array(d_opt)


@dataclass
class ChinchillaFit:
    """A fitted Chinchilla law, reached as `fit.law` (`fit.law.E`, `fit.law.alpha`), with fit diagnostics.

    The fit keeps its points (`n_params`, `n_tokens`, `loss_nats`), settings and the distinct local optima the
    start grid found (`local_optima`, rows θ = (a, b, e, α, β), best first), so `bootstrap_chinchilla(fit)` can
    resample it without re-running the grid. After a bootstrap, `ci` maps "E", "A", "B", "alpha", "beta" to
    (low, high) and `bootstrap` is a DataFrame with one row per resample: E, A, B, alpha, beta, objective,
    converged; `bootstrap_counts[i, j]` is how often point j is in resample i.
    `unidentified` names the free parameters the data do not pin down (see `fit_chinchilla`; empty when all are).
    """

    law: ChinchillaLaw
    loss: str
    objective: float
    n_points: int
    n_starts: int
    fixed: dict[str, float]
    ci: dict[str, tuple[float, float]] | None = None
    ci_level: float | None = None
    ci_method: str | None = None
    bootstrap: Any = field(default=None, repr=False)
    bootstrap_counts: np.ndarray | None = field(default=None, repr=False)
    huber_delta: float = 1e-3
    expectile: float = 0.05
    n_params: np.ndarray | None = field(default=None, repr=False)
    n_tokens: np.ndarray | None = field(default=None, repr=False)
    loss_nats: np.ndarray | None = field(default=None, repr=False)
    run_ids: np.ndarray | None = field(default=None, repr=False)
    local_optima: np.ndarray | None = field(default=None, repr=False)
    unidentified: tuple[str, ...] = ()

    @property
    def bootstrap_params(self) -> np.ndarray | None:
        """The bootstrap refits as rows of (E, A, B, alpha, beta), or None before a bootstrap."""
        return None if self.bootstrap is None else self.bootstrap[list(_PARAM_NAMES)].to_numpy()

    def predict(self, n_params: Any, n_tokens: Any) -> float | np.ndarray:
        """Fitted loss in nats/token."""
        return self.law.predict(n_params, n_tokens)

    def compute_optimal(self, compute_flops: Any, flops_per_param_token: float = 6.0):
        """(N_opt, D_opt) under the fitted law at C = 6·N·D FLOPs."""
        return self.law.compute_optimal(compute_flops, flops_per_param_token)


# Internal parameter vector θ = (a, b, e, α, β) with A = e^a, B = e^b, E = e^e.
_THETA_INDEX = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}
_PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
_START_GRID = (
    np.arange(0.0, 26.0, 5.0),  # a
    np.arange(0.0, 26.0, 5.0),  # b
    np.arange(-1.0, 1.01, 0.5),  # e
    np.arange(0.0, 2.01, 0.5),  # alpha
    np.arange(0.0, 2.01, 0.5),  # beta
)
_LOSSES = ("huber", "least_squares", "lower_envelope")


@dataclass(frozen=True)
class _LawData:
    """Data and objective settings for the Chinchilla fit (weights: (n,) or one row per batch member)."""

    log_n: np.ndarray
    log_d: np.ndarray
    loss: np.ndarray
    log_loss: np.ndarray
    weights: np.ndarray
    kind: str
    delta: float
    expectile: float


def _workspace(rows: int, points: int) -> np.ndarray:
    """Buffers for `_objective` on up to `rows` parameter rows: (7, rows, points) float64. Reused across calls, so
    an evaluation allocates no (rows, points) temporaries: freed and faulted in again from the OS at every chunk,
    those ~1 MB temporaries were most of a large fit's time (benchmarks/bench_chinchilla_fit.py)."""
    return np.empty((7, rows, points))


def _objective(theta: np.ndarray, data: _LawData, rows: np.ndarray | None = None,
               work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Objective and gradient for a batch of θ (S, 5); `rows` picks per-member weight rows; `work`: a `_workspace`
    of at least S rows (default: a fresh one)."""
    if work is None:
        work = _workspace(theta.shape[0], data.log_n.size)
    with np.errstate(over="ignore", invalid="ignore"):  # diverging trial points become inf, rejected below
        return _objective_unguarded(theta, data, rows, work[:, :theta.shape[0]])


def _objective_unguarded(theta: np.ndarray, data: _LawData, rows: np.ndarray | None,
                         work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L̂ = logsumexp(t1, t2, t3), t1 = a − α log N, t2 = b − β log D, t3 = e; every (S, n) array is a
    buffer of `work` (the names say what each holds at that point)."""
    t1, t2, t3, top, r, c, spare = work
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    np.subtract(a, np.multiply(alpha, data.log_n, out=t1), out=t1)
    np.subtract(b, np.multiply(beta, data.log_d, out=t2), out=t2)
    np.maximum(np.maximum(t1, t2, out=top), e, out=top)
    e1 = np.exp(np.subtract(t1, top, out=t1), out=t1)
    e2 = np.exp(np.subtract(t2, top, out=t2), out=t2)
    e3 = np.exp(np.subtract(e, top, out=t3), out=t3)
    total = np.add(np.add(e1, e2, out=r), e3, out=r)
    w1, w2, w3 = (np.divide(x, total, out=x) for x in (e1, e2, e3))
    lse = np.add(top, np.log(total, out=total), out=top)
    if data.kind == "least_squares":
        pred = np.exp(lse, out=lse)
        res = np.subtract(data.loss, pred, out=r)
        rho = np.multiply(res, res, out=c)
        d_lse = np.multiply(np.multiply(res, pred, out=pred), -2.0, out=pred)
    else:
        res = np.subtract(data.log_loss, lse, out=r)
        if data.kind == "huber":  # Huber_δ(r) = q·(|r| − q/2), q = min(|r|, δ): ½r² within δ, else δ(|r| − δ/2)
            rho = np.abs(res, out=c)
            q = np.minimum(rho, data.delta, out=lse)
            np.subtract(rho, np.multiply(q, 0.5, out=spare), out=rho)
            np.multiply(rho, q, out=rho)
            d_lse = np.negative(np.clip(res, -data.delta, data.delta, out=res), out=res)
        else:  # lower_envelope: expectile loss, points below the curve weigh (1 - τ), above τ
            below = np.less(res, 0.0, out=spare.view(bool)[:, :res.shape[1]])
            wt = c
            wt.fill(data.expectile)
            np.copyto(wt, 1.0 - data.expectile, where=below)
            rho = np.multiply(np.multiply(wt, res, out=lse), res, out=lse)
            d_lse = np.multiply(np.multiply(res, wt, out=res), -2.0, out=res)
    # (mode="clip": the rows are valid, and take's default mode copies through a buffer first)
    weights = data.weights if data.weights.ndim == 1 else np.take(data.weights, rows, axis=0, out=spare, mode="clip")
    f = np.multiply(rho, weights, out=rho).sum(axis=1)
    cw = np.multiply(d_lse, weights, out=d_lse)
    grad = np.empty((theta.shape[0], 5))
    for k, (w, log_x) in enumerate(((w1, data.log_n), (w2, data.log_d), (w3, None))):
        cw_k = np.multiply(cw, w, out=w)
        grad[:, k] = cw_k.sum(axis=1)
        if log_x is not None:
            grad[:, 3 + k] = -(cw_k @ log_x)
    bad = ~np.isfinite(f) | ~np.isfinite(grad).all(axis=1)
    f[bad] = np.inf
    grad[bad] = 0.0
    return f, grad


_MAX_STEP_LENGTH = 1e3
"""Longest first trial step of the batched L-BFGS, in θ units (e^θ overflows beyond ~709, so a longer step is never
finite): from an astronomically long direction, backtracking by halves would never reach a finite trial."""


def _row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, without overflow for entries up to ~1e308 (scaled by the row's largest)."""
    scale = np.abs(x).max(axis=1)
    unit = x / np.where(scale > 0, scale, 1.0)[:, None]
    return scale * np.sqrt(np.einsum("sk,sk->s", unit, unit))


def _batched_lbfgs(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], x0: np.ndarray, *,
                   history: int = 10, max_iter: int = 100, gtol: float = 1e-8, ftol: float = 1e-7,
                   c1: float = 1e-4, max_backtrack: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS with Armijo backtracking run on many independent starts at once (rows of x0).

    `fun(x, rows)` returns objective (S,) and gradient (S, k) for the batch members `rows`. A start stops when
    max |gradient| <= gtol, the objective falls by <= ftol relative to itself, or the line search fails. The
    loose defaults suit a first pass over a grid whose best results are then refined.
    """
    x = x0.copy()
    n_starts, k = x.shape
    all_rows = np.arange(n_starts)
    f, g = fun(x, all_rows)
    s_hist = np.zeros((n_starts, history, k))
    y_hist = np.zeros((n_starts, history, k))
    rho = np.zeros((n_starts, history))  # 0 marks an empty slot, which the two-loop recursion then skips
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > gtol)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi = g[idx]
        # curvature pairs from a flat (linear) stretch of the Huber loss give an astronomically long direction; it
        # may overflow: such a direction is reset below, a merely huge one capped, neither warned about
        with np.errstate(over="ignore", invalid="ignore"):
            q = gi.copy()
            alphas = np.zeros((idx.size, history))
            for j in range(history - 1, -1, -1):  # newest pair is at the end
                alphas[:, j] = rho[idx, j] * np.einsum("sk,sk->s", s_hist[idx, j], q)
                q -= alphas[:, j:j + 1] * y_hist[idx, j]
            yy = np.einsum("sk,sk->s", y_hist[idx, -1], y_hist[idx, -1])
            gamma = np.where(rho[idx, -1] > 0, 1.0 / np.maximum(rho[idx, -1] * yy, 1e-300), 1.0)
            q *= gamma[:, None]
            for j in range(history):
                beta = rho[idx, j] * np.einsum("sk,sk->s", y_hist[idx, j], q)
                q += (alphas[:, j] - beta)[:, None] * s_hist[idx, j]
            d = -q
            slope = np.einsum("sk,sk->s", gi, d)
            length = _row_norms(d)
        reset = ~(slope < 0) | ~np.isfinite(slope) | ~np.isfinite(length)
        if reset.any():  # not a (finite) descent direction: forget the history, use steepest descent
            rho[idx[reset]] = 0.0
            d[reset] = -gi[reset]
            slope[reset] = -np.einsum("sk,sk->s", gi[reset], gi[reset])
            length[reset] = _row_norms(d[reset])
        fresh = rho[idx, -1] == 0
        length = np.maximum(length, 1e-300)
        step = np.minimum(np.where(fresh, np.minimum(1.0, 1.0 / length), 1.0), _MAX_STEP_LENGTH / length)
        accepted = np.zeros(idx.size, bool)
        x_new, f_new, g_new = x[idx].copy(), f[idx].copy(), gi.copy()
        pending = np.arange(idx.size)
        for _ in range(max_backtrack):
            trial = x[idx[pending]] + step[pending, None] * d[pending]
            f_t, g_t = fun(trial, idx[pending])
            ok = f_t <= f[idx[pending]] + c1 * step[pending] * slope[pending]
            took = pending[ok]
            accepted[took] = True
            x_new[took], f_new[took], g_new[took] = trial[ok], f_t[ok], g_t[ok]
            pending = pending[~ok]
            if pending.size == 0:
                break
            step[pending] *= 0.5
        s = x_new - x[idx]
        y = g_new - gi
        sy = np.einsum("sk,sk->s", s, y)
        update = accepted & (sy > 1e-12 * np.einsum("sk,sk->s", y, y))
        u = idx[update]
        s_hist[u] = np.roll(s_hist[u], -1, axis=1)
        y_hist[u] = np.roll(y_hist[u], -1, axis=1)
        rho[u] = np.roll(rho[u], -1, axis=1)
        s_hist[u, -1], y_hist[u, -1], rho[u, -1] = s[update], y[update], 1.0 / sy[update]
        decrease = f[idx] - f_new
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        done = (~accepted | (np.abs(g_new).max(axis=1) <= gtol)
                | (decrease <= ftol * np.maximum(np.abs(f_new), 1e-300)))
        active[idx[done]] = False
    return x, f


def _fixed_theta(fixed: Mapping[str, float] | None) -> dict[int, float]:
    """Map user-facing fixed values (E, A, B, alpha, beta) onto θ indices (log for E, A, B)."""
    out: dict[int, float] = {}
    for key, value in (fixed or {}).items():
        if key not in _THETA_INDEX:
            raise ValueError(f"cannot fix {key!r}; choose from {sorted(_THETA_INDEX)}")
        v = float(_array(f"fixed[{key!r}]", value, positive=key in ("E", "A", "B")))
        out[_THETA_INDEX[key]] = math.log(v) if key in ("E", "A", "B") else v
    if len(out) == 5:
        raise ValueError("all five parameters are fixed; nothing left to fit")
    return out


def _theta_to_law(theta: np.ndarray) -> ChinchillaLaw:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


@dataclass(frozen=True)
class _Problem:
    """The Chinchilla objective as a function of the free entries of θ; fixed entries stay at `template`."""

    data: _LawData
    free: list[int]
    template: np.ndarray

    def full(self, x_free: np.ndarray) -> np.ndarray:
        theta = np.broadcast_to(self.template, (x_free.shape[0], 5)).copy()
        theta[:, self.free] = x_free
        return theta

    def batch_fun(self, weights: np.ndarray | None = None
                  ) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """fun(x_free, rows) → (objective, gradient); `weights` (members, points) gives member j row rows[j]."""
        data = self.data if weights is None else replace(self.data, weights=weights)
        chunk = max(1, 2 ** 17 // data.log_n.size)
        work = _workspace(chunk, data.log_n.size)  # one set of buffers for every call of this function

        def fun(x_free: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            fs, gs = [], []
            for lo in range(0, x_free.shape[0], chunk):
                f_c, g_c = _objective(self.full(x_free[lo:lo + chunk]), data, rows[lo:lo + chunk], work)
                fs.append(f_c)
                gs.append(g_c[:, self.free])
            return np.concatenate(fs), np.concatenate(gs)

        return fun


def _problem(n: np.ndarray, d: np.ndarray, ell: np.ndarray, loss_fn: str, huber_delta: float, expectile: float,
             fixed: Mapping[str, float] | None) -> _Problem:
    fixed_theta = _fixed_theta(fixed)
    template = np.zeros(5)
    for i, v in fixed_theta.items():
        template[i] = v
    data = _LawData(np.log(n), np.log(d), ell, np.log(ell), np.ones(n.size), loss_fn, float(huber_delta),
                    float(expectile))
    return _Problem(data, [i for i in range(5) if i not in fixed_theta], template)


_POLISH_RTOL = 1e-10
_POLISH_MAX_ITER = 2000


def _polish(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], x_start: np.ndarray,
            row: int = 0) -> tuple[np.ndarray, float, bool]:
    """Refine batch member `row` from x_start with scipy's L-BFGS-B: (x, objective, converged).

    Converged: a second L-BFGS-B run, restarted from the first one's result with a fresh history, lowers the
    objective by no more than `_POLISH_RTOL` relative. (A gradient test does not work here: the fit is so
    ill-conditioned, α against a, β against b, that a gradient far from zero can sit at the optimum.)
    """
    rows = np.array([row])

    def run(x: np.ndarray):
        return minimize(lambda v: tuple(a[0] for a in fun(v[None, :], rows)), x, jac=True, method="L-BFGS-B",
                        options={"maxiter": _POLISH_MAX_ITER, "ftol": 1e-15, "gtol": 1e-12})

    first = run(x_start)
    second = run(first.x)
    f1, f2 = float(first.fun), float(second.fun)
    converged = bool(np.isfinite(f2) and f1 - f2 <= _POLISH_RTOL * abs(f2) and second.nit < _POLISH_MAX_ITER)
    return (second.x, f2, converged) if f2 <= f1 else (first.x, f1, converged)


class UnidentifiedFitWarning(UserWarning):
    """A Chinchilla fit reached parameters its data cannot pin down (`ChinchillaFit.unidentified` names them)."""


_UNIDENTIFIED_SHARE = 1e-3
"""A term of the law is unidentified when it stays below this share of the loss at every point (E: of the smallest
loss), or when it varies by less than this across the data (log-range of N or D times its exponent)."""


def _unidentified_terms(law: ChinchillaLaw, n: np.ndarray, d: np.ndarray, ell: np.ndarray,
                        fixed: Mapping[str, float]) -> tuple[tuple[str, ...], list[str]]:
    """(free parameter names the data do not identify, one reason each term) for a fitted law."""
    names: list[str] = []
    reasons: list[str] = []
    if "E" not in fixed and law.E < _UNIDENTIFIED_SHARE * ell.min():
        names.append("E")
        reasons.append(f"E = {law.E:.3g} is below {_UNIDENTIFIED_SHARE:g} of the smallest loss ({ell.min():.4g}): "
                       "the loss never flattens")
    with np.errstate(divide="ignore"):
        log_terms = np.stack([math.log(law.A) - law.alpha * np.log(n), math.log(law.B) - law.beta * np.log(d),
                              np.full(n.size, math.log(law.E))])
    share = np.exp(log_terms - np.logaddexp.reduce(log_terms, axis=0))  # each term's share of the fitted loss
    for k, (coef, power, x, symbol) in enumerate((("A", "alpha", n, "N"), ("B", "beta", d, "D"))):
        span = abs(getattr(law, power)) * float(np.log(x.max() / x.min()))
        if share[k].max() < _UNIDENTIFIED_SHARE:
            why = f"{coef}/{symbol}^{power} is below {_UNIDENTIFIED_SHARE:g} of the loss at every point"
        elif span < _UNIDENTIFIED_SHARE:
            why = f"{coef}/{symbol}^{power} is constant over the data ({power}·Δlog {symbol} = {span:.2g}), like E"
        else:
            continue
        free = [name for name in (coef, power) if name not in fixed]
        if free:
            names += free
            reasons.append(why)
    return tuple(names), reasons


def fit_chinchilla(
    n_params: Any,
    n_tokens: Any,
    loss: Any,
    *,
    loss_fn: str = "huber",
    huber_delta: float = 1e-3,
    expectile: float = 0.05,
    fixed: Mapping[str, float] | None = None,
    starts: str | int | np.ndarray = "full",
    n_polish: int = 3,
    n_bootstrap: int = 0,
    run_ids: Any = None,
    seed: int = 0,
    ci_level: float = 0.95,
    ci_method: str = "percentile",
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^α + B/D^β as in Hoffmann et al. (approach 3): `fit = fit_chinchilla(N, D, L)`.

    The result is a `ChinchillaFit`; its law is `fit.law` (`fit.law.E`, `fit.law.alpha`), and
    `fit.predict(N, D)` gives the fitted loss in nats/token.

    Parameters θ = (a, b, e, α, β), A = e^a, B = e^b, E = e^e, and the law in log space
    log L̂ = logsumexp(a − α log N, b − β log D, e). `loss_fn`:
      - "huber" (Hoffmann): sum over points of Huber_δ(log L − log L̂), δ = `huber_delta` (1e-3);
      - "least_squares": sum of (L − L̂)² on the raw loss;
      - "lower_envelope": sum of |τ − 1[r < 0]|·r² with r = log L − log L̂ and τ = `expectile`; points
        below the curve cost (1 − τ)/τ times more, so a small τ tracks the lower envelope of the data.
    `fixed` pins parameters by their natural names, e.g. {"alpha": 0.34} or {"E": 1.69}.

    Unidentified terms: when the fitted floor E is below 1e-3 of the smallest loss (the data never flatten), or
    a term A/N^α or B/D^β stays below 1e-3 of the loss at every point or varies by less than 1e-3 across the
    data (then it trades off with E), the data do not pin those parameters down; `fit.unidentified` names them
    (e.g. ("E",)) and an `UnidentifiedFitWarning` says why. Fix them (`fixed`) or add points that show the term.

    Optimiser: L-BFGS from every point of Hoffmann's grid (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
    a, b ∈ {0, 5, …, 25}; 4500 starts, fewer when parameters are fixed) with the analytic gradient.
    **decision:** the grid is run as one vectorised batch (an L-BFGS with Armijo backtracking over all
    starts at once), then the best `n_polish` distinct results are refined with scipy's L-BFGS-B, instead of
    one scipy L-BFGS-B call per start. `benchmarks/bench_chinchilla_fit.py` times the two side by side on the
    same grid and objective: on the project's 2-core CPU, one thread, 240 points, 6.1 s for the full grid vs
    52 s for the per-start baseline (8.6×; benchmarks/RESULTS.md). `starts` may also be an int M (the M grid
    points with the lowest initial objective) or an array of θ rows (a, b, e, α, β).

    Bootstrap (`n_bootstrap` > 0): `bootstrap_chinchilla(fit, n_bootstrap, ...)` on the result (see there);
    `ci_method` is "percentile" (default) or "basic".
    """
    n, d, ell = _vectors(n_params=(n_params, True), n_tokens=(n_tokens, True), loss=(loss, True))
    if loss_fn not in _LOSSES:
        raise ValueError(f"loss_fn must be one of {_LOSSES}; got {loss_fn!r}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0; got {huber_delta!r}")
    if not 0 < expectile < 1:
        raise ValueError(f"expectile must be in (0, 1); got {expectile!r}")
    if int(n_polish) != n_polish or n_polish < 0:
        raise ValueError(f"n_polish must be a non-negative integer; got {n_polish!r}")
    _check_ci_args(n_bootstrap, ci_level, ci_method)
    runs = _point_run_ids(run_ids, n.size)
    problem = _problem(n, d, ell, loss_fn, huber_delta, expectile, fixed)
    free = problem.free
    if n.size < len(free):
        raise ValueError(f"need at least {len(free)} points to fit {len(free)} free parameters; got {n.size}")
    fun = problem.batch_fun()
    grid = np.array(list(itertools.product(*[_START_GRID[i] for i in free])))
    if isinstance(starts, str):
        if starts != "full":
            raise ValueError(f"starts must be 'full', an int, or an array of θ rows; got {starts!r}")
        x0 = grid
    elif np.ndim(starts) == 0:
        m = int(starts)
        if m < 1:
            raise ValueError(f"starts must be >= 1; got {starts!r}")
        f0, _ = fun(grid, np.arange(len(grid)))
        x0 = grid[np.argsort(f0, kind="stable")[:m]]
    else:
        given = _array("starts", starts)
        if given.ndim != 2 or given.shape[1] != 5:
            raise ValueError(f"starts array must have shape (S, 5) of (a, b, e, alpha, beta); got {given.shape}")
        x0 = given[:, free]
    x, f = _batched_lbfgs(fun, x0)

    optima: list[tuple[float, np.ndarray]] = [(float(np.min(f)), x[np.argmin(f)])]
    seen: list[np.ndarray] = []
    for i in np.argsort(f, kind="stable"):
        if len(seen) >= n_polish or not np.isfinite(f[i]):
            break
        if any(np.allclose(x[i], s, rtol=1e-2, atol=1e-3) for s in seen):  # same basin as one already refined
            continue
        seen.append(x[i])
        xr, fr, _ = _polish(fun, x[i])
        optima.append((fr, xr))
    optima.sort(key=lambda item: item[0])
    best_f, best_x = optima[0]
    if not np.isfinite(best_f):
        raise ValueError("the fit diverged from every start; check that losses are in nats and N, D are counts")
    distinct: list[np.ndarray] = []
    for fo, xo in optima:
        if np.isfinite(fo) and not any(np.allclose(xo, s, rtol=1e-4, atol=1e-6) for s in distinct):
            distinct.append(xo)
    fit = ChinchillaFit(
        law=_theta_to_law(problem.full(best_x[None, :])[0]), loss=loss_fn, objective=best_f, n_points=int(n.size),
        n_starts=int(len(x0)), fixed={key: float(v) for key, v in (fixed or {}).items()},
        huber_delta=float(huber_delta), expectile=float(expectile), n_params=n, n_tokens=d, loss_nats=ell,
        run_ids=runs, local_optima=problem.full(np.array(distinct)),
    )
    fit.unidentified, reasons = _unidentified_terms(fit.law, n, d, ell, fit.fixed)
    if reasons:
        warnings.warn(f"fit_chinchilla: the data do not identify {', '.join(fit.unidentified)} ({'; '.join(reasons)});"
                      " fix them (e.g. fixed={'E': ...}) or add points that show the term", UnidentifiedFitWarning,
                      stacklevel=2)
    if n_bootstrap:
        return bootstrap_chinchilla(fit, int(n_bootstrap), seed=seed, ci_level=ci_level, ci_method=ci_method)
    return fit


def _point_run_ids(run_ids: Any, n_points: int) -> np.ndarray | None:
    if run_ids is None:
        return None
    runs = np.asarray(run_ids)
    if runs.shape != (n_points,):
        raise ValueError(f"run_ids must have one id per point ({n_points}); got shape {runs.shape}")
    return runs


def bootstrap_chinchilla(
    fit: ChinchillaFit,
    n_bootstrap: int = 1000,
    *,
    run_ids: Any = None,
    seed: int = 0,
    ci_level: float = 0.95,
    ci_method: str = "percentile",
) -> ChinchillaFit:
    """Bootstrap intervals for an existing Chinchilla fit, without re-running its start grid.

    Resamples the fit's points, or whole runs when `run_ids` are given (default: the fit's own), and refits
    each resample to convergence: a batched L-BFGS from each of the fit's distinct local optima (the full
    data's optimum first), then scipy's L-BFGS-B from the best. Each row of the returned `bootstrap` says
    whether its refit `converged` (a restarted L-BFGS-B lowers its objective by at most 1e-10 relative);
    the intervals at `ci_level` use the converged rows only.
    `ci_method`: "percentile" (default) or "basic" (reverse percentile, 2·θ̂ − the percentile bounds).
    Returns a copy of `fit` with `ci`, `ci_level`, `ci_method`, `bootstrap` and `bootstrap_counts` set.
    """
    import pandas as pd

    _check_ci_args(n_bootstrap, ci_level, ci_method)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1; got {n_bootstrap!r}")
    if fit.n_params is None or fit.local_optima is None:
        raise ValueError("this ChinchillaFit holds no data to resample; make it with fit_chinchilla")
    runs = fit.run_ids if run_ids is None else _point_run_ids(run_ids, fit.n_points)
    groups = _run_groups(np.arange(fit.n_points) if runs is None else runs)
    rng = np.random.default_rng(seed)
    n_boot = int(n_bootstrap)
    counts = np.zeros((n_boot, fit.n_points))
    for i in range(n_boot):
        for k in rng.integers(len(groups), size=len(groups)):
            counts[i, groups[k]] += 1.0

    problem = _problem(fit.n_params, fit.n_tokens, fit.loss_nats, fit.loss, fit.huber_delta, fit.expectile,
                       fit.fixed)
    starts = fit.local_optima[:, problem.free]
    n_starts = len(starts)
    xb, fb = _batched_lbfgs(problem.batch_fun(np.repeat(counts, n_starts, axis=0)),
                            np.tile(starts, (n_boot, 1)), max_iter=300, gtol=1e-10, ftol=1e-12)
    fb = np.where(np.isfinite(fb), fb, np.inf).reshape(n_boot, n_starts)
    xb = xb.reshape(n_boot, n_starts, -1)[np.arange(n_boot), np.argmin(fb, axis=1)]
    fun = problem.batch_fun(counts)
    objective, converged = np.empty(n_boot), np.empty(n_boot, bool)
    for i in range(n_boot):
        xb[i], objective[i], converged[i] = _polish(fun, xb[i], i)
    tb = problem.full(xb)
    table = pd.DataFrame({"E": np.exp(tb[:, 2]), "A": np.exp(tb[:, 0]), "B": np.exp(tb[:, 1]), "alpha": tb[:, 3],
                          "beta": tb[:, 4], "objective": objective, "converged": converged})
    estimate = {name: getattr(fit.law, name) for name in _PARAM_NAMES}
    ci = {name: _bootstrap_ci(estimate[name], table.loc[converged, name].to_numpy(), ci_level, ci_method)
          for name in _PARAM_NAMES}
    return replace(fit, ci=ci, ci_level=float(ci_level), ci_method=ci_method, bootstrap=table,
                   bootstrap_counts=counts, run_ids=runs)


# ----------------------------------------------------------------------------------------------------------------------
# 4. Hitchhiker's guide (Choshen et al.): fit on checkpoints, judge by ARE on the largest run's tail
# ----------------------------------------------------------------------------------------------------------------------

_LAW_COLUMNS = ("run_id", "params", "tokens", "loss")


def absolute_relative_error(loss_true: Any, loss_pred: Any) -> float:
    """ARE = mean |L − L̂| / L (a fraction; ≈ 0.04 is the practical floor from seed noise)."""
    t, p = _vectors(loss_true=(loss_true, True), loss_pred=(loss_pred, False))
    return float(np.mean(np.abs(t - p) / t))


def drop_early_checkpoints(df: Any, min_tokens: float = 1e10):
    """Rows with tokens > min_tokens (Choshen et al. drop checkpoints at ≤ 1e10 tokens; tune for small runs)."""
    _require_columns(df, ["tokens"], "drop_early_checkpoints")
    if not min_tokens >= 0:
        raise ValueError(f"min_tokens must be >= 0; got {min_tokens!r}")
    return df[df["tokens"] > min_tokens]


def split_target(df: Any, target_fraction: float = 0.7, include_target_prefix: bool = False):
    """Split checkpoints into (fit rows, target rows, target run id).

    The target run is the largest (most params; ties: most tokens); its checkpoints past `target_fraction`
    of its final token count are the target. The fit rows are all other runs, plus the target run's earlier
    checkpoints when `include_target_prefix`.
    """
    _require_columns(df, _LAW_COLUMNS, "split_target")
    if not 0 <= target_fraction < 1:
        raise ValueError(f"target_fraction must be in [0, 1); got {target_fraction!r}")
    if df["run_id"].nunique() < 2 and not include_target_prefix:
        raise ValueError("need at least two runs: the largest is the target, the others are fitted")
    sizes = df.groupby("run_id").agg(params=("params", "max"), tokens=("tokens", "max"))
    target = sizes.sort_values(["params", "tokens"], kind="stable").index[-1]
    in_target = (df["run_id"] == target).to_numpy()
    tail = in_target & (df["tokens"] > target_fraction * sizes.loc[target, "tokens"]).to_numpy()
    fit_rows = ~in_target | (in_target & ~tail) if include_target_prefix else ~in_target
    return df[fit_rows], df[tail], target


@dataclass
class LawEvaluation:
    """A law fitted on the fit split and its ARE on the target run's tail (Choshen et al.)."""

    are: float
    fit: ChinchillaFit
    target_run_id: Any
    n_fit_points: int
    n_target_points: int
    predicted_loss: np.ndarray = field(repr=False)


def evaluate_law_fit(df: Any, *, min_tokens: float = 1e10, target_fraction: float = 0.7,
                     include_target_prefix: bool = False, **fit_kwargs: Any) -> LawEvaluation:
    """Fit the Chinchilla form on early-filtered checkpoints and report ARE on the largest run's tail.

    `df` has columns run_id, params, tokens, loss (one row per checkpoint); `fit_kwargs` go to
    `fit_chinchilla` (e.g. loss_fn, fixed exponents borrowed from another family).
    """
    fit_df, target_df, target = split_target(df, target_fraction, include_target_prefix)
    fit_df = drop_early_checkpoints(fit_df, min_tokens)
    if len(target_df) == 0:
        raise ValueError("the target run has no checkpoints past target_fraction of its training")
    if len(fit_df) == 0:
        raise ValueError(f"no checkpoints left to fit after dropping those at <= {min_tokens:g} tokens")
    fit = fit_chinchilla(fit_df["params"].to_numpy(), fit_df["tokens"].to_numpy(), fit_df["loss"].to_numpy(),
                         **fit_kwargs)
    pred = np.asarray(fit.predict(target_df["params"].to_numpy(), target_df["tokens"].to_numpy()), float)
    return LawEvaluation(are=absolute_relative_error(target_df["loss"].to_numpy(), pred), fit=fit,
                         target_run_id=target, n_fit_points=len(fit_df), n_target_points=len(target_df),
                         predicted_loss=pred)


# ----------------------------------------------------------------------------------------------------------------------
# 5. Niu et al. 2024 (associative memory): qualitative diagnostics, never predictions
# ----------------------------------------------------------------------------------------------------------------------

_NIU_LABEL = "qualitative diagnostic (Niu et al. 2024, associative-memory theory), not a prediction"


@dataclass(frozen=True)
class NiuDiagnostic:
    """A labelled qualitative check against Niu et al.'s theory; `within` says whether the value is inside it."""

    name: str
    value: float
    reference: float
    within: bool
    message: str
    label: str = _NIU_LABEL


def niu_cross_entropy_floor(loss_nats: float, floor_nats: float = 1.0) -> NiuDiagnostic:
    """Compare a mean cross-entropy (nats/token) with Niu et al.'s ≈ 1 nat lower bound.

    Below the floor means their assumptions (well-separated patterns, their energy model) do not describe the
    data, as for synthetic knowledge text; it is not an error.
    """
    loss = float(_array("loss_nats", loss_nats, positive=True))
    floor = float(_array("floor_nats", floor_nats, positive=True))
    within = loss >= floor
    message = (f"loss {loss:.3g} nats is at or above the ~{floor:g} nat floor" if within else
               f"loss {loss:.3g} nats is below the ~{floor:g} nat floor: the data fall outside the theory's "
               "assumptions")
    return NiuDiagnostic("cross_entropy_floor", loss, floor, within, message)


def niu_params_vs_data_squared(n_params: float, dataset_size: float) -> NiuDiagnostic:
    """N / D² for Niu et al.'s N = O(D²) relation for memorising well-separated patterns.

    The O(·) hides constants, so only orders of magnitude are meaningful; `within` is N ≤ D².
    """
    n = float(_array("n_params", n_params, positive=True))
    d = float(_array("dataset_size", dataset_size, positive=True))
    ratio = n / d ** 2
    message = f"N/D^2 = {ratio:.3g} (log10 {math.log10(ratio):.2f}); theory: N = O(D^2), constants unknown"
    return NiuDiagnostic("params_vs_data_squared", ratio, 1.0, ratio <= 1.0, message)


# ------------------------------------------------------------------------- memorization plateau (Morris 2025)
@dataclass
class MemorizationPlateau:
    """Memorization capacity from one model's runs over growing data: memorized ≈ softmin(data, C).

    ``capacity_bits`` C (bits) with its bootstrap interval ``ci`` (``ci_level``, ``ci_method``); ``sharpness`` k of
    the soft minimum m(D) = (D^-k + C^-k)^(-1/k) (large k: a sharp corner); ``bits_per_param`` = C / ``num_params``
    when a parameter count is given. ``data_bits`` and ``memorized_bits`` are the fitted points.
    """

    capacity_bits: float
    sharpness: float
    ci: tuple[float, float] | None
    ci_level: float
    ci_method: str
    num_params: int | None
    data_bits: np.ndarray
    memorized_bits: np.ndarray

    @property
    def bits_per_param(self) -> float:
        return self.capacity_bits / self.num_params if self.num_params else math.nan

    def __str__(self) -> str:
        ci = f" ({100 * self.ci_level:.0f}% CI {self.ci[0]:,.0f}-{self.ci[1]:,.0f})" if self.ci else ""
        per_param = f" = {self.bits_per_param:.2f} bits/param" if self.num_params else ""
        return f"plateau {self.capacity_bits:,.0f} bits{ci}{per_param}"

    def predict(self, data_bits: Any) -> float | np.ndarray:
        """Memorized bits the fit expects for sets of ``data_bits`` bits."""
        d = np.asarray(data_bits, dtype=float)
        return _scalar_or_array(_softmin(d, self.capacity_bits, self.sharpness))


def _softmin(d: np.ndarray, c: float, k: float) -> np.ndarray:
    """(d^-k + c^-k)^(-1/k), computed in logs (no overflow for large d, c or k)."""
    return np.exp(-np.logaddexp(-k * np.log(d), -k * np.log(c)) / k)


def _fit_softmin(d: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """Least squares on log memorized bits over (log C, log k), from a few starts."""
    from scipy.optimize import least_squares

    keep = m > 0
    d, m = d[keep], m[keep]
    best = None
    for c0 in (m.max(), 2 * m.max()):
        for k0 in (1.0, 4.0):
            res = least_squares(lambda t: np.log(_softmin(d, math.exp(t[0]), math.exp(t[1]))) - np.log(m),
                                x0=[math.log(c0), math.log(k0)], bounds=([-50, math.log(0.1)], [80, math.log(100)]))
            if best is None or res.cost < best.cost:
                best = res
    return math.exp(best.x[0]), math.exp(best.x[1])


def fit_memorization_plateau(data_bits: Any, memorized_bits: Any, *, num_params: int | None = None,
                             n_bootstrap: int = 200, ci_level: float = 0.95, ci_method: str = "percentile",
                             seed: int = 0) -> MemorizationPlateau:
    """Fit the plateau of memorized bits against data size for one model (bits in, bits out).

    Needs points on both sides of the corner (some data sets smaller than the capacity, some larger); with only
    rising points the plateau is not determined and a ValueError says so. The interval bootstraps the points.
    """
    d, m = _vectors(3, data_bits=(data_bits, True), memorized_bits=(memorized_bits, False))
    _check_ci_args(n_bootstrap, ci_level, ci_method)
    if (m <= 0).sum() > len(m) - 3:
        raise ValueError("fewer than 3 runs memorized anything: nothing to fit")
    order = np.argsort(d)
    if m[order][-1] > 0.9 * d[order][-1]:
        raise ValueError("the largest data set was still memorized almost entirely: the plateau is beyond the data "
                         "(add runs with more data than the model can hold)")
    capacity, k = _fit_softmin(d, m)
    ci = None
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(n_bootstrap):
            rows = rng.integers(0, len(d), len(d))
            if len(np.unique(d[rows])) < 3 or (m[rows] > 0).sum() < 3:
                continue
            samples.append(_fit_softmin(d[rows], m[rows])[0])
        ci = _bootstrap_ci(capacity, np.array(samples), ci_level, ci_method)
    return MemorizationPlateau(capacity, k, ci, ci_level, ci_method, num_params, d, m)
