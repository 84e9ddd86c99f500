"""Scaling laws: recover known parameters, reproduce published numbers, validate inputs."""

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from hf_capacity import scaling
from hf_capacity.scaling import (
    BESIROGLU_2024,
    HOFFMANN_2022,
    KAPLAN_2020,
    KAPLAN_2020_JOINT,
    ChinchillaLaw,
    UnidentifiedFitWarning,
    absolute_relative_error,
    bootstrap_chinchilla,
    capacity_ratio_by_group,
    chinchilla_loss,
    chinchilla_optimizer,
    compute_optimal_allocation,
    drop_early_checkpoints,
    evaluate_law_fit,
    fit_capacity_law,
    fit_chinchilla,
    fit_loglog_slope,
    kaplan_critical_batch_tokens,
    kaplan_loss_d,
    kaplan_loss_n,
    kaplan_loss_nd,
    niu_cross_entropy_floor,
    niu_params_vs_data_squared,
    predict_bits,
    split_target,
)


def capacity_runs(seed=0, n_runs=30, true_ratio=2.0):
    """Runs with bits = min(bits_max, R*·P)·(1 − noise), three measurements each, R_max from 0.5 to 10."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(n_runs):
        n_people = rng.choice([1e4, 1e5, 1e6])
        bits_max = 55.0 * n_people
        params = bits_max / rng.uniform(0.5, 10.0)
        for _ in range(3):
            bits = min(bits_max, true_ratio * params) * (1 - rng.uniform(0, 0.03))
            rows.append(dict(run_id=run, params=params, bits=bits, bits_max=bits_max,
                             architecture=("gpt2", "llama")[run % 2], exposures=1000, precision="bf16"))
    return pd.DataFrame(rows)


def law_grid(law, noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    n, d = n.ravel(), d.ravel()
    return n, d, chinchilla_loss(n, d, law) * np.exp(rng.normal(0, noise, n.size))


# ---- capacity law ---------------------------------------------------------------------------------------------------


def test_capacity_law_recovers_two_bits_per_param():
    fit = fit_capacity_law(capacity_runs())
    assert fit.ratio_bits_per_param == pytest.approx(2.0, abs=0.01)
    assert fit.ci_low <= 2.0 <= fit.ci_high
    assert fit.n_runs == 30 and fit.n_measurements == 90 and fit.converged
    assert fit.predict_bits(1e6, 1e9) == pytest.approx(fit.ratio_bits_per_param * 1e6)
    assert fit.predict_bits(1e6, 1e5) == 1e5  # data-limited: the ceiling wins


def test_capacity_law_accepts_arrays_and_ignores_data_limited_runs():
    # run 0 is capacity-limited at 2 bits/param; runs 1-2 are data-limited (R ≈ R_max ≤ 1.8)
    params = [100.0, 100.0, 100.0]
    bits = [200.0, 150.0, 179.0]
    bits_max = [1000.0, 151.0, 180.0]
    fit = fit_capacity_law(params, bits, bits_max, n_bootstrap=0)
    assert fit.ratio_bits_per_param == 2.0 and fit.n_capacity_limited == 1
    assert predict_bits([10.0, 1e3], [1e6, 5.0], 2.0).tolist() == [20.0, 5.0]


def test_capacity_law_refuses_purely_data_limited_runs():
    with pytest.raises(ValueError, match="no run is capacity-limited"):
        fit_capacity_law([100.0, 200.0], [179.0, 300.0], [180.0, 310.0])


def test_capacity_ratio_by_group():
    table = capacity_ratio_by_group(capacity_runs(), n_bootstrap=100)
    assert table["architecture"].tolist() == ["gpt2", "llama"]
    assert np.allclose(table["ratio_bits_per_param"], 2.0, atol=0.02)


# ---- Kaplan et al. 2020 ---------------------------------------------------------------------------------------------


def test_kaplan_published_constants():
    # (8.8e13 / 1e9)^0.076 = exp(0.076 · ln 88000) = exp(0.86527)
    assert kaplan_loss_n(1e9) == pytest.approx(2.37564, rel=1e-5)
    assert kaplan_loss_d(1e10) == pytest.approx((5.4e13 / 1e10) ** 0.095)
    # the joint law uses its own constants (αD = 0.103, Nc = 6.4e13, Dc = 1.8e13), not the one-variable ones
    assert KAPLAN_2020_JOINT.alpha_d == 0.103 and KAPLAN_2020.alpha_d == 0.095
    assert kaplan_loss_nd(1e9, 1e10) == pytest.approx(((6.4e13 / 1e9) ** (0.076 / 0.103) + 1800.0) ** 0.103)
    assert kaplan_critical_batch_tokens(2.0) == pytest.approx(2e8 / 2 ** (1 / 0.21))
    assert scaling.kaplan_compute_optimal_params(10.0, 1.0, 1e9) == pytest.approx(1e9 * 10 ** 0.73)


# ---- Chinchilla form ------------------------------------------------------------------------------------------------


def test_published_chinchilla_prediction():
    # 1.69 + 406.4 / 70e9^0.34 + 410.7 / 1.4e12^0.28 = 1.69 + 406.4/4867.8 + 410.7/2517.2 = 1.69 + 0.08349 + 0.16316
    assert HOFFMANN_2022.predict(70e9, 1.4e12) == pytest.approx(1.93665, abs=1e-5)
    # Besiroglu et al. 2024 at the published digits: 1.8172 + 482.01 / 70e9^0.3478 + 2085.43 / 1.4e12^0.3658
    # = 1.8172 + 0.081495 + 0.075187 (the rounded 1.82, 2085, 0.348, 0.366 would give 1.97584)
    assert BESIROGLU_2024 == ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
    assert BESIROGLU_2024.predict(70e9, 1.4e12) == pytest.approx(1.97388, abs=1e-5)


def test_compute_optimal_allocation_is_the_constrained_minimum():
    compute = 5.76e23  # Chinchilla's budget
    n_opt, d_opt = compute_optimal_allocation(compute, HOFFMANN_2022)
    assert 6 * n_opt * d_opt == pytest.approx(compute)
    best = HOFFMANN_2022.predict(n_opt, d_opt)
    for factor in (0.8, 0.95, 1.05, 1.25):
        n = n_opt * factor
        assert HOFFMANN_2022.predict(n, compute / (6 * n)) > best


def test_chinchilla_fit_recovers_known_parameters():
    truth = ChinchillaLaw(E=1.8, A=400.0, B=1200.0, alpha=0.33, beta=0.30)
    fit = fit_chinchilla(*law_grid(truth, noise=0.001))
    assert fit.n_starts == 4500
    assert fit.law.E == pytest.approx(truth.E, rel=0.02)
    assert fit.law.alpha == pytest.approx(truth.alpha, abs=0.02)
    assert fit.law.beta == pytest.approx(truth.beta, abs=0.02)
    assert fit.law.A == pytest.approx(truth.A, rel=0.3)
    assert fit.law.B == pytest.approx(truth.B, rel=0.3)


@pytest.mark.parametrize("loss_fn", ["least_squares", "lower_envelope"])
def test_other_objectives_fit_noise_free_data(loss_fn):
    n, d, loss = law_grid(HOFFMANN_2022, noise=0.0)
    fit = fit_chinchilla(n, d, loss, loss_fn=loss_fn, starts=200)
    assert np.allclose(fit.predict(n, d), loss, rtol=1e-4)


def test_lower_envelope_sits_below_the_data():
    n, d, loss = law_grid(HOFFMANN_2022, noise=0.01, seed=1)
    envelope = fit_chinchilla(n, d, loss, loss_fn="lower_envelope", expectile=0.02, starts=200)
    assert np.mean(loss >= envelope.predict(n, d)) > 0.8


def test_fixed_exponent_stays_fixed_and_bootstrap_brackets_the_fit():
    n, d, loss = law_grid(HOFFMANN_2022)
    fit = fit_chinchilla(n, d, loss, fixed={"alpha": 0.34}, n_bootstrap=50)
    assert fit.law.alpha == 0.34 and fit.n_starts == 900
    assert fit.ci["alpha"] == (0.34, 0.34)
    low, high = fit.ci["beta"]
    assert low <= fit.law.beta <= high


def test_a_start_whose_l_bfgs_direction_explodes_warns_only_about_what_the_fit_cannot_tell():
    # 5% noise around a law with almost no floor: from this corner of Hoffmann's grid the curvature pairs come
    # from a flat stretch of the Huber loss and the quasi-Newton direction grows past 1e308; it is reset or capped
    # without a stray RuntimeWarning, and the start keeps descending, to a constant (both power terms vanish over
    # the data), which the fit flags instead of reporting A, alpha, B and beta as if the data had set them
    n, d, loss = law_grid(ChinchillaLaw(E=1e-6, A=400.0, B=1200.0, alpha=0.33, beta=0.30), noise=0.05, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(UnidentifiedFitWarning, match=r"A, alpha, B, beta"):
            fit = fit_chinchilla(n, d, loss, starts=np.array([[25.0, 25.0, 1.0, 0.5, 0.0]]), n_polish=0)
    assert fit.unidentified == ("A", "alpha", "B", "beta") and fit.law.alpha > 10


def test_a_fit_whose_data_never_flatten_says_the_floor_is_not_identified():
    # a power law in N and D with no floor to speak of: the fit drives E toward 0, a value the data cannot pin down
    n, d, loss = law_grid(ChinchillaLaw(E=1e-9, A=400.0, B=1200.0, alpha=0.33, beta=0.30), noise=0.0)
    with pytest.warns(UnidentifiedFitWarning, match=r"data do not identify E .*smallest loss.*fixed="):
        fit = fit_chinchilla(n, d, loss, starts=200)
    assert fit.unidentified == ("E",) and fit.law.E < 1e-3 * loss.min()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_chinchilla(*law_grid(HOFFMANN_2022, noise=0.0), starts=200).unidentified == ()


@pytest.mark.parametrize("loss_fn", ["huber", "least_squares", "lower_envelope"])
def test_the_fit_objective_works_in_buffers_made_once_not_in_temporaries(loss_fn):
    # At 5,000 points every (starts × points) temporary of the batched objective is ~1 MB, handed back to the OS
    # and faulted in again at every chunk: most of a large fit's time. It works in buffers made with the problem.
    import itertools
    import tracemalloc

    rng = np.random.default_rng(0)
    n, d = np.exp(rng.uniform(np.log(1e7), np.log(1e10), (2, 5000)))
    loss = BESIROGLU_2024.predict(n, d)
    starts = np.array(list(itertools.product(*chinchilla_optimizer.START_GRID)))[:100]
    for weights in (None, rng.integers(0, 3, (100, 5000)).astype(float)):  # a fit, a bootstrap's resamples
        fun = chinchilla_optimizer.make_problem(n, d, loss, loss_fn, 1e-3, 0.05, None).batch_fun(weights)
        fun(starts, np.arange(100))
        tracemalloc.start()
        fun(starts, np.arange(100))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 ** 17 * 8 / 8, f"{peak:,} bytes of temporaries"  # an eighth of one chunk's buffer


def huber_objective(theta, n, d, loss, weights, delta=1e-3):
    """Σ w·Huber_δ(log L − log L̂) and its gradient in θ = (log A, log B, log E, α, β), written out afresh."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * np.log(n), b - beta * np.log(d), np.full(n.size, e)])
    r = np.log(loss) - logsumexp(terms, axis=0)
    rho = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    share = softmax(terms, axis=0)
    c = -weights * np.clip(r, -delta, delta)
    grad = [(c * share[0]).sum(), (c * share[1]).sum(), (c * share[2]).sum(),
            -(c * share[0] * np.log(n)).sum(), -(c * share[1] * np.log(d)).sum()]
    return (weights * rho).sum(), np.array(grad)


@pytest.fixture(scope="module")
def noisy_fit():
    return fit_chinchilla(*law_grid(BESIROGLU_2024, noise=0.01, seed=1))


def test_every_bootstrap_refit_reaches_its_resamples_optimum(noisy_fit):
    boot = bootstrap_chinchilla(noisy_fit, 100, seed=0)
    assert boot.law == noisy_fit.law and len(boot.bootstrap) == 100
    assert boot.bootstrap["converged"].all()
    assert (boot.bootstrap_counts.sum(axis=1) == noisy_fit.n_points).all()
    data = (noisy_fit.n_params, noisy_fit.n_tokens, noisy_fit.loss_nats)
    for i, row in boot.bootstrap.iterrows():
        theta = np.array([math.log(row.A), math.log(row.B), math.log(row.E), row.alpha, row.beta])
        weights = boot.bootstrap_counts[i]
        assert huber_objective(theta, *data, weights)[0] == pytest.approx(row.objective, rel=1e-12)
        polished = minimize(huber_objective, theta, args=(*data, weights), jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
        assert row.objective <= polished.fun * (1 + 1e-9), f"resample {i} stopped short of its optimum"


def test_basic_interval_is_the_percentile_interval_reflected_about_the_estimate(noisy_fit):
    percentile = bootstrap_chinchilla(noisy_fit, 60, seed=3, ci_method="percentile")
    basic = bootstrap_chinchilla(noisy_fit, 60, seed=3, ci_method="basic", ci_level=0.9)
    assert (basic.ci_method, basic.ci_level) == ("basic", 0.9)
    for name in ("E", "A", "B", "alpha", "beta"):
        estimate = getattr(noisy_fit.law, name)
        assert percentile.ci[name] == pytest.approx(np.quantile(percentile.bootstrap[name], [0.025, 0.975]))
        low, high = np.quantile(basic.bootstrap[name], [0.05, 0.95])
        assert basic.ci[name] == pytest.approx((2 * estimate - high, 2 * estimate - low))


def test_bootstrap_resamples_whole_runs(noisy_fit):
    runs = np.repeat(np.arange(6), 6)  # six runs of six points each
    counts = bootstrap_chinchilla(noisy_fit, 20, run_ids=runs).bootstrap_counts.reshape(20, 6, 6)
    assert (counts == counts[:, :, :1]).all()  # a run's points are drawn together
    assert set(np.unique(counts)) <= set(range(7))


def test_the_scaling_laws_guide_example_runs():
    guide = (Path(__file__).parents[1] / "docs" / "guides" / "scaling_laws.md").read_text()
    code = re.search(r"# Scaling laws in Python\n+```python\n(.*?)```", guide, re.S).group(1)
    runs = capacity_runs()
    n, d, loss = law_grid(HOFFMANN_2022)
    namespace = dict(params=runs["params"], bits=runs["bits"], bits_max=runs["bits_max"], runs=runs["run_id"],
                     N=n, D=d, L=loss)
    exec(code, namespace)
    assert namespace["loss_fit"].law.alpha == pytest.approx(0.34, abs=0.03)
    assert namespace["loss_fit"].bootstrap["converged"].all()


# ---- Hitchhiker's guide ---------------------------------------------------------------------------------------------


def checkpoints(law=HOFFMANN_2022):
    rows = []
    for run, n in enumerate([1e8, 2e8, 4e8, 8e8, 1.6e9]):
        for tokens in np.geomspace(1e9, 20 * n, 12):
            rows.append(dict(run_id=run, params=n, tokens=tokens, loss=float(law.predict(n, tokens))))
    return pd.DataFrame(rows)


def test_are_by_hand():
    # |2 − 2.2|/2 = 0.1 and |4 − 3|/4 = 0.25; mean 0.175
    assert absolute_relative_error([2.0, 4.0], [2.2, 3.0]) == pytest.approx(0.175)


def test_early_checkpoints_and_target_split():
    df = checkpoints()
    kept = drop_early_checkpoints(df, min_tokens=1e10)
    assert kept["tokens"].min() > 1e10 and len(kept) < len(df)
    assert len(drop_early_checkpoints(df, min_tokens=0)) == len(df)
    fit_rows, target_rows, target = split_target(df)
    assert target == 4 and 4 not in set(fit_rows["run_id"])
    assert target_rows["tokens"].min() > 0.7 * 20 * 1.6e9


def test_evaluate_law_fit_on_exact_law_has_tiny_are():
    result = evaluate_law_fit(checkpoints(), min_tokens=2e9, starts=300)
    assert result.are < 1e-3 and result.n_target_points > 0


# ---- Niu et al. diagnostics -----------------------------------------------------------------------------------------


def test_niu_diagnostics_are_labelled_not_predictions():
    low = niu_cross_entropy_floor(0.4)
    assert not low.within and "not a prediction" in low.label
    assert niu_cross_entropy_floor(2.3).within
    assert niu_params_vs_data_squared(1e6, 1e4).value == pytest.approx(1e-2)


# ---- validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: fit_capacity_law([1.0, 2.0], [1.0], [3.0, 3.0]), "equal lengths"),
    (lambda: fit_capacity_law([-1.0], [1.0], [3.0]), "params must be > 0"),
    (lambda: fit_capacity_law([1.0], [math.nan], [3.0]), "bits must be finite"),
    (lambda: fit_chinchilla([1e9, 2e9], [1e10, 1e10], [0.0, 2.0]), "loss must be > 0"),
    (lambda: fit_chinchilla([1e9] * 6, [1e10] * 6, [2.0] * 6, fixed={"gamma": 1}), "cannot fix 'gamma'"),
    (lambda: fit_chinchilla([1e9] * 6, [1e10] * 6, [2.0] * 6, loss_fn="l1"), "loss_fn must be one of"),
    (lambda: fit_chinchilla([1e9] * 6, [1e10] * 6, [2.0] * 6, ci_method="bca"), "ci_method must be"),
    (lambda: bootstrap_chinchilla(scaling.ChinchillaFit(HOFFMANN_2022, "huber", 0.0, 6, 1, {})), "holds no data"),
    (lambda: kaplan_loss_n(0.0), "n_params must be > 0"),
    (lambda: absolute_relative_error([1.0, 2.0], [1.0]), "equal lengths"),
    (lambda: split_target(pd.DataFrame({"run_id": [0]})), "missing"),
])
def test_validation_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_loglog_slope_is_one_when_bits_are_proportional_to_params():
    params = np.array([4e4, 9e4, 1.8e5, 2.7e5, 3.7e5])
    fit = fit_loglog_slope(params, 2.0 * params)
    assert fit.slope == pytest.approx(1.0) and fit.prefactor == pytest.approx(2.0)
    assert fit.ci_low == pytest.approx(1.0) and fit.ci_high == pytest.approx(1.0)


def test_loglog_slope_interval_covers_the_true_slope_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    params = np.geomspace(4e4, 4e5, 6)
    covered = 0
    for _ in range(400):
        bits = 3.0 * params**0.9 * np.exp(rng.normal(0, 0.05, params.size))
        fit = fit_loglog_slope(params, bits, ci_level=0.9)
        covered += fit.ci_low <= 0.9 <= fit.ci_high
    assert 0.85 <= covered / 400 <= 0.95


def test_loglog_slope_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 3"):
        fit_loglog_slope([1e4, 2e4], [2e4, 4e4])
    with pytest.raises(ValueError, match="same P"):
        fit_loglog_slope([1e4, 1e4, 1e4], [2e4, 3e4, 4e4])
    with pytest.raises(ValueError, match="bits must be > 0"):
        fit_loglog_slope([1e4, 2e4, 3e4], [2e4, 0.0, 4e4])


PUBLIC_NAMES_OF_THE_SINGLE_MODULE = [  # what `from hf_capacity.scaling import X` gave when scaling was one file
    "BESIROGLU_2024", "CapacityLawFit", "ChinchillaFit", "ChinchillaLaw", "HOFFMANN_2022", "KAPLAN_2020",
    "KAPLAN_2020_JOINT", "KaplanJointLaw", "KaplanLaws", "LawEvaluation", "LogLogSlope", "MemorizationPlateau",
    "NiuDiagnostic", "NoCapacityLimitedRunError", "UnidentifiedFitWarning", "absolute_relative_error",
    "bootstrap_chinchilla", "capacity_ratio_by_group", "chinchilla_loss", "compute_optimal_allocation",
    "drop_early_checkpoints", "evaluate_law_fit", "fit_capacity_law", "fit_chinchilla", "fit_loglog_slope",
    "fit_memorization_plateau", "kaplan_compute_optimal_params", "kaplan_critical_batch_tokens", "kaplan_loss_d",
    "kaplan_loss_n", "kaplan_loss_nd", "niu_cross_entropy_floor", "niu_params_vs_data_squared", "predict_bits",
    "split_target",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES_OF_THE_SINGLE_MODULE)
def test_every_name_of_the_single_module_still_imports_from_scaling(name):
    namespace = {}
    exec(f"from hf_capacity.scaling import {name}", namespace)
    assert namespace[name] is getattr(scaling, name)
    assert name in scaling.__all__


def test_every_public_law_and_fit_is_exported():
    import importlib
    import inspect
    import pkgutil

    assert scaling.__all__ == sorted(scaling.__all__)
    assert len(set(scaling.__all__)) == len(scaling.__all__)
    assert all(hasattr(scaling, name) for name in scaling.__all__)
    # every law module's public function and class (the optimiser's parts are chinchilla's, not the API)
    modules = [importlib.import_module(f"{scaling.__name__}.{info.name}")
               for info in pkgutil.iter_modules(scaling.__path__) if info.name != "chinchilla_optimizer"]
    modules.append(importlib.import_module("hf_capacity.memorization_fit"))
    names = {module.__name__.rpartition(".")[2] for module in modules}
    assert {"capacity_law", "chinchilla", "kaplan", "law_evaluation", "niu", "memorization_fit"} <= names
    defined = {name for module in modules for name, obj in vars(module).items() if not name.startswith("_")
               and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__}
    assert defined <= set(scaling.__all__), sorted(defined - set(scaling.__all__))
    assert {"fit_memorization_plateau", "MemorizationPlateau"} <= set(scaling.__all__)
