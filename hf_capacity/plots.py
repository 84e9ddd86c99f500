"""PNG plots of capacity measurements and loss-law fits (matplotlib Agg canvas; no pyplot state)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "plot_capacity", "plot_capacity_law", "plot_capacity_ratio", "plot_knowledge_curves", "plot_loss_law",
    "plot_memorization", "training_curve_figure",
]


def _column(data: Any, name: str, *, required: bool = True) -> np.ndarray | None:
    """A column of a DataFrame or of a mapping of arrays."""
    has = name in data.columns if hasattr(data, "columns") else isinstance(data, Mapping) and name in data
    if not has:
        if required:
            have = list(data.columns) if hasattr(data, "columns") else list(data) if isinstance(data, Mapping) else []
            raise ValueError(f"data needs a {name!r} column (have {have})")
        return None
    values = data[name]
    return values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)


def _positive(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() <= 0:
        raise ValueError(f"{name} must be finite and > 0 for a log axis")
    return arr


def _groups(data: Any, by: str | None, n: int) -> tuple[np.ndarray, list[Any]]:
    labels = _column(data, by) if by else None
    if labels is None:
        labels = np.full(n, "all", dtype=object)
    if len(labels) != n:
        raise ValueError(f"group column {by!r} has {len(labels)} values for {n} rows")
    return labels, list(dict.fromkeys(labels.tolist()))


def _per_param(ratio: float) -> str:
    """"2 bits/param", "1 bit/param"."""
    return f"{ratio:g} bit{'' if ratio == 1 else 's'}/param"


def _save(fig: Figure, out_png: str | os.PathLike) -> str:
    path = os.fspath(out_png)
    if not path.lower().endswith(".png"):
        raise ValueError(f"out_png must end with .png; got {path!r}")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_capacity(data: Any, out_png: str | os.PathLike, *, group_by: str | None = "architecture",
                  ratio_lines: Sequence[float] = (2.0, 1.0), fit: Any = None, title: str | None = None) -> str:
    """Bits of knowledge against parameters P (log-log), one colour per group.

    `data`: a DataFrame or mapping with params, bits, bits_max (and the `group_by` column if present; it is
    ignored when missing). Draws R·P lines for each ratio in `ratio_lines` (2 and 1 bit/param), each distinct
    bits_max as a dashed horizontal line (labelled with N when an n_people column exists) and, when `fit` (a
    `CapacityLawFit`) is given, the saturation rule min(bits_max, R*·P). Returns the PNG path.
    """
    params = _positive("params", _column(data, "params"))
    bits = np.asarray(_column(data, "bits"), dtype=float)
    bits_max = _positive("bits_max", _column(data, "bits_max"))
    if not (bits.shape == params.shape == bits_max.shape):
        raise ValueError("params, bits and bits_max must have equal lengths")
    n_people = _column(data, "n_people", required=False)
    if group_by is not None and _column(data, group_by, required=False) is None:
        group_by = None
    labels, groups = _groups(data, group_by, params.size)

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for g in groups:
        m = labels == g
        shown = m & (bits > 0)  # a log axis cannot show non-positive bits
        ax.scatter(params[shown], bits[shown], s=18, label=str(g) if group_by else None, zorder=3)
    p_line = np.geomspace(params.min() / 1.5, params.max() * 1.5, 100)
    for ratio, style in zip(ratio_lines, ("-", "--", ":", "-.")):
        ax.plot(p_line, ratio * p_line, "k" + style, lw=1, alpha=0.6, label=_per_param(ratio))
    for value in np.unique(bits_max):
        where = np.flatnonzero(bits_max == value)
        label = f"bits_max (N={n_people[where[0]]:,.0f})" if n_people is not None else f"bits_max {value:.3g}"
        ax.axhline(value, color="grey", ls="--", lw=0.8)
        ax.annotate(label, (p_line[0], value), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey")
    if fit is not None:
        for value in np.unique(bits_max):
            ax.plot(p_line, np.minimum(value, fit.ratio_bits_per_param * p_line), color="tab:red", lw=1, alpha=0.5)
        ax.plot([], [], color="tab:red", lw=1, label=f"min(bits_max, {fit.ratio_bits_per_param:.2f}·P)")
    ax.set(xscale="log", yscale="log", xlabel="parameters P", ylabel="bits of knowledge",
           title=title or "Knowledge bits vs parameters")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_capacity_law(table: Any, out_png: str | os.PathLike, *, fit: Any = None, slope: Any = None,
                      label_by: str | None = "model", group_by: str = "dataset", title: str | None = None) -> str:
    """The paper's Figure 1 shape: bits of knowledge against P on log-log axes, a point per run (one marker a
    ``group_by`` value, each labelled by its ``label_by`` column), the 2 bits/param line, and when given the fitted
    R*·P line (`fit`, a `CapacityLawFit`) and the least-squares line (`slope`, a `LogLogSlope`).

    `table`: a DataFrame with columns P, bits (e.g. ``sweep.capacity_law_table``). Returns the PNG path."""
    params = _positive("P", _column(table, "P"))
    bits = _positive("bits", _column(table, "bits"))
    labels, groups = _groups(table, group_by if _column(table, group_by, required=False) is not None else None,
                             params.size)
    names = _column(table, label_by, required=False) if label_by else None
    widths = _column(table, "width", required=False)
    if names is not None and label_by == "model" and widths is not None:  # gpt2-1-1 comes in several widths
        names = np.array([f"{n}, width {w:g}" for n, w in zip(names, widths)])
    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.add_subplot()
    p_line = np.geomspace(params.min() / 1.6, params.max() * 1.6, 100)
    ax.plot(p_line, 2.0 * p_line, "k-", lw=1, alpha=0.6, label="2 bits/param (Allen-Zhu & Li)")
    if fit is not None:
        ax.plot(p_line, fit.ratio_bits_per_param * p_line, color="tab:red", lw=1.2,
                label=f"R* = {fit.ratio_bits_per_param:.2f} bits/param "
                      f"[{fit.ci_low:.2f}, {fit.ci_high:.2f}]")
    if slope is not None:
        ax.plot(p_line, slope.prefactor * p_line ** slope.slope, color="tab:blue", lw=1, ls="--",
                label=f"least squares: bits ∝ P^{slope.slope:.3f} [{slope.ci_low:.3f}, {slope.ci_high:.3f}]")
    for g, marker in zip(groups, "os^Dv"):
        m = labels == g
        ax.scatter(params[m], bits[m], s=30, marker=marker, zorder=3, label=str(g) if len(groups) > 1 else None)
    if names is not None:  # each name once (seeds of a shape would stack their labels), under its lowest point
        names = np.asarray(names).astype(str)
        for name in dict.fromkeys(names):
            rows = np.flatnonzero(names == name)
            i = rows[np.argmin(bits[rows])]
            ax.annotate(name, (params[i], bits[i]), xytext=(4, -10), textcoords="offset points", fontsize=7,
                        color="dimgrey")
    ax.set(xscale="log", yscale="log", xlabel="parameters P (the paper's count)", ylabel="bits of knowledge",
           title=title or "Knowledge capacity: bits against parameters")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper left")
    return _save(fig, out_png)


def plot_capacity_ratio(data: Any, out_png: str | os.PathLike, by: str | None = "architecture", *,
                        reference_ratio: float | None = 2.0, title: str | None = None) -> str:
    """Capacity ratio R = bits/P against P (log x), one colour per group of the `by` column.

    `data`: a DataFrame or mapping with params and bits (and `by`). Draws `reference_ratio` (2 bits/param)
    as a dotted line. Returns the PNG path.
    """
    params = _positive("params", _column(data, "params"))
    bits = np.asarray(_column(data, "bits"), dtype=float)
    if bits.shape != params.shape:
        raise ValueError("params and bits must have equal lengths")
    labels, groups = _groups(data, by, params.size)
    ratio = bits / params

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for g in groups:
        m = labels == g
        order = np.argsort(params[m])
        ax.plot(params[m][order], ratio[m][order], "o-", ms=4, lw=0.8, label=str(g) if by else None)
    if reference_ratio is not None:
        ax.axhline(reference_ratio, color="k", ls=":", lw=1, label=_per_param(reference_ratio))
    ax.set(xscale="log", xlabel="parameters P", ylabel="R = bits / P", title=title or "Capacity ratio")
    ax.set_ylim(bottom=min(0.0, float(ratio.min())))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_knowledge_curves(curves: Mapping[str, tuple[Any, Any]], out_png: str | os.PathLike, *,
                          reference_ratio: float | None = None, title: str | None = None,
                          xlabel: str = "exposures") -> str:
    """Learning curves: capacity ratio R = bits/P (y) against exposures (x; ``xlabel`` names another count, e.g.
    epochs of a memorization run), one line per run.

    `curves`: label -> (exposures, bits_per_param), two equal-length 1-D sequences (the knowledge callback's
    evaluations during training). `reference_ratio` draws a dotted horizontal line. Returns the PNG path.
    """
    if not curves:
        raise ValueError("curves is empty: no run has a knowledge curve (train with eval_steps set)")
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for label, (exposures, ratio) in curves.items():
        x, y = np.asarray(exposures, dtype=float), np.asarray(ratio, dtype=float)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError(f"curve {label!r}: exposures and bits_per_param must be equal-length 1-D sequences")
        order = np.argsort(x)
        ax.plot(x[order], y[order], "o-", ms=3, lw=1, label=str(label))
    if reference_ratio is not None:
        ax.axhline(reference_ratio, color="k", ls=":", lw=1, label=_per_param(reference_ratio))
    ax.set(xlabel=xlabel, ylabel="R = bits / P", title=title or "Knowledge learned during training")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def training_curve_figure(history: Sequence[Mapping[str, Any]], bits_max: float, *, num_params: int | None = None,
                          exposures_per_step: float | None = None, model: str | None = None,
                          data: str | None = None, title: str | None = None) -> Figure:
    """One run's knowledge curve as a `Figure`: bits learned against exposures, read at a glance.

    `history`: the knowledge callback's measurements, dicts with ``step`` and ``knowledge_bits`` (and
    optionally ``exposures``, ``bits_per_param``), from step 0. x: exposures per person (an entry's
    ``exposures``, else ``step * exposures_per_step``; training steps when neither is known), with training
    steps on the top axis; y: bits from 0 (and, when the history carries them, its terms ``name_bits``,
    ``value_bits``, ``diversity_bits`` as dashed lines), with `bits_max` dashed and, when P is known (`num_params`, or
    bits / bits_per_param of the history), bits per parameter on the right axis. The title names `model` and
    `data` (e.g. "gpt2-2-2, P = 1.2M" and "bioS(N=10,000)") unless `title` is given; the last point is labelled.
    """
    if not history:
        raise ValueError("history is empty: nothing to plot (the knowledge callback measured nothing)")
    order = sorted(range(len(history)), key=lambda i: history[i]["step"])
    steps = np.array([history[i]["step"] for i in order], dtype=float)
    bits = np.array([history[i]["knowledge_bits"] for i in order], dtype=float)
    if all("exposures" in h for h in history):
        x = np.array([history[i]["exposures"] for i in order], dtype=float)
        nonzero = steps > 0
        exposures_per_step = float(np.median(x[nonzero] / steps[nonzero])) if nonzero.any() else exposures_per_step
    elif exposures_per_step is not None:
        x = steps * exposures_per_step
    else:
        x = steps
    if num_params is None:
        ratios = [(h["knowledge_bits"], h["bits_per_param"]) for h in history if h.get("bits_per_param")]
        num_params = round(ratios[0][0] / ratios[0][1]) if ratios else None

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(x, bits, "o-", ms=4, lw=1.2, color="tab:blue", label="bits learned", clip_on=False, zorder=3)
    for key, colour in (("name_bits", "tab:orange"), ("value_bits", "tab:green"), ("diversity_bits", "tab:purple")):
        if all(key in h for h in history):  # the terms of the total, when the history carries them
            term = np.array([history[i][key] for i in order], dtype=float)
            ax.plot(x, term, ".--", ms=3, lw=0.9, color=colour, label=key.replace("_", " "), clip_on=False)
    ax.axhline(bits_max, color="grey", ls="--", lw=1, label=f"bits_max (data): {bits_max:,.0f}")
    label = f"{bits[-1]:,.0f} bits ({100 * bits[-1] / bits_max:.1f}% of bits_max)"
    if num_params:
        label += f"\n{bits[-1] / num_params:.3f} bits/param"
    ax.annotate(label, (x[-1], bits[-1]), xytext=(-6, 8), textcoords="offset points", ha="right", va="bottom",
                fontsize=8, color="tab:blue", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
    ax.set_xlim(left=0, right=max(float(x.max()), 1e-9) * 1.04)
    ax.set_ylim(bottom=0, top=max(float(bits_max), float(bits.max())) * 1.1)
    ax.set_xlabel("exposures per person" if exposures_per_step is not None else "training step")
    ax.set_ylabel("knowledge learned (bits)")
    if exposures_per_step:
        top = ax.secondary_xaxis("top", functions=(lambda e: e / exposures_per_step, lambda s: s * exposures_per_step))
        top.set_xlabel("training step")
    if num_params:
        right = ax.secondary_yaxis("right", functions=(lambda b: b / num_params, lambda r: r * num_params))
        right.set_ylabel("bits per parameter (R = bits / P)")
    if title is None:
        title = "Knowledge learned" + (f": {model}" if model else "") + (f" on {data}" if data else "")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_loss_law(n_params: Any, n_tokens: Any, loss: Any, fit: Any, out_png: str | os.PathLike, *,
                  title: str | None = None) -> str:
    """Loss against tokens D (log x), one colour per model size N, with the fitted law's curves.

    `fit` is anything with `predict(n_params, n_tokens)` (a `ChinchillaFit` or `ChinchillaLaw`) or a
    callable f(N, D). Returns the PNG path.
    """
    n = _positive("n_params", n_params)
    d = _positive("n_tokens", n_tokens)
    ell = _positive("loss", loss)
    if not (n.shape == d.shape == ell.shape):
        raise ValueError("n_params, n_tokens and loss must have equal lengths")
    predict = fit.predict if hasattr(fit, "predict") else fit
    if not callable(predict):
        raise ValueError("fit must have a predict(N, D) method or be a callable f(N, D)")

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    sizes = np.unique(n)
    d_line = np.geomspace(d.min(), d.max() * 2, 100)
    for size in sizes:
        m = n == size
        points = ax.scatter(d[m], ell[m], s=14, zorder=3, label=f"N={size:.3g}")
        curve = np.asarray(predict(np.full_like(d_line, size), d_line), dtype=float)
        ax.plot(d_line, curve, color=points.get_facecolor()[0], lw=1)
    ax.set(xscale="log", xlabel="training tokens D", ylabel="loss (nats/token)",
           title=title or "Loss law fit")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out_png)


MORRIS_BITS_PER_PARAM = 3.6
"""Memorization capacity of GPT-style models reported by Morris et al. 2025 (bits per parameter)."""


def plot_memorization(data: Any, out_png: str | os.PathLike, *, fits: Mapping[tuple, Any] | None = None,
                      reference_bits_per_param: float | None = MORRIS_BITS_PER_PARAM, title: str | None = None) -> str:
    """Memorized bits against data bits (log-log), one colour per model, one marker per precision.

    ``data``: a DataFrame with model, head_dim, precision, num_params, data_bits, memorized_bits (one row per
    run; ``scripts/memorization_study.py`` writes it). ``fits``: ``{(model, head_dim, precision):
    MemorizationPlateau}``, each drawn as its soft-minimum curve with the plateau value in the legend. Draws the
    diagonal (everything memorized) and, per model, ``reference_bits_per_param`` · P (Morris et al.'s 3.6) as a
    dotted line. Returns the PNG path.
    """
    data_bits = _positive("data_bits", _column(data, "data_bits"))
    memorized = np.asarray(_column(data, "memorized_bits"), dtype=float)
    if memorized.shape != data_bits.shape:
        raise ValueError("data_bits and memorized_bits must have equal lengths")
    models = _column(data, "model")
    head_dims = _column(data, "head_dim")
    precisions = _column(data, "precision")
    params = _column(data, "num_params")
    keys = list(dict.fromkeys(zip(models.tolist(), head_dims.tolist())))
    colours = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    markers = {"fp32": "o", "bf16-mixed": "s", "bf16": "D", "bf16-sr": "^"}

    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    d_line = np.geomspace(data_bits.min() / 1.5, data_bits.max() * 1.5, 200)
    ax.plot(d_line, d_line, color="grey", lw=0.8, ls="-", label="memorized = data")
    for key in keys:
        model, head_dim = key
        rows = (models == model) & (head_dims == head_dim)
        p = int(params[rows][0])
        for precision in dict.fromkeys(precisions[rows].tolist()):
            m = rows & (precisions == precision)
            order = np.argsort(data_bits[m])
            shown = memorized[m][order] > 0
            ax.plot(data_bits[m][order][shown], memorized[m][order][shown], ls="none",
                    marker=markers.get(precision, "^"), mfc=colours[key] if precision == "fp32" else "none",
                    color=colours[key], ms=5, label=f"{model} hd{head_dim} (P={p:,}) {precision}", zorder=3)
            fit = (fits or {}).get((model, head_dim, precision))
            if fit is not None:
                ax.plot(d_line, fit.predict(d_line), color=colours[key], lw=1, alpha=0.7,
                        ls="-" if precision == "fp32" else "--",
                        label=f"  plateau {fit.capacity_bits:,.0f} bits = {fit.bits_per_param:.2f} bits/param")
        if reference_bits_per_param:
            ax.axhline(reference_bits_per_param * p, color=colours[key], ls=":", lw=1)
    if reference_bits_per_param:
        ax.plot([], [], color="k", ls=":", lw=1, label=f"{_per_param(reference_bits_per_param)} · P (Morris et al.)")
    ax.set(xscale="log", yscale="log", xlabel="data bits (N · S · log2 V)", ylabel="memorized bits",
           title=title or "Memorization of uniform random sequences")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out_png)
