"""The memorization plateau (Morris et al. 2025): as the data a model is trained on grow, the bits it memorizes level
off at its capacity; ``fit_memorization_plateau`` finds that plateau, with a bootstrap interval. Numbers in, numbers
out (numpy and scipy only): the measurement itself is in ``memorization``. Also exported by ``hf_capacity.scaling``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fitting import as_vectors, bootstrap_ci, check_ci_args, scalar_or_array


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
        if self.ci:
            ci = f" ({100 * self.ci_level:.0f}% CI {self.ci[0]:,.0f}-{self.ci[1]:,.0f})"
        else:  # no interval: too few dataset sizes to bootstrap
            ci = f" (no interval: {len(np.unique(self.data_bits))} dataset sizes)"
        per_param = f" = {self.bits_per_param:.2f} bits/param" if self.num_params else ""
        return f"plateau {self.capacity_bits:,.0f} bits{ci}{per_param}"

    def predict(self, data_bits: Any) -> float | np.ndarray:
        """Memorized bits the fit expects for sets of ``data_bits`` bits."""
        d = np.asarray(data_bits, dtype=float)
        return scalar_or_array(_softmin(d, self.capacity_bits, self.sharpness))


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


MAX_DROP = 0.2
"""The largest fall of memorized bits from a smaller data set to a larger one that a plateau fit accepts (a
fraction of the smaller set's bits): more data past the plateau should not cost more than run-to-run noise."""


def fit_memorization_plateau(data_bits: Any, memorized_bits: Any, *, num_params: int | None = None,
                             n_bootstrap: int = 200, ci_level: float = 0.95, ci_method: str = "percentile",
                             seed: int = 0) -> MemorizationPlateau:
    """Fit the plateau of memorized bits against data size for one model (bits in, bits out).

    Needs points on both sides of the corner (some data sets smaller than the capacity, some larger); with only
    rising points the plateau is not determined and a ValueError says so; likewise when a larger set memorized
    over a fifth less than a smaller one (``MAX_DROP``: its run had not reached the plateau in its budget, and a
    rising-then-flat curve cannot describe the points). The interval bootstraps the points and needs at least
    four dataset sizes: a resample of three that keeps three sizes is the three points themselves, so its
    interval would have zero width; with three sizes ``ci`` is None.
    """
    d, m = as_vectors(3, data_bits=(data_bits, True), memorized_bits=(memorized_bits, False))
    check_ci_args(n_bootstrap, ci_level, ci_method)
    if (m <= 0).sum() > len(m) - 3:
        raise ValueError("fewer than 3 runs memorized anything: nothing to fit")
    order = np.argsort(d)
    if m[order][-1] > 0.9 * d[order][-1]:
        raise ValueError("the largest data set was still memorized almost entirely: the plateau is beyond the data "
                         "(add runs with more data than the model can hold)")
    best_smaller = np.maximum.accumulate(m[order])
    fell = np.flatnonzero(m[order] < (1 - MAX_DROP) * best_smaller)
    if fell.size:
        i, best = order[fell[0]], best_smaller[fell[0]]
        raise ValueError(f"memorized bits fall with more data: the set of {d[i]:,.0f} bits memorized {m[i]:,.0f}, "
                         f"{1 - m[i] / best:.0%} less than a smaller set's {best:,.0f}; "
                         "its run had not reached its plateau in its budget (train it longer, or fit without it)")
    capacity, k = _fit_softmin(d, m)
    ci = None
    if n_bootstrap and len(np.unique(d)) >= 4:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(n_bootstrap):
            rows = rng.integers(0, len(d), len(d))
            if len(np.unique(d[rows])) < 3 or (m[rows] > 0).sum() < 3:
                continue
            samples.append(_fit_softmin(d[rows], m[rows])[0])
        ci = bootstrap_ci(capacity, np.array(samples), ci_level, ci_method)
    return MemorizationPlateau(capacity, k, ci, ci_level, ci_method, num_params, d, m)
