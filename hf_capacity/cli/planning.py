"""`hf-capacity budget` and `hf-capacity predict`: the knowledge in a data set, and what a capacity ratio and a loss
law predict for model sizes, token counts and compute budgets.

    hf-capacity budget --dataset bioS --N 1e6
    hf-capacity predict --params 1e6 3e6 [--N 100000] [--ratio 2 | --fit sweeps/cpu_study] [--tokens 2e9]
"""

from __future__ import annotations

import json
import math

from ..bits import BioDShape, biod_bits_max, bios_bits_max, params_for_bits
from ._common import CLIError, add_command, add_count, add_population_args, format_ci

PAPER_RATIO = 2.0
"""Bits/param the paper measures at 1000 exposures (GPT2, bioS): the default capacity ratio of `predict`."""


# -------------------------------------------------------------------------------------------- budget
def budget_report(args) -> dict:
    """The knowledge in a data set, and the parameters needed to store it at 2 and 1 bits/param."""
    if args.dataset == "bioD":
        bits = biod_bits_max(BioDShape(args.N, args.K, args.C, args.D, args.L, args.T))
    else:
        bits = bios_bits_max(args.N)
    total = bits.total
    return {
        "dataset": args.dataset,
        "n_people": args.N,
        **({"K": args.K, "C": args.C, "D": args.D, "L": args.L, "T": args.T} if args.dataset == "bioD" else {}),
        "name_bits": bits.name_bits,
        "value_bits": bits.value_bits,
        "diversity_bits": bits.diversity_bits,
        "bits_max": total,
        "bits_per_person": total / args.N,
        "params_at_2_bits": params_for_bits(total, 2.0),
        "params_at_1_bit": params_for_bits(total, 1.0),
    }


def print_budget(report: dict) -> None:
    print(f"{report['dataset']}(N={report['n_people']:,}): knowledge to store")
    rows = [
        ("name bits", report["name_bits"]),
        ("value bits", report["value_bits"]),
        ("diversity bits", report["diversity_bits"]),
        ("total (bits_max)", report["bits_max"]),
    ]
    for label, value in rows:
        print(f"  {label:<28}{value:>18,.0f}")
    print(f"  {'bits per person':<28}{report['bits_per_person']:>18.2f}")
    print(f"  {'params at 2 bits/param':<28}{report['params_at_2_bits']:>18,}   (1000 exposures)")
    print(f"  {'params at 1 bit/param':<28}{report['params_at_1_bit']:>18,}   (100 exposures)")


def cmd_budget(args) -> None:
    report = budget_report(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_budget(report)


# ------------------------------------------------------------------------------------------------ predict
def _pick_group(capacity, by: list[str], group: str | None) -> dict:
    """The row of a fit's R* table (grouped by the ``by`` columns) that ``group`` ("architecture=gpt2,...") selects."""
    rows = capacity.to_dict("records")
    if group:
        wanted = {}
        for item in group.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise CLIError(f"--group: expected column=value pairs separated by commas, got {item!r}")
            wanted[key.strip()] = value.strip()
        rows = [r for r in rows if all(str(r.get(k)) == v for k, v in wanted.items())]
    rows = [r for r in rows if not math.isnan(r["ratio_bits_per_param"])]
    if len(rows) != 1:
        have = sorted(",".join(f"{k}={r[k]}" for k in by) for r in capacity.to_dict("records")
                      if not math.isnan(r["ratio_bits_per_param"]))
        if not have:
            raise CLIError("the fit located no capacity limit (no capacity-limited run in any group): "
                             "pass --ratio instead")
        what = "matches no group with a fitted R*" if not rows else "matches several groups"
        raise CLIError(f"--group {group or '(none)'} {what}; choose one of: {'; '.join(have)}")
    return rows[0]


def predict_report(*, params=(), ratio: float | None = None, ratio_source: str = "", bits_max: float | None = None,
                   tokens=(), loss_law=None, loss_source: str = "", compute=()) -> dict:
    """Predictions from a capacity ratio and a loss law, as one JSON-ready dict.

    ``params``: model sizes P (the paper's count); bits = min(bits_max, R·P), or R·P without ``bits_max``.
    ``tokens``: with ``params`` read as non-embedding sizes N, the loss L(N, D) in nats/token of ``loss_law``
    (a ``scaling.ChinchillaLaw``; default Hoffmann et al. 2022) for every pair. ``compute``: the compute-optimal
    (N, D) at C = 6·N·D FLOPs.
    """
    from ..scaling import HOFFMANN_2022, predict_bits

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
        out["loss"] = [{"params": n, "tokens": d, "loss_nats": float(law.predict(float(n), float(d)))}
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
    from ..scaling import HOFFMANN_2022

    if args.tokens and not args.params:
        raise CLIError("--tokens needs --params (the non-embedding sizes N to predict the loss at)")
    if not (args.params or args.compute):
        raise CLIError("give --params (and optionally --tokens) or --compute")
    bad = [c for c in args.compute or () if not (c > 0 and math.isfinite(c))]
    if bad:  # --params and --tokens are whole numbers >= 1 already (``count``)
        raise CLIError(f"--compute must be positive numbers of FLOPs, got {bad[0]}")
    ratio, ratio_source = args.ratio, "given"
    loss_law, loss_source = HOFFMANN_2022, "Hoffmann et al. 2022, published"
    if args.fit:
        from ..sweep import fit_sweep, load_results, require_finished_runs

        table = require_finished_runs(load_results(args.fit), args.fit)
        by = [b.strip() for b in args.by.split(",") if b.strip()]
        try:
            fit = fit_sweep(table, by=by, n_bootstrap=args.n_bootstrap, loss_fit=bool(args.tokens or args.compute))
        except ValueError as err:
            raise CLIError(f"{args.fit}: {err}") from None
        if ratio is None:
            row = _pick_group(fit.capacity, fit.by, args.group)
            ratio = float(row["ratio_bits_per_param"])
            label = ", ".join(f"{b}={row[b]}" for b in by)
            ratio_source = (f"R* fitted to {args.fit} ({label}; 95% CI "
                            f"{format_ci(row['ci_low'], row['ci_high'])})")
        if args.tokens or args.compute:
            if fit.loss_fit is None:
                raise CLIError(f"{args.fit}: no loss law: {fit.loss_note}")
            loss_law, loss_source = fit.loss_fit.law, f"fitted to {args.fit}, {fit.loss_fit.n_points} runs"
    if ratio is None:
        ratio, ratio_source = PAPER_RATIO, "the paper's value at 1000 exposures; pass --ratio or --fit to change it"
    if not (ratio > 0 and math.isfinite(ratio)):
        raise CLIError(f"--ratio must be a positive number of bits/param, got {ratio}")
    bits_max = budget_report(args)["bits_max"] if args.N is not None else None
    report = predict_report(params=args.params or (), ratio=ratio, ratio_source=ratio_source, bits_max=bits_max,
                            tokens=args.tokens or (), loss_law=loss_law, loss_source=loss_source,
                            compute=args.compute or ())
    if args.json:
        print(json.dumps(report))
    else:
        _print_predictions(report)


# ------------------------------------------------------------------------------------------------ parsers
def add_commands(subparsers) -> None:
    """Add `budget` and `predict` to `hf-capacity`'s subparsers."""
    b = add_command(subparsers, "budget",
                    help="bits of knowledge in a data set and the parameters needed to store them")
    add_population_args(b, with_seed=False)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_budget)

    q = add_command(
        subparsers, "predict",
        help="predicted bits for model sizes (capacity law) and loss for sizes × tokens (loss law)",
        description="Predict with a capacity ratio (--ratio, or R* fitted to a sweep with --fit, "
                    "default 2 bits/param) and a Chinchilla-form loss law (fitted with --fit, "
                    "default Hoffmann et al. 2022). With --N "
                    "(and the data flags) predictions are capped at the data set's bits_max.",
    )
    add_count(q, "--params", nargs="+", help="model sizes P (paper's count; non-embedding for --tokens), e.g. 1e6")
    add_count(q, "--tokens", nargs="+", help="training tokens D: predict the loss at every (P, D)")
    q.add_argument("--compute", type=float, nargs="+", help="FLOP budgets C: the compute-optimal N and D (C = 6ND)")
    q.add_argument("--ratio", type=float, default=None, help="capacity ratio in bits/param (default: the fit's R*, "
                   f"else the paper's {PAPER_RATIO:g})")
    q.add_argument("--fit", default=None, help="a sweep folder or results table to fit R* and the loss law to")
    q.add_argument("--by", default="architecture,exposures,precision", help="grouping columns of the R* fit")
    q.add_argument("--group", default=None, help="which fitted group to use, e.g. architecture=gpt2,exposures=100")
    add_count(q, "--n-bootstrap", minimum=0, default=200, help="bootstrap resamples for the R* interval")
    add_population_args(q, with_seed=False)
    q.set_defaults(N=None)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_predict)
