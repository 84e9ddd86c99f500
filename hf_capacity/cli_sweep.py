"""The `hf-capacity sweep`, `fit`, `plot` and `predict` commands: thin wrappers around ``hf_capacity.sweep``.

    hf-capacity sweep examples/sweeps/cpu_study.yaml [--dry-run] [--fail-fast] [--max-runs K] [--shard i/n]
    hf-capacity fit sweeps/cpu_study [--by architecture,exposures,precision] [--json]
    hf-capacity plot sweeps/cpu_study [--out DIR]
    hf-capacity predict --params 1e6 3e6 [--N 100000] [--ratio 2 | --fit sweeps/cpu_study] [--tokens 2e9]

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


# ------------------------------------------------------------------------------------------------ predict
PAPER_RATIO = 2.0
"""Bits/param the paper measures at 1000 exposures (GPT2, bioS): the default capacity ratio of `predict`."""


def _pick_group(capacity, by: list[str], group: str | None) -> dict:
    """The row of a fit's R* table (grouped by the ``by`` columns) that ``group`` ("architecture=gpt2,...") selects."""
    rows = capacity.to_dict("records")
    if group:
        wanted = {}
        for item in group.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise _cli_error(f"--group: expected column=value pairs separated by commas, got {item!r}")
            wanted[key.strip()] = value.strip()
        rows = [r for r in rows if all(str(r.get(k)) == v for k, v in wanted.items())]
    rows = [r for r in rows if not math.isnan(r["ratio_bits_per_param"])]
    if len(rows) != 1:
        have = sorted(",".join(f"{k}={r[k]}" for k in by) for r in capacity.to_dict("records")
                      if not math.isnan(r["ratio_bits_per_param"]))
        if not have:
            raise _cli_error("the fit located no capacity limit (no capacity-limited run in any group): "
                             "pass --ratio instead")
        what = "matches no group with a fitted R*" if not rows else "matches several groups"
        raise _cli_error(f"--group {group or '(none)'} {what}; choose one of: {'; '.join(have)}")
    return rows[0]


def predict_report(*, params=(), ratio: float | None = None, ratio_source: str = "", bits_max: float | None = None,
                   tokens=(), loss_law=None, loss_source: str = "", compute=()) -> dict:
    """Predictions from a capacity ratio and a loss law, as one JSON-ready dict.

    ``params``: model sizes P (the paper's count); bits = min(bits_max, R·P), or R·P without ``bits_max``.
    ``tokens``: with ``params`` read as non-embedding sizes N, the loss L(N, D) in nats/token of ``loss_law``
    (a ``scaling.ChinchillaLaw``; default Hoffmann et al. 2022) for every pair. ``compute``: the compute-optimal
    (N, D) at C = 6·N·D FLOPs.
    """
    from .scaling import HOFFMANN_2022, predict_bits

    out: dict = {"ratio_bits_per_param": ratio, "ratio_source": ratio_source}
    if bits_max is not None:
        out["bits_max"] = bits_max
        out["params_to_store_all"] = math.ceil(bits_max / ratio)
    out["capacity"] = []
    for p in params:
        bits = float(predict_bits(p, bits_max, ratio)) if bits_max is not None else ratio * p
        row = {"params": p, "bits": bits}
        if bits_max is not None:
            row["fraction_of_bits_max"] = bits / bits_max
        out["capacity"].append(row)
    if tokens or compute:
        law = loss_law or HOFFMANN_2022
        out["loss_law"] = {"source": loss_source, "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha,
                           "beta": law.beta}
        out["loss"] = [{"params": n, "tokens": d, "loss_nats": float(law.predict(n, d))}
                       for n in params for d in tokens]
        out["compute_optimal"] = []
        for c in compute:
            n_opt, d_opt = law.compute_optimal(c)
            out["compute_optimal"].append({"compute_flops": c, "params": float(n_opt), "tokens": float(d_opt),
                                           "loss_nats": float(law.predict(n_opt, d_opt))})
    return out


def _print_predictions(report: dict) -> None:
    print(f"Capacity: R = {report['ratio_bits_per_param']:.3f} bits/param ({report['ratio_source']})")
    if "bits_max" in report:
        print(f"  data set: {report['bits_max']:,.0f} bits (bits_max); all of it needs "
              f"{report['params_to_store_all']:,} params at this R")
    if report["capacity"]:
        share = "bits_max" in report
        print(f"  {'params P':>14}  {'predicted bits':>16}" + (f"  {'of bits_max':>12}" if share else ""))
        for row in report["capacity"]:
            line = f"  {row['params']:>14,.0f}  {row['bits']:>16,.0f}"
            if share:
                line += f"  {row['fraction_of_bits_max']:>11.1%}"
            print(line)
    if "loss_law" in report:
        law = report["loss_law"]
        print(f"\nLoss law ({law['source']}): L = {law['E']:.3f} + {law['A']:.4g}/N^{law['alpha']:.3f} + "
              f"{law['B']:.4g}/D^{law['beta']:.3f}  (N params: non-embedding in fits to sweeps; D tokens; nats/token)")
        for row in report["loss"]:
            print(f"  N = {row['params']:>14,.0f}  D = {row['tokens']:>18,.0f}  L = {row['loss_nats']:.4f}")
        for row in report["compute_optimal"]:
            print(f"  compute-optimal at C = {row['compute_flops']:.3g} FLOPs: N = {row['params']:,.0f}, "
                  f"D = {row['tokens']:,.0f} tokens, L = {row['loss_nats']:.4f}")


def cmd_predict(args) -> None:
    from .cli import budget_report
    from .scaling import HOFFMANN_2022

    if args.tokens and not args.params:
        raise _cli_error("--tokens needs --params (the non-embedding sizes N to predict the loss at)")
    if not (args.params or args.compute):
        raise _cli_error("give --params (and optionally --tokens) or --compute")
    for flag in ("params", "tokens", "compute"):
        bad = [v for v in getattr(args, flag) or () if not (v > 0 and math.isfinite(v))]
        if bad:
            raise _cli_error(f"--{flag} must be positive numbers, got {bad[0]}")
    ratio, ratio_source = args.ratio, "given"
    loss_law, loss_source = HOFFMANN_2022, "Hoffmann et al. 2022, published"
    if args.fit:
        from .sweep import fit_sweep, load_results

        table = load_results(args.fit)
        by = [b.strip() for b in args.by.split(",") if b.strip()]
        try:
            fit = fit_sweep(table, by=by, n_bootstrap=args.n_bootstrap, loss_fit=bool(args.tokens or args.compute))
        except ValueError as err:
            raise _cli_error(f"{args.fit}: {err}") from None
        if ratio is None:
            row = _pick_group(fit.capacity, fit.by, args.group)
            ratio = float(row["ratio_bits_per_param"])
            label = ", ".join(f"{b}={row[b]}" for b in by)
            ratio_source = (f"R* fitted to {args.fit} ({label}; 95% CI "
                            f"{_format_ci(row['ci_low'], row['ci_high'])})")
        if args.tokens or args.compute:
            if fit.loss_fit is None:
                raise _cli_error(f"{args.fit}: no loss law: {fit.loss_note}")
            loss_law, loss_source = fit.loss_fit.law, f"fitted to {args.fit}, {fit.loss_fit.n_points} runs"
    if ratio is None:
        ratio, ratio_source = PAPER_RATIO, "the paper's value at 1000 exposures; pass --ratio or --fit to change it"
    if not (ratio > 0 and math.isfinite(ratio)):
        raise _cli_error(f"--ratio must be a positive number of bits/param, got {ratio}")
    bits_max = budget_report(args)["bits_max"] if args.N is not None else None
    report = predict_report(params=args.params or (), ratio=ratio, ratio_source=ratio_source, bits_max=bits_max,
                            tokens=args.tokens or (), loss_law=loss_law, loss_source=loss_source,
                            compute=args.compute or ())
    if args.json:
        print(json.dumps(report))
    else:
        _print_predictions(report)


# ------------------------------------------------------------------------------------------------ parsers
def add_sweep_commands(subparsers) -> None:
    """Add `sweep`, `fit`, `plot` and `predict` to an ``argparse`` subparsers object (`hf-capacity`'s)."""
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

    from .cli import _add_population_args

    q = subparsers.add_parser(
        "predict", help="predicted bits for model sizes (capacity law) and loss for sizes × tokens (loss law)",
        description="Predict with a capacity ratio (--ratio, or R* fitted to a sweep with --fit, default 2 bits/param) "
                    "and a Chinchilla-form loss law (fitted with --fit, default Hoffmann et al. 2022). With --N "
                    "(and the data flags) predictions are capped at the data set's bits_max.",
    )
    q.add_argument("--params", type=float, nargs="+", help="model sizes P (paper's count; non-embedding for --tokens)")
    q.add_argument("--tokens", type=float, nargs="+", help="training tokens D: predict the loss at every (P, D)")
    q.add_argument("--compute", type=float, nargs="+", help="FLOP budgets C: the compute-optimal N and D (C = 6ND)")
    q.add_argument("--ratio", type=float, default=None, help="capacity ratio in bits/param")
    q.add_argument("--fit", default=None, help="a sweep folder or results table to fit R* and the loss law to")
    q.add_argument("--by", default="architecture,exposures,precision", help="grouping columns of the R* fit")
    q.add_argument("--group", default=None, help="which fitted group to use, e.g. architecture=gpt2,exposures=100")
    q.add_argument("--n-bootstrap", type=int, default=200, help="bootstrap resamples for the R* interval")
    _add_population_args(q, with_seed=False)
    q.set_defaults(N=None)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_predict)


def build_sweep_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with only these four commands (tests; `hf-capacity` itself uses cli.build_parser)."""
    parser = argparse.ArgumentParser(prog="hf-capacity")
    add_sweep_commands(parser.add_subparsers(dest="command", required=True))
    return parser
