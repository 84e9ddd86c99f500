"""Chinchilla fit over Hoffmann's start grid: `fit_chinchilla` vs. one scipy L-BFGS-B call per start, in one run.

Both sides minimise the same objective (the Huber loss, δ = 1e-3, on log loss; asserted equal at the starts)
from the same starts (Hoffmann's 4,500-point grid) on the same synthetic points, and both report the best
optimum they found. The baseline is the plain implementation: `scipy.optimize.minimize(method="L-BFGS-B")`
with the analytic gradient, called once per start, keeping the best. `fit_chinchilla` runs the grid as one
vectorised L-BFGS batch, then polishes the best 3 distinct results with scipy. BLAS is limited to one thread,
so the comparison is one core against one core. Repetitions are interleaved after a warm-up; medians reported.

    python benchmarks/bench_chinchilla_fit.py            # 240 points (as many as Besiroglu et al. fit), full grid
    python benchmarks/bench_chinchilla_fit.py --quick    # 300 of the grid's starts, one repetition
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="every 15th start of the grid (300), 1 repeat")
    args = parser.parse_args()

    grid = np.array(list(itertools.product(*scaling._START_GRID)))  # Hoffmann's grid, rows (a, b, e, α, β)
    starts = grid[::15] if args.quick else grid
    repeats = 1 if args.quick else args.repeats
    n, d, loss = synthetic_points(args.points)

    with np.errstate(all="ignore"):  # far starts overflow on their way in, on both sides
        ours = scaling._problem(n, d, loss, "huber", 1e-3, 0.05, None).batch_fun()(starts, np.arange(len(starts)))[0]
        plain = np.array([huber_objective(x, np.log(n), np.log(d), np.log(loss))[0] for x in starts])
        finite = np.isfinite(ours) & np.isfinite(plain)
        assert (np.isfinite(ours) == np.isfinite(plain)).all()
        np.testing.assert_allclose(ours[finite], plain[finite], rtol=1e-10)  # the same objective on both sides

        package_fit(n, d, loss, starts[:50])  # warm-up
        scipy_per_start(n, d, loss, starts[:20])
        times: dict[str, list[float]] = {"fit_chinchilla": [], "scipy L-BFGS-B per start": []}
        results = {}
        for _ in range(repeats):
            for name, run in (("fit_chinchilla", package_fit), ("scipy L-BFGS-B per start", scipy_per_start)):
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
    ratio = med["scipy L-BFGS-B per start"] / med["fit_chinchilla"]
    print(f"\nratio scipy per start / fit_chinchilla: **{ratio:.1f}x**")


if __name__ == "__main__":
    main()
