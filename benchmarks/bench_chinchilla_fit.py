"""Chinchilla fit over Hoffmann's start grid: `fit_chinchilla` vs. one scipy L-BFGS-B call per start, in one run.

Both sides minimise the same objective (the Huber loss, δ = 1e-3, on log loss; asserted equal at the starts)
from the same starts (Hoffmann's 4,500-point grid) on the same synthetic points, and both report the best
optimum they found. The baseline is the plain implementation: `scipy.optimize.minimize(method="L-BFGS-B")`
with the analytic gradient, called once per start, keeping the best. `fit_chinchilla` runs the grid as one
vectorised L-BFGS batch, then polishes the best 3 distinct results with scipy. BLAS is limited to one thread,
so the comparison is one core against one core. Repetitions are interleaved after a warm-up; medians reported.

A third row runs `fit_chinchilla` with the objective as it was before issue 21 (`allocating_objective`: a fresh
(starts × points) temporary for every intermediate, ~1 MB each at 5,000 points, handed back to the OS and faulted
in again at every chunk) in place of the current one (buffers made once per problem); everything else is the same
code, so the two rows differ only by those temporaries. The target: 5,000 points in under 10 s.

    python benchmarks/bench_chinchilla_fit.py            # 240 points (as many as Besiroglu et al. fit), full grid
    python benchmarks/bench_chinchilla_fit.py --quick    # 300 of the grid's starts, one repetition
    python benchmarks/bench_chinchilla_fit.py --points 5000 --no-scipy   # the objective's buffers vs temporaries
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import logsumexp, softmax  # noqa: E402

from hf_capacity import scaling  # noqa: E402
from hf_capacity.scaling import chinchilla_optimizer  # noqa: E402


def synthetic_points(n_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss nats) from `BESIROGLU_2024` over Chinchilla's range (N 5.7e7–1.6e10, D 2.5e8–3.2e11),
    with 1% multiplicative noise (about the accuracy of the digitised losses)."""
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(5.7e7), np.log(1.6e10), n_points))
    d = np.exp(rng.uniform(np.log(2.5e8), np.log(3.2e11), n_points))
    return n, d, scaling.BESIROGLU_2024.predict(n, d) * np.exp(rng.normal(0.0, 0.01, n_points))


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                    delta: float = 1e-3) -> tuple[float, np.ndarray]:
    """Σ Huber_δ(log L − logsumexp(a − α log N, b − β log D, e)) and gradient in θ = (a, b, e, α, β)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full(log_n.size, e)])
    r = log_loss - logsumexp(terms, axis=0)
    rho = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    share = softmax(terms, axis=0)  # ∂ logsumexp / ∂(each term)
    c = -np.clip(r, -delta, delta)
    grad = np.array([(c * share[0]).sum(), (c * share[1]).sum(), (c * share[2]).sum(),
                     -(c * share[0] * log_n).sum(), -(c * share[1] * log_d).sum()])
    f = float(rho.sum())
    return (f, grad) if np.isfinite(f) and np.isfinite(grad).all() else (np.inf, np.zeros(5))


def scipy_per_start(n: np.ndarray, d: np.ndarray, loss: np.ndarray, starts: np.ndarray) -> tuple[float, np.ndarray]:
    """The baseline: L-BFGS-B from each start (scipy's default tolerances), keeping the lowest objective."""
    args = (np.log(n), np.log(d), np.log(loss))
    best_f, best_x = np.inf, starts[0]
    for x0 in starts:
        res = minimize(huber_objective, x0, args=args, jac=True, method="L-BFGS-B")
        if np.isfinite(res.fun) and res.fun < best_f:
            best_f, best_x = float(res.fun), res.x
    return best_f, best_x


def package_fit(n: np.ndarray, d: np.ndarray, loss: np.ndarray, starts: np.ndarray) -> tuple[float, np.ndarray]:
    fit = scaling.fit_chinchilla(n, d, loss, starts=starts)
    law = fit.law
    return fit.objective, np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])


def allocating_objective(theta: np.ndarray, data, rows: np.ndarray | None = None, work=None):
    """`chinchilla_optimizer.chinchilla_objective` before issue 21, verbatim but for the signature: every
    intermediate a new array."""
    with np.errstate(over="ignore", invalid="ignore"):
        t1 = theta[:, 0:1] - theta[:, 3:4] * data.log_n
        t2 = theta[:, 1:2] - theta[:, 4:5] * data.log_d
        t3 = np.broadcast_to(theta[:, 2:3], t1.shape)
        top = np.maximum(np.maximum(t1, t2), t3)
        e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(t3 - top)
        total = e1 + e2 + e3
        lse = top + np.log(total)
        w1, w2, w3 = e1 / total, e2 / total, e3 / total
        r = data.log_loss - lse  # Huber only (what this benchmark fits)
        ar = np.abs(r)
        rho = np.where(ar <= data.delta, 0.5 * r * r, data.delta * (ar - 0.5 * data.delta))
        d_lse = -np.clip(r, -data.delta, data.delta)
        weights = data.weights if data.weights.ndim == 1 else data.weights[rows]
        c = weights * d_lse
        f = (weights * rho).sum(axis=1)
        grad = np.stack([(c * w1).sum(1), (c * w2).sum(1), (c * w3).sum(1),
                         -(c * w1 * data.log_n).sum(1), -(c * w2 * data.log_d).sum(1)], axis=1)
        bad = ~np.isfinite(f) | ~np.isfinite(grad).all(axis=1)
        f[bad] = np.inf
        grad[bad] = 0.0
        return f, grad


def allocating_package_fit(n: np.ndarray, d: np.ndarray, loss: np.ndarray, starts: np.ndarray
                           ) -> tuple[float, np.ndarray]:
    """`package_fit` with `allocating_objective` swapped in for the current objective (restored after)."""
    current = chinchilla_optimizer.chinchilla_objective
    chinchilla_optimizer.chinchilla_objective = allocating_objective
    try:
        return package_fit(n, d, loss, starts)
    finally:
        chinchilla_optimizer.chinchilla_objective = current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="every 15th start of the grid (300), 1 repeat")
    parser.add_argument("--no-scipy", action="store_true",
                        help="leave out the scipy-per-start row (slow at 5,000 points)")
    args = parser.parse_args()

    grid = np.array(list(itertools.product(*chinchilla_optimizer.START_GRID)))  # Hoffmann's grid, rows (a, b, e, α, β)
    starts = grid[::15] if args.quick else grid
    repeats = 1 if args.quick else args.repeats
    n, d, loss = synthetic_points(args.points)

    with np.errstate(all="ignore"):  # far starts overflow on their way in, on both sides
        problem = chinchilla_optimizer.make_problem(n, d, loss, "huber", 1e-3, 0.05, None)
        ours = problem.batch_fun()(starts, np.arange(len(starts)))[0]
        plain = np.array([huber_objective(x, np.log(n), np.log(d), np.log(loss))[0] for x in starts])
        finite = np.isfinite(ours) & np.isfinite(plain)
        assert (np.isfinite(ours) == np.isfinite(plain)).all()
        np.testing.assert_allclose(ours[finite], plain[finite], rtol=1e-10)  # the same objective on both sides

        before = problem.data
        some = slice(0, len(starts), max(1, len(starts) // 50))  # the same numbers before and now
        np.testing.assert_array_equal(allocating_objective(starts[some], before)[0], ours[some])

        variants = {"fit_chinchilla": package_fit, "fit_chinchilla, allocating objective (before issue 21)":
                    allocating_package_fit, "scipy L-BFGS-B per start": scipy_per_start}
        if args.no_scipy:
            del variants["scipy L-BFGS-B per start"]
        for name, run in variants.items():  # warm-up
            run(n, d, loss, starts[:20])
        times: dict[str, list[float]] = {name: [] for name in variants}
        results = {}
        for _ in range(repeats):
            for name, run in variants.items():
                t0 = time.perf_counter()
                results[name] = run(n, d, loss, starts)
                times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.points} synthetic points (BESIROGLU_2024 law, 1% noise), {len(starts):,} starts, Huber δ=1e-3; "
          f"BLAS threads 1; median of {repeats}; {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}\n")
    print("| fit | median s | best objective | α | β |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in med.items():
        f, theta = results[name]
        print(f"| {name} | {seconds:.2f} | {f:.9e} | {theta[3]:.4f} | {theta[4]:.4f} |")
    before = med["fit_chinchilla, allocating objective (before issue 21)"] / med["fit_chinchilla"]
    print(f"\nratio allocating objective / fit_chinchilla: **{before:.2f}x**")
    if "scipy L-BFGS-B per start" in med:
        ratio = med["scipy L-BFGS-B per start"] / med["fit_chinchilla"]
        print(f"ratio scipy per start / fit_chinchilla: **{ratio:.1f}x**")


if __name__ == "__main__":
    main()
