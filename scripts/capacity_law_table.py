"""Write the capacity-law table and figure of one or more sweeps (issue 18's ladder and its bioS runs).

    python scripts/capacity_law_table.py sweeps/cpu_capacity_law [more sweeps] \\
        -o docs/results/capacity_law.csv --figure docs/figures/capacity_law.png
    python scripts/capacity_law_table.py sweeps/gpu_capacity_law_bios --with-table docs/results/capacity_law.csv \\
        -o docs/results/capacity_law.csv --figure docs/figures/capacity_law.png     # add a run to the committed table

One row per finished run (``hf_capacity.sweep.capacity_law_table``). The law is fitted on the bioD runs at 1000
exposures and context 256 (the ladder; the context-512 control and the bioS runs are shown, not fitted): R*
(``fit_capacity_law``, basic bootstrap interval over runs) and the log-log slope of bits against P
(``fit_loglog_slope``, t interval). Prints the table and the two fits.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from hf_capacity.plots import plot_capacity_law
from hf_capacity.scaling import fit_capacity_law, fit_loglog_slope
from hf_capacity.sweep import capacity_law_table, load_results, require_finished_runs

CAPACITY_LIMITED = 0.8
"""A run is a point of the law when it learned less than this fraction of its data (bits < 0.8 · bits_max): its
data did not limit it. A run that learned more stays in the table as a lower bound on its size's capacity."""


def ladder_points(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the law is fitted on: bioD, 1000 exposures, context 256, fp32, the whole vocabulary, capacity-limited
    (``CAPACITY_LIMITED``). The rows trained with the fitted vocabulary before 2026-12-06 stay in the table as a
    record, outside the fit."""
    keep = (table["dataset"] == "bioD") & (table["exposures"] == 1000) & (table["context_length"] == 256)
    keep &= (table["precision"] == "fp32") & (table["vocabulary"] == "whole")
    return table[keep & (table["fraction_learned"] < CAPACITY_LIMITED)]


def fits(table: pd.DataFrame):
    """(R* fit, slope fit) of the ladder rows of a capacity-law table."""
    points = ladder_points(table)
    frame = pd.DataFrame({"params": points["P"], "bits": points["bits"], "bits_max": points["R_max"] * points["P"],
                          "run_id": points["run_id"]})
    return fit_capacity_law(frame, n_bootstrap=2000, seed=0), fit_loglog_slope(points["P"], points["bits"])


def one_layer_slope(table: pd.DataFrame):
    """The log-log slope over the ladder's one-layer shapes alone (``fit_loglog_slope``), or None with fewer than
    three such runs: the paper notes one-layer models store slightly less, so a ladder that mixes depths can read
    a slope above 1 from depth alone."""
    points = ladder_points(table)
    points = points[points["layers"] == 1]
    return fit_loglog_slope(points["P"], points["bits"]) if len(points) >= 3 else None


def figure_points(table: pd.DataFrame) -> pd.DataFrame:
    """The whole-vocabulary rows, with a ``series`` column for the figure's markers: the dataset for the ladder's
    context (256), "<dataset>, context <n>" for a context control, and apart the runs that learned most of their
    data (lower bounds)."""
    points = table[table["vocabulary"] == "whole"]
    series = [f"{r.dataset}, learned ≥ {CAPACITY_LIMITED:.0%} of its data (a lower bound)"
              if r.fraction_learned >= CAPACITY_LIMITED else
              r.dataset if r.context_length == 256 else f"{r.dataset}, context {r.context_length}"
              for r in points.itertuples()]
    return points.assign(series=series)


def markdown_rows(table: pd.DataFrame) -> list[str]:
    """The rows of the table in docs/studies/capacity_law.md (dataset, model, layers, width, exposures, precision,
    P, non-embedding share, N, R_max, bits, bits/param, learned, context, vocabulary, learning rate, seed) of a
    capacity-law table."""
    return [f"| {r.dataset} | {r.model} | {r.layers} | {r.width} | {r.exposures} | {r.precision} | {r.P:,} | "
            f"{r.non_embedding_share:.0%} | {r.N:,} | {r.R_max:.2f} | {r.bits:,.0f} | **{r.bits_per_param:.3f}** | "
            f"{r.fraction_learned:.0%} | "
            f"{r.context_length} | {r.vocabulary} | {r.learning_rate:g} | {r.seed} |" for r in table.itertuples()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep folders (or their results.csv)")
    parser.add_argument("--with-table", default=None, metavar="CSV",
                        help="a capacity-law CSV written before, whose rows join the sweeps' (same run_id and "
                             "vocabulary: the sweep's row)")
    parser.add_argument("-o", "--output", default=None, help="CSV to write (default: print only)")
    parser.add_argument("--figure", default=None, help="PNG to write")
    args = parser.parse_args()
    try:
        parts = [capacity_law_table(require_finished_runs(load_results(s), s)) for s in args.sweeps]
        if args.with_table:
            parts.insert(0, pd.read_csv(args.with_table))
        table = pd.concat(parts, ignore_index=True)
        # A run id hashes the settings that differ from the defaults: the fitted-vocabulary rows trained while that
        # was the default share their id with today's whole-vocabulary runs, so the vocabulary is part of the key.
        table = (table.drop_duplicates(["run_id", "vocabulary"], keep="last")
                 .sort_values(["vocabulary", "dataset", "P", "context_length"], ascending=[False, True, True, True]))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        law, slope = fits(table)
    except ValueError as err:  # too few ladder runs yet: the table and points are still worth writing
        law = slope = None
        print(f"no fit yet: {err}", file=sys.stderr)
    if args.output:
        table.to_csv(args.output, index=False, float_format="%.6g")
    if args.figure:  # the law's points and its controls; the fitted-vocabulary record stays in the CSV only
        plot_capacity_law(figure_points(table), args.figure, fit=law, slope=slope, group_by="series")
    print(table.drop(columns="run_id").to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print("\n".join(markdown_rows(table)))
    if law is not None:
        print(f"R* = {law.ratio_bits_per_param:.3f} bits/param, {law.ci_level:.0%} CI [{law.ci_low:.3f}, "
              f"{law.ci_high:.3f}] ({law.n_capacity_limited} of {law.n_runs} runs capacity-limited)")
        print(f"log-log slope {slope.slope:.3f}, {slope.ci_level:.0%} CI [{slope.ci_low:.3f}, {slope.ci_high:.3f}] "
              f"over {slope.n_points} runs")
        shallow = one_layer_slope(table)
        if shallow is not None:
            print(f"one-layer shapes only: log-log slope {shallow.slope:.3f}, {shallow.ci_level:.0%} CI "
                  f"[{shallow.ci_low:.3f}, {shallow.ci_high:.3f}] over {shallow.n_points} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
