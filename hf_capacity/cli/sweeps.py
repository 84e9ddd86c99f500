"""`hf-capacity sweep`, `fit`, `plot` and `status`: thin wrappers around ``hf_capacity.sweep``.

    hf-capacity sweep examples/sweeps/cpu_study.yaml [--dry-run [--r-max R]] [--fail-fast] [--max-runs K] [--shard i/n]
    hf-capacity fit sweeps/cpu_study [--by architecture,exposures,precision] [--json]
    hf-capacity plot sweeps/cpu_study [--out DIR]
    hf-capacity status sweeps/cpu_study [--json]       # or one run folder
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ._common import CLIError, add_command, add_count, format_ci, is_divergence


# -------------------------------------------------------------------------------------------------- sweep
def cmd_sweep(args) -> None:
    from ..sweep import SweepConfigError, SweepRunFailed, run_sweep

    try:
        if args.r_max is not None and not args.dry_run:
            raise CLIError("--r-max sizes the runs of a dry run: add --dry-run")
        table = run_sweep(args.config, dry_run=args.dry_run, fail_fast=args.fail_fast, max_runs=args.max_runs,
                          shard=args.shard, r_max=args.r_max)
    except SweepConfigError as err:
        raise CLIError(f"{args.config}: {err}") from None
    except SweepRunFailed as err:
        if is_divergence(err.__cause__):
            raise CLIError(str(err), exit_code=1) from None
        raise CLIError(str(err)) from None
    if table.empty:
        return
    if args.dry_run:
        invalid = table[table["status"] == "invalid"]
        if len(invalid):
            reasons = "; ".join(f"{r.run_id}: {r.error}" for r in invalid.head(3).itertuples())
            raise CLIError(f"{args.config}: {len(invalid)} of {len(table)} runs would fail before training "
                           f"({reasons}{'; ...' if len(invalid) > 3 else ''})")
        return
    failed = table[table["status"] == "failed"]
    if len(failed):
        ids = ", ".join(failed["run_id"].head(5)) + (" ..." if len(failed) > 5 else "")
        diverged = failed["error"].fillna("").str.startswith("TrainingDivergedError").all()
        raise CLIError(
            f"{len(failed)} of {len(table)} runs failed ({ids}); see the error column of results.csv and "
            "runs/<run_id>/error.json. Run the sweep again to retry them.", exit_code=1 if diverged else 2,
        )


# ---------------------------------------------------------------------------------------------------- fit
def _finished_table(source: str):
    """The results table of ``source`` (a table or a sweep folder), refused in one line when no run finished."""
    from ..sweep import load_results, require_finished_runs

    return require_finished_runs(load_results(source), source)


def cmd_fit(args) -> None:
    from ..sweep import fit_sweep
    from ..sweep.config import plural

    table = _finished_table(args.results)
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    try:
        result = fit_sweep(table, by=by, n_bootstrap=args.n_bootstrap, loss_fit=not args.no_loss_fit)
    except ValueError as err:
        raise CLIError(f"{args.results}: {err}") from None
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return
    print(f"Capacity law bits ≈ min(bits_max, R*·P) over {plural(result.n_runs, 'finished run')} "
          f"(P: the paper's count; 95% CI: run-clustered bootstrap)")
    for warning in result.warnings:
        print(f"warning: {warning}")
    header = ("".join(f"{b:<16}" for b in by)
              + f"{'R* (bits/param)':>16}  {'95% CI':<18}{'runs':>6}{'cap.-limited':>14}{'undertrained':>14}")
    print(header)
    for row in result.capacity.to_dict("records"):
        cells = "".join(f"{str(row[b]):<16}" for b in by)
        r = row["ratio_bits_per_param"]
        r_text = "n/a" if r is None or math.isnan(r) else f"{r:.3f}"
        print(f"{cells}{r_text:>16}  {format_ci(row['ci_low'], row['ci_high']):<18}{row['n_runs']:>6}"
              f"{row['n_capacity_limited']:>14}{row['n_undertrained']:>14}")
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
    from ..sweep import plot_sweep

    source = Path(args.results)
    table = _finished_table(args.results)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "plots"
    try:
        paths = plot_sweep(table, out)
    except ValueError as err:
        raise CLIError(f"{args.results}: {err}") from None
    for path in paths:
        print(path)


# ------------------------------------------------------------------------------------------------- status
def _ago(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _exposures(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def status_lines(table) -> list[str]:
    """``sweep_progress``'s table as the lines ``hf-capacity status`` prints."""
    counts = table["status"].value_counts()
    lines = [f"{len(table)} run{'s' if len(table) != 1 else ''}: "
             + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "incomplete", "failed", "pending"))]
    width = max([len("run"), *map(len, table["run_id"])])
    lines.append(f"{'#':>3}  {'run':<{width}}  {'status':<10}  {'steps trained':<24}  {'exposures':<11}  "
                 f"{'stored (share of the data)':<46}  last write")
    for r in table.to_dict("records"):
        index = "" if not _known(r["index"]) else f"{int(r['index'])}"
        steps = "-"
        if _known(r["step"]) and _known(r["max_steps"]):
            steps = f"{int(r['step']):,} / {int(r['max_steps']):,} ({r['trained']:.0%})"
        exposures = "-"
        if _known(r["exposures"]) and _known(r["exposures_planned"]):
            exposures = f"{_exposures(r['exposures'])} / {r['exposures_planned']:g}"
        elif _known(r["exposures"]):  # a run of max_steps: as its checkpoint logged them
            exposures = _exposures(r["exposures"])
        stored = "-"
        final = _known(r["bits_per_param"])
        bits, share = ((r["bits_per_param"], r["fraction_learned"]) if final
                       else (r["measured_bits_per_param"], r["measured_fraction_learned"]))
        if _known(bits):
            stored = f"{bits:.3f} bits/param" + (f" ({share:.1%})" if _known(share) else "")
            if not final and _known(r["measured_exposures"]):
                stored += f" at {_exposures(r['measured_exposures'])} exp."
        lines.append(f"{index:>3}  {r['run_id']:<{width}}  {r['status']:<10}  {steps:<24}  {exposures:<11}  "
                     f"{stored:<46}  {_ago(r['last_write_s'])}")
        if r["status"] == "failed" and r.get("error"):
            lines.append(f"{'':>3}  error: {r['error']}")
    return lines


def cmd_status(args) -> None:
    from ..sweep.progress import sweep_progress

    try:
        table = sweep_progress(args.path)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    if args.json:
        records = [{k: (v if _known(v) else None) for k, v in r.items()} for r in table.to_dict("records")]
        print(json.dumps(records, default=str))
        return
    print(f"{args.path}: " + "\n".join(status_lines(table)))


# ------------------------------------------------------------------------------------------------ parsers
def add_commands(subparsers) -> None:
    """Add `sweep`, `fit`, `plot` and `status` to `hf-capacity`'s subparsers."""
    s = add_command(
        subparsers, "sweep", help="train a grid of capacity runs from a YAML file (resumable; one folder per run)",
        description="Run the sweep described by a YAML file (examples/sweeps/README.md). Finished runs are skipped, "
                    "crashed ones restarted; results.csv is rebuilt after every run. Several GPUs: launch one "
                    "process per GPU, e.g. CUDA_VISIBLE_DEVICES=i hf-capacity sweep cfg.yaml --shard i/n.",
    )
    s.add_argument("config", help="sweep YAML file (base:, grid:, runs:, rules:, output_dir:)")
    s.add_argument("--dry-run", action="store_true",
                   help="check every run and list it with its estimated steps, P and R_max; train nothing")
    s.add_argument("--r-max", type=float, default=None, metavar="R",
                   help="with --dry-run: also the number of people at which each run's R_max = bits_max / P "
                        "reaches R bits/param (e.g. 3.5: a run storing ~2.5 bits/param stays capacity-limited)")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    add_count(s, "--max-runs", minimum=0, default=None,
              help="train at most K runs now (finished runs don't count)")
    s.add_argument("--shard", default=None, metavar="i/n", help="only runs with index %% n == i (one process per GPU)")
    s.set_defaults(func=cmd_sweep)

    f = add_command(subparsers, "fit", help="fit the capacity law R* (and a loss law) to a sweep's results")
    f.add_argument("results", help="results.csv / results.parquet, or a sweep folder")
    f.add_argument("--by", default="architecture,exposures,precision", help="comma-separated grouping columns")
    add_count(f, "--n-bootstrap", minimum=0, default=1000, help="bootstrap resamples for the R* interval")
    f.add_argument("--no-loss-fit", action="store_true", help="skip the Chinchilla-form fit of final train loss")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=cmd_fit)

    p = add_command(subparsers, "plot", help="paper-style PNGs of a sweep: bits vs params, R vs params")
    p.add_argument("results", help="results.csv / results.parquet, or a sweep folder")
    p.add_argument("--out", default=None, help="output folder (default: <sweep folder>/plots)")
    p.set_defaults(func=cmd_plot)

    st = add_command(subparsers, "status",
                     help="how far a sweep's runs (or one run) have got: steps, exposures, the latest bits/param "
                          "measured, the last write")
    st.add_argument("path", help="a sweep folder (its output_dir), one run folder, or a folder of run folders")
    st.add_argument("--json", action="store_true", help="print one JSON list, a record per run")
    st.set_defaults(func=cmd_status)
