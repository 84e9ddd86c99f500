"""Kaplan et al. 2020: L(N), L(D), the joint L(N, D), the critical batch and the compute-optimal size (N =
non-embedding parameters, D = tokens, loss in nats/token), at the paper's constants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fitting import as_array, scalar_or_array


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
    n = as_array("n_params", n_params, positive=True)
    return scalar_or_array((laws.n_c_params / n) ** laws.alpha_n)


def kaplan_loss_d(n_tokens: Any, laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """L(D) = (Dc/D)^αD in nats/token; D = training tokens (model size not limiting, early stopping)."""
    d = as_array("n_tokens", n_tokens, positive=True)
    return scalar_or_array((laws.d_c_tokens / d) ** laws.alpha_d)


def kaplan_loss_nd(n_params: Any, n_tokens: Any, law: KaplanJointLaw = KAPLAN_2020_JOINT) -> float | np.ndarray:
    """Joint L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD in nats/token."""
    n = as_array("n_params", n_params, positive=True)
    d = as_array("n_tokens", n_tokens, positive=True)
    return scalar_or_array(((law.n_c_params / n) ** (law.alpha_n / law.alpha_d) + law.d_c_tokens / d) ** law.alpha_d)


def kaplan_critical_batch_tokens(loss_nats: Any, laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """Critical batch size B_crit(L) = B*/L^(1/αB) in tokens, for a loss in nats/token."""
    loss = as_array("loss_nats", loss_nats, positive=True)
    return scalar_or_array(laws.b_star_tokens / loss ** (1.0 / laws.alpha_b))


def kaplan_compute_optimal_params(compute: Any, reference_compute: float, reference_params: float,
                                  laws: KaplanLaws = KAPLAN_2020) -> float | np.ndarray:
    """Compute-optimal N from N ∝ C^0.73, anchored at a known (reference_compute, reference_params) point.

    The law fixes only the exponent; `compute` and `reference_compute` must share units (FLOPs or PF-days).
    """
    c = as_array("compute", compute, positive=True)
    c_ref = float(as_array("reference_compute", reference_compute, positive=True))
    n_ref = float(as_array("reference_params", reference_params, positive=True))
    return scalar_or_array(n_ref * (c / c_ref) ** laws.compute_optimal_n_exponent)
