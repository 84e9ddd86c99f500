"""The Chinchilla form L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022): the law, its published fits, the
compute-optimal allocation, and the fit (approach 3) with its bootstrap. The optimiser is in
``chinchilla_optimizer``."""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from ..fitting import as_array, as_vectors, bootstrap_ci, check_ci_args, run_groups, scalar_or_array
from .chinchilla_optimizer import (
    LOSSES,
    PARAM_NAMES,
    START_GRID,
    batched_lbfgs,
    make_problem,
    polish,
)


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
    n = as_array("n_params", n_params, positive=True)
    d = as_array("n_tokens", n_tokens, positive=True)
    return scalar_or_array(law.E + law.A / n ** law.alpha + law.B / d ** law.beta)


def compute_optimal_allocation(compute_flops: Any, law: ChinchillaLaw = HOFFMANN_2022,
                               flops_per_param_token: float = 6.0):
    """(N_opt, D_opt) minimising E + A/N^α + B/D^β subject to C = 6·N·D (Hoffmann et al. eq. 4).

    Closed form: N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)^(α/(α+β))/G, G = (αA/(βB))^(1/(α+β)).
    """
    c = as_array("compute_flops", compute_flops, positive=True)
    k = float(as_array("flops_per_param_token", flops_per_param_token, positive=True))
    if not (law.alpha > 0 and law.beta > 0 and law.A > 0 and law.B > 0):
        raise ValueError(f"compute-optimal allocation needs A, B, alpha, beta > 0; got {law}")
    s = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / s)
    n_opt = g * (c / k) ** (law.beta / s)
    d_opt = (c / k) ** (law.alpha / s) / g
    return scalar_or_array(n_opt), scalar_or_array(d_opt)


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
        return None if self.bootstrap is None else self.bootstrap[list(PARAM_NAMES)].to_numpy()

    def predict(self, n_params: Any, n_tokens: Any) -> float | np.ndarray:
        """Fitted loss in nats/token."""
        return self.law.predict(n_params, n_tokens)

    def compute_optimal(self, compute_flops: Any, flops_per_param_token: float = 6.0):
        """(N_opt, D_opt) under the fitted law at C = 6·N·D FLOPs."""
        return self.law.compute_optimal(compute_flops, flops_per_param_token)


def _theta_to_law(theta: np.ndarray) -> ChinchillaLaw:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


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
    n, d, ell = as_vectors(n_params=(n_params, True), n_tokens=(n_tokens, True), loss=(loss, True))
    if loss_fn not in LOSSES:
        raise ValueError(f"loss_fn must be one of {LOSSES}; got {loss_fn!r}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0; got {huber_delta!r}")
    if not 0 < expectile < 1:
        raise ValueError(f"expectile must be in (0, 1); got {expectile!r}")
    if int(n_polish) != n_polish or n_polish < 0:
        raise ValueError(f"n_polish must be a non-negative integer; got {n_polish!r}")
    check_ci_args(n_bootstrap, ci_level, ci_method)
    runs = _point_run_ids(run_ids, n.size)
    problem = make_problem(n, d, ell, loss_fn, huber_delta, expectile, fixed)
    free = problem.free
    if n.size < len(free):
        raise ValueError(f"need at least {len(free)} points to fit {len(free)} free parameters; got {n.size}")
    fun = problem.batch_fun()
    grid = np.array(list(itertools.product(*[START_GRID[i] for i in free])))
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
        given = as_array("starts", starts)
        if given.ndim != 2 or given.shape[1] != 5:
            raise ValueError(f"starts array must have shape (S, 5) of (a, b, e, alpha, beta); got {given.shape}")
        x0 = given[:, free]
    x, f = batched_lbfgs(fun, x0)

    optima: list[tuple[float, np.ndarray]] = [(float(np.min(f)), x[np.argmin(f)])]
    seen: list[np.ndarray] = []
    for i in np.argsort(f, kind="stable"):
        if len(seen) >= n_polish or not np.isfinite(f[i]):
            break
        if any(np.allclose(x[i], s, rtol=1e-2, atol=1e-3) for s in seen):  # same basin as one already refined
            continue
        seen.append(x[i])
        xr, fr, _ = polish(fun, x[i])
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

    check_ci_args(n_bootstrap, ci_level, ci_method)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1; got {n_bootstrap!r}")
    if fit.n_params is None or fit.local_optima is None:
        raise ValueError("this ChinchillaFit holds no data to resample; make it with fit_chinchilla")
    runs = fit.run_ids if run_ids is None else _point_run_ids(run_ids, fit.n_points)
    groups = run_groups(np.arange(fit.n_points) if runs is None else runs)
    rng = np.random.default_rng(seed)
    n_boot = int(n_bootstrap)
    counts = np.zeros((n_boot, fit.n_points))
    for i in range(n_boot):
        for k in rng.integers(len(groups), size=len(groups)):
            counts[i, groups[k]] += 1.0

    problem = make_problem(fit.n_params, fit.n_tokens, fit.loss_nats, fit.loss, fit.huber_delta, fit.expectile,
                           fit.fixed)
    starts = fit.local_optima[:, problem.free]
    n_starts = len(starts)
    xb, fb = batched_lbfgs(problem.batch_fun(np.repeat(counts, n_starts, axis=0)),
                           np.tile(starts, (n_boot, 1)), max_iter=300, gtol=1e-10, ftol=1e-12)
    fb = np.where(np.isfinite(fb), fb, np.inf).reshape(n_boot, n_starts)
    xb = xb.reshape(n_boot, n_starts, -1)[np.arange(n_boot), np.argmin(fb, axis=1)]
    fun = problem.batch_fun(counts)
    objective, converged = np.empty(n_boot), np.empty(n_boot, bool)
    for i in range(n_boot):
        xb[i], objective[i], converged[i] = polish(fun, xb[i], i)
    tb = problem.full(xb)
    table = pd.DataFrame({"E": np.exp(tb[:, 2]), "A": np.exp(tb[:, 0]), "B": np.exp(tb[:, 1]), "alpha": tb[:, 3],
                          "beta": tb[:, 4], "objective": objective, "converged": converged})
    estimate = {name: getattr(fit.law, name) for name in PARAM_NAMES}
    ci = {name: bootstrap_ci(estimate[name], table.loc[converged, name].to_numpy(), ci_level, ci_method)
          for name in PARAM_NAMES}
    return replace(fit, ci=ci, ci_level=float(ci_level), ci_method=ci_method, bootstrap=table,
                   bootstrap_counts=counts, run_ids=runs)
