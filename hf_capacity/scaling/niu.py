"""Niu et al. 2024 (associative memory): qualitative diagnostics, never predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..fitting import as_array

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
    loss = float(as_array("loss_nats", loss_nats, positive=True))
    floor = float(as_array("floor_nats", floor_nats, positive=True))
    within = loss >= floor
    message = (f"loss {loss:.3g} nats is at or above the ~{floor:g} nat floor" if within else
               f"loss {loss:.3g} nats is below the ~{floor:g} nat floor: the data fall outside the theory's "
               "assumptions")
    return NiuDiagnostic("cross_entropy_floor", loss, floor, within, message)


def niu_params_vs_data_squared(n_params: float, dataset_size: float) -> NiuDiagnostic:
    """N / D² for Niu et al.'s N = O(D²) relation for memorising well-separated patterns.

    The O(·) hides constants, so only orders of magnitude are meaningful; `within` is N ≤ D².
    """
    n = float(as_array("n_params", n_params, positive=True))
    d = float(as_array("dataset_size", dataset_size, positive=True))
    ratio = n / d ** 2
    message = f"N/D^2 = {ratio:.3g} (log10 {math.log10(ratio):.2f}); theory: N = O(D^2), constants unknown"
    return NiuDiagnostic("params_vs_data_squared", ratio, 1.0, ratio <= 1.0, message)
