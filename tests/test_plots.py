"""Plots write real PNG files."""

import os

import numpy as np
import pandas as pd
import pytest

from hf_capacity.plots import plot_capacity, plot_capacity_ratio, plot_loss_law, training_curve_figure
from hf_capacity.report import plot_training_curve
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


HISTORY = [{"step": s, "knowledge_bits": b, "bits_per_param": b / 20_000}
           for s, b in [(0, 0.0), (60, 300.0), (120, 900.0), (240, 1450.0)]]


def test_knowledge_curve_reads_at_a_glance(tmp_path):
    fig = training_curve_figure(HISTORY, 1850.0, num_params=20_000, exposures_per_step=0.625,
                                model="gpt2-2-2 (P = 20,000)", data="bioS(N=30)")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "exposures per person" and ax.get_ylabel() == "knowledge learned (bits)"
    assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0 and ax.get_ylim()[1] > 1850
    secondary = {a.get_xlabel() or a.get_ylabel() for a in ax.child_axes}
    assert secondary == {"training step", "bits per parameter (R = bits / P)"}
    assert "gpt2-2-2" in ax.get_title() and "bioS(N=30)" in ax.get_title()
    x, y = ax.lines[0].get_data()
    assert list(x) == [0.0, 37.5, 75.0, 150.0] and y[0] == 0.0  # exposures = step × exposures per step
    path = plot_training_curve(HISTORY, 1850.0, tmp_path / "knowledge_curve.png", num_params=20_000,
                               exposures_per_step=0.625)
    assert_png(str(path))


def test_knowledge_curve_without_exposures_falls_back_to_steps():
    history = [{k: v for k, v in h.items() if k != "bits_per_param"} for h in HISTORY]
    ax = training_curve_figure(history, 1850.0).axes[0]
    assert ax.get_xlabel() == "training step" and ax.child_axes == []  # neither exposures nor P known
    exposures = [{**h, "exposures": h["step"] / 10} for h in HISTORY]  # results.json history carries them
    ax = training_curve_figure(exposures, 1850.0).axes[0]
    assert ax.get_xlabel() == "exposures per person" and len(ax.child_axes) == 2  # P from bits / bits_per_param
    with pytest.raises(ValueError, match="history is empty"):
        training_curve_figure([], 1850.0)


def test_knowledge_curve_splits_name_and_value_bits():
    history = [{**h, "name_bits": 0.2 * h["knowledge_bits"], "value_bits": 0.8 * h["knowledge_bits"]} for h in HISTORY]
    ax = training_curve_figure(history, 1850.0, num_params=20_000, exposures_per_step=0.625).axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.lines}
    assert list(lines["name bits"]) == [0.0, 60.0, 180.0, 290.0]
    assert list(lines["value bits"]) == [0.0, 240.0, 720.0, 1160.0]
    assert list(lines["bits learned"]) == [0.0, 300.0, 900.0, 1450.0]


def test_legends_say_1_bit_per_param(tmp_path, runs, monkeypatch):
    import hf_capacity.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_png: figures.append(fig) or str(out_png))
    plot_capacity(runs, tmp_path / "c.png")
    plot_capacity_ratio(runs, tmp_path / "r.png", reference_ratio=1.0)
    labels = [text.get_text() for fig in figures for text in fig.axes[0].get_legend().get_texts()]
    assert "2 bits/param" in labels and labels.count("1 bit/param") == 2 and "1 bits/param" not in labels
