"""Scaling laws, one module per literature; every public name is importable from ``hf_capacity.scaling``.

- ``capacity_law``: the capacity law bits ≈ min(bits_max, R*·P) (Allen-Zhu & Li): R* with a run-clustered
  bootstrap, R* per group, the log-log slope of bits against parameters
- ``kaplan``: Kaplan et al. 2020 (L(N), L(D), joint L(N, D), critical batch, compute-optimal size)
- ``chinchilla``: the Chinchilla form E + A/N^α + B/D^β (Hoffmann et al. 2022), its fit and bootstrap; the
  optimiser (a batched L-BFGS over Hoffmann's start grid) is ``chinchilla_optimizer``
- ``law_evaluation``: the Hitchhiker's guide (Choshen et al.): fit on checkpoints, ARE on the largest run's tail
- ``niu``: Niu et al. 2024 qualitative diagnostics
- the memorization plateau (Morris et al. 2025) lives beside memorization, in ``hf_capacity.memorization_fit``,
  and is exported here too

Numbers in, numbers out: numpy, scipy (and pandas for DataFrame inputs), no torch.
"""

from ..memorization_fit import MemorizationPlateau, fit_memorization_plateau
from .capacity_law import (
    CapacityLawFit,
    LogLogSlope,
    NoCapacityLimitedRunError,
    capacity_ratio_by_group,
    fit_capacity_law,
    fit_loglog_slope,
    predict_bits,
)
from .chinchilla import (
    BESIROGLU_2024,
    HOFFMANN_2022,
    ChinchillaFit,
    ChinchillaLaw,
    UnidentifiedFitWarning,
    bootstrap_chinchilla,
    chinchilla_loss,
    compute_optimal_allocation,
    fit_chinchilla,
)
from .kaplan import (
    KAPLAN_2020,
    KAPLAN_2020_JOINT,
    KaplanJointLaw,
    KaplanLaws,
    kaplan_compute_optimal_params,
    kaplan_critical_batch_tokens,
    kaplan_loss_d,
    kaplan_loss_n,
    kaplan_loss_nd,
)
from .law_evaluation import (
    LawEvaluation,
    absolute_relative_error,
    drop_early_checkpoints,
    evaluate_law_fit,
    split_target,
)
from .niu import NiuDiagnostic, niu_cross_entropy_floor, niu_params_vs_data_squared

__all__ = [
    "BESIROGLU_2024",
    "CapacityLawFit",
    "ChinchillaFit",
    "ChinchillaLaw",
    "HOFFMANN_2022",
    "KAPLAN_2020",
    "KAPLAN_2020_JOINT",
    "KaplanJointLaw",
    "KaplanLaws",
    "LawEvaluation",
    "LogLogSlope",
    "MemorizationPlateau",
    "NiuDiagnostic",
    "NoCapacityLimitedRunError",
    "UnidentifiedFitWarning",
    "absolute_relative_error",
    "bootstrap_chinchilla",
    "capacity_ratio_by_group",
    "chinchilla_loss",
    "compute_optimal_allocation",
    "drop_early_checkpoints",
    "evaluate_law_fit",
    "fit_capacity_law",
    "fit_chinchilla",
    "fit_loglog_slope",
    "fit_memorization_plateau",
    "kaplan_compute_optimal_params",
    "kaplan_critical_batch_tokens",
    "kaplan_loss_d",
    "kaplan_loss_n",
    "kaplan_loss_nd",
    "niu_cross_entropy_floor",
    "niu_params_vs_data_squared",
    "predict_bits",
    "split_target",
]
