"""The optimiser behind ``fit_chinchilla``: the objective in θ = (a, b, e, α, β) (A = e^a, B = e^b, E = e^e) with
its analytic gradient for the three losses, Hoffmann's grid of starts, an L-BFGS run over many starts at once, and
scipy's L-BFGS-B to polish the best. Plain arrays in and out; the law and the fit live in ``chinchilla``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np
from scipy.optimize import minimize

from ..fitting import as_array

# The optimiser's parameter vector θ = (a, b, e, α, β) with A = e^a, B = e^b, E = e^e.
THETA_INDEX = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
START_GRID = (  # Hoffmann et al.'s grid of starts, one range per entry of θ
    np.arange(0.0, 26.0, 5.0),  # a
    np.arange(0.0, 26.0, 5.0),  # b
    np.arange(-1.0, 1.01, 0.5),  # e
    np.arange(0.0, 2.01, 0.5),  # alpha
    np.arange(0.0, 2.01, 0.5),  # beta
)
LOSSES = ("huber", "least_squares", "lower_envelope")


@dataclass(frozen=True)
class LawData:
    """Data and objective settings for the Chinchilla fit (weights: (n,) or one row per batch member)."""

    log_n: np.ndarray
    log_d: np.ndarray
    loss: np.ndarray
    log_loss: np.ndarray
    weights: np.ndarray
    kind: str
    delta: float
    expectile: float


def objective_workspace(rows: int, points: int) -> np.ndarray:
    """Buffers for `chinchilla_objective` on up to `rows` parameter rows: (7, rows, points) float64. Reused across
    calls, so an evaluation allocates no (rows, points) temporaries: freed and faulted in again from the OS at every
    chunk, those ~1 MB temporaries were most of a large fit's time (benchmarks/bench_chinchilla_fit.py)."""
    return np.empty((7, rows, points))


def chinchilla_objective(theta: np.ndarray, data: LawData, rows: np.ndarray | None = None,
                         work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Objective and gradient for a batch of θ (S, 5); `rows` picks per-member weight rows; `work`: an
    `objective_workspace` of at least S rows (default: a fresh one)."""
    if work is None:
        work = objective_workspace(theta.shape[0], data.log_n.size)
    with np.errstate(over="ignore", invalid="ignore"):  # diverging trial points become inf, rejected below
        return _objective_unguarded(theta, data, rows, work[:, :theta.shape[0]])


def _objective_unguarded(theta: np.ndarray, data: LawData, rows: np.ndarray | None,
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


MAX_STEP_LENGTH = 1e3
"""Longest first trial step of the batched L-BFGS, in θ units (e^θ overflows beyond ~709, so a longer step is never
finite): from an astronomically long direction, backtracking by halves would never reach a finite trial."""


def _row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, without overflow for entries up to ~1e308 (scaled by the row's largest)."""
    scale = np.abs(x).max(axis=1)
    unit = x / np.where(scale > 0, scale, 1.0)[:, None]
    return scale * np.sqrt(np.einsum("sk,sk->s", unit, unit))


def batched_lbfgs(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], x0: np.ndarray, *,
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
        step = np.minimum(np.where(fresh, np.minimum(1.0, 1.0 / length), 1.0), MAX_STEP_LENGTH / length)
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


def fixed_theta_entries(fixed: Mapping[str, float] | None) -> dict[int, float]:
    """Map user-facing fixed values (E, A, B, alpha, beta) onto θ indices (log for E, A, B)."""
    out: dict[int, float] = {}
    for key, value in (fixed or {}).items():
        if key not in THETA_INDEX:
            raise ValueError(f"cannot fix {key!r}; choose from {sorted(THETA_INDEX)}")
        v = float(as_array(f"fixed[{key!r}]", value, positive=key in ("E", "A", "B")))
        out[THETA_INDEX[key]] = math.log(v) if key in ("E", "A", "B") else v
    if len(out) == 5:
        raise ValueError("all five parameters are fixed; nothing left to fit")
    return out


@dataclass(frozen=True)
class Problem:
    """The Chinchilla objective as a function of the free entries of θ; fixed entries stay at `template`."""

    data: LawData
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
        work = objective_workspace(chunk, data.log_n.size)  # one set of buffers for every call of this function

        def fun(x_free: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            fs, gs = [], []
            for lo in range(0, x_free.shape[0], chunk):
                f_c, g_c = chinchilla_objective(self.full(x_free[lo:lo + chunk]), data, rows[lo:lo + chunk], work)
                fs.append(f_c)
                gs.append(g_c[:, self.free])
            return np.concatenate(fs), np.concatenate(gs)

        return fun


def make_problem(n: np.ndarray, d: np.ndarray, ell: np.ndarray, loss_fn: str, huber_delta: float, expectile: float,
                 fixed: Mapping[str, float] | None) -> Problem:
    fixed_theta = fixed_theta_entries(fixed)
    template = np.zeros(5)
    for i, v in fixed_theta.items():
        template[i] = v
    data = LawData(np.log(n), np.log(d), ell, np.log(ell), np.ones(n.size), loss_fn, float(huber_delta),
                    float(expectile))
    return Problem(data, [i for i in range(5) if i not in fixed_theta], template)


POLISH_RTOL = 1e-10
POLISH_MAX_ITER = 2000


def polish(fun: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], x_start: np.ndarray,
           row: int = 0) -> tuple[np.ndarray, float, bool]:
    """Refine batch member `row` from x_start with scipy's L-BFGS-B: (x, objective, converged).

    Converged: a second L-BFGS-B run, restarted from the first one's result with a fresh history, lowers the
    objective by no more than `POLISH_RTOL` relative. (A gradient test does not work here: the fit is so
    ill-conditioned, α against a, β against b, that a gradient far from zero can sit at the optimum.)
    """
    rows = np.array([row])

    def run(x: np.ndarray):
        return minimize(lambda v: tuple(a[0] for a in fun(v[None, :], rows)), x, jac=True, method="L-BFGS-B",
                        options={"maxiter": POLISH_MAX_ITER, "ftol": 1e-15, "gtol": 1e-12})

    first = run(x_start)
    second = run(first.x)
    f1, f2 = float(first.fun), float(second.fun)
    converged = bool(np.isfinite(f2) and f1 - f2 <= POLISH_RTOL * abs(f2) and second.nit < POLISH_MAX_ITER)
    return (second.x, f2, converged) if f2 <= f1 else (first.x, f1, converged)
