"""Plots write real PNG files."""

import os

import numpy as np
import pandas as pd
import pytest

from hf_capacity.plots import plot_capacity, plot_capacity_ratio, plot_loss_law
from hf_capacity.scaling import HOFFMANN_2022, fit_capacity_law

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.getsize(path) > 0
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert path.endswith(".png")


@pytest.fixture
def runs():
    params = np.geomspace(1e5, 1e8, 8)
    bits_max = np.where(np.arange(8) < 4, 5.5e6, 5.8e7)
    return pd.DataFrame({
        "run_id": range(8), "params": params, "bits": np.minimum(bits_max, 2 * params) * 0.98,
        "bits_max": bits_max, "n_people": np.where(bits_max < 1e7, 1e5, 1e6),
        "architecture": ["gpt2", "llama"] * 4,
    })


def test_plot_capacity(tmp_path, runs):
    fit = fit_capacity_law(runs, n_bootstrap=0)
    assert_png(plot_capacity(runs, tmp_path / "capacity.png", fit=fit))
    arrays = {k: runs[k].to_numpy() for k in ("params", "bits", "bits_max")}  # plain arrays, no group column
    assert_png(plot_capacity(arrays, tmp_path / "sub" / "capacity_arrays.png"))


def test_plot_capacity_ratio(tmp_path, runs):
    assert_png(plot_capacity_ratio(runs, tmp_path / "ratio.png", by="architecture"))


def test_plot_loss_law(tmp_path):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 3), np.geomspace(1e9, 1e11, 5)))
    assert_png(plot_loss_law(n, d, HOFFMANN_2022.predict(n, d), HOFFMANN_2022, tmp_path / "law.png"))


def test_plot_rejects_bad_input(tmp_path, runs):
    with pytest.raises(ValueError, match="'bits_max' column"):
        plot_capacity(runs.drop(columns="bits_max"), tmp_path / "x.png")
    with pytest.raises(ValueError, match=".png"):
        plot_capacity_ratio(runs, tmp_path / "x.jpg")
