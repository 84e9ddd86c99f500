"""The `hf-capacity sweep`, `fit` and `plot` commands: thin wrappers around ``hf_capacity.sweep``.

    hf-capacity sweep examples/sweeps/cpu_study.yaml [--dry-run] [--fail-fast] [--max-runs K] [--shard i/n]
    hf-capacity fit sweeps/cpu_study [--by architecture,exposures,precision] [--json]
    hf-capacity plot sweeps/cpu_study [--out DIR]

``add_sweep_commands(subparsers)`` adds them to the `hf-capacity` parser (``cli.build_parser`` calls it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _cli_error(message: str) -> Exception:
    from .cli import CLIError  # imported here: cli imports this module

    return CLIError(message)


# -------------------------------------------------------------------------------------------------- sweep
def cmd_sweep(args) -> None:
    from .sweep import SweepConfigError, SweepRunFailed, run_sweep

    try:
        table = run_sweep(args.config, dry_run=args.dry_run, fail_fast=args.fail_fast, max_runs=args.max_runs,
                          shard=args.shard)
    except SweepConfigError as err:
        raise _cli_error(f"{args.config}: {err}") from None
    except SweepRunFailed as err:
        raise _cli_error(str(err)) from None
    if args.dry_run or table.empty:
        return
    failed = table[table["status"] == "failed"]
    if len(failed):
        ids = ", ".join(failed["run_id"].head(5)) + (" ..." if len(failed) > 5 else "")
        raise _cli_error(
            f"{len(failed)} of {len(table)} runs failed ({ids}); see the error column of results.csv and "
            "runs/<run_id>/error.json. Run the sweep again to retry them."
        )


# ---------------------------------------------------------------------------------------------------- fit
def _format_ci(low, high) -> str:
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a"
    return f"[{low:.3f}, {high:.3f}]"


def cmd_fit(args) -> None:
    from .sweep import fit_sweep, load_results

    table = load_results(args.results)
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    try:
        result = fit_sweep(table, by=by, n_bootstrap=args.n_bootstrap, loss_fit=not args.no_loss_fit)
    except ValueError as err:
        raise _cli_error(f"{args.results}: {err}") from None
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return
    print(f"Capacity law bits ≈ min(bits_max, R*·P) over {result.n_runs} finished runs "
          f"(P: the paper's count; 95% CI: run-clustered bootstrap)")
    header = "".join(f"{b:<16}" for b in by) + f"{'R* (bits/param)':>16}  {'95% CI':<18}{'runs':>6}{'cap.-limited':>14}"
    print(header)
    for row in result.capacity.to_dict("records"):
        cells = "".join(f"{str(row[b]):<16}" for b in by)
        r = row["ratio_bits_per_param"]
        r_text = "n/a" if r is None or math.isnan(r) else f"{r:.3f}"
        print(f"{cells}{r_text:>16}  {_format_ci(row['ci_low'], row['ci_high']):<18}{row['n_runs']:>6}"
              f"{row['n_capacity_limited']:>14}")
        if row.get("note"):
            print(f"    note: {row['note']}")
    if result.loss_fit is not None:
        law = result.loss_fit.law
        print(f"\nLoss law (final train loss, N non-embedding params, D tokens; {result.loss_fit.n_points} runs): "
              f"L = {law.E:.3f} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f}")
    else:
        print(f"\n{result.loss_note}")


# --------------------------------------------------------------------------------------------------- plot
def cmd_plot(args) -> None:
    from .sweep import load_results, plot_sweep

    source = Path(args.results)
    table = load_results(source)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "plots"
    try:
        paths = plot_sweep(table, out)
    except ValueError as err:
        raise _cli_error(f"{args.results}: {err}") from None
    for path in paths:
        print(path)


# ------------------------------------------------------------------------------------------------ parsers
def add_sweep_commands(subparsers) -> None:
    """Add `sweep`, `fit` and `plot` to an ``argparse`` subparsers object (the `hf-capacity` parser's)."""
    s = subparsers.add_parser(
        "sweep", help="train a grid of capacity runs from a YAML file (resumable; one folder per run)",
        description="Run the sweep described by a YAML file (examples/sweeps/README.md). Finished runs are skipped, "
                    "crashed ones restarted; results.csv is rebuilt after every run. Several GPUs: launch one "
                    "process per GPU, e.g. CUDA_VISIBLE_DEVICES=i hf-capacity sweep cfg.yaml --shard i/n.",
    )
    s.add_argument("config", help="sweep YAML file (base:, grid:, runs:, rules:, output_dir:)")
    s.add_argument("--dry-run", action="store_true", help="list the runs and their estimated steps; train nothing")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    s.add_argument("--max-runs", type=int, default=None, help="train at most K runs now (finished runs don't count)")
    s.add_argument("--shard", default=None, metavar="i/n", help="only runs with index %% n == i (one process per GPU)")
    s.set_defaults(func=cmd_sweep)

    f = subparsers.add_parser("fit", help="fit the capacity law R* (and a loss law) to a sweep's results")
    f.add_argument("results", help="results.csv / results.parquet, or a sweep folder")
    f.add_argument("--by", default="architecture,exposures,precision",
                   help="comma-separated grouping columns (default: architecture,exposures,precision)")
    f.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the R* interval")
    f.add_argument("--no-loss-fit", action="store_true", help="skip the Chinchilla-form fit of final train loss")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("plot", help="paper-style PNGs of a sweep: bits vs params, R vs params")
    p.add_argument("results", help="results.csv / results.parquet, or a sweep folder")
    p.add_argument("--out", default=None, help="output folder (default: <sweep folder>/plots)")
    p.set_defaults(func=cmd_plot)


def build_sweep_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with only these three commands (tests; `hf-capacity` itself uses cli.build_parser)."""
    parser = argparse.ArgumentParser(prog="hf-capacity")
    add_sweep_commands(parser.add_subparsers(dest="command", required=True))
    return parser
