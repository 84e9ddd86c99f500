"""Memorization studies: a ladder of data sizes per model and precision, each run an ``hf-capacity memorize``.

    # the first CPU study (V = 512, 300 epochs; docs/studies/memorization_cpu.md)
    python scripts/memorization_study.py -o studies/memorization --table-only \\
        --csv docs/results/memorization_cpu.csv --plot docs/figures/memorization_cpu.png
    # Morris et al.'s data shape (V = 2048, S = 64), trained until the stop rule holds, fp32 and true bf16
    # (docs/studies/memorization_morris.md)
    python scripts/memorization_study.py --preset morris -o studies/memorization_morris --workers 2 \\
        --csv docs/results/memorization_morris.csv --plot docs/figures/memorization_morris.png

``--preset`` picks the study's defaults (``PRESETS``); any flag overrides them. Each run is one
``hf-capacity memorize`` process (``OMP_NUM_THREADS=1``, ``--workers`` at a time) writing
``<out>/<model>_hd<d>_<precision>_N<N>/`` (the model, its config and ``memorization.json`` with the curve and the
stop rule's verdict); a run whose ``memorization.json`` exists is skipped and one killed part-way resumes from its
newest checkpoint (``hf-capacity memorize --save-steps``), so the same command started again after a kill goes on
where it stopped. ``log.txt`` keeps every attempt's output; ``wall_time_s.txt`` sums their wall time (updated every
10 s, so a killed attempt counts too). The table has one row per run; the plateau of each (model, precision) is
fitted with ``hf_capacity.memorization_fit.fit_memorization_plateau`` and drawn with
``hf_capacity.plots.plot_memorization``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODELS = {  # name: (model, head dim, ladder of N)
    # the 2026-12-01 CPU study (V = 512): docs/studies/memorization_cpu.md
    "S": ("gpt2-1-1", 16, (32, 64, 128, 256, 512)),
    "M": ("gpt2-1-1", 32, (64, 128, 256, 512, 1024, 2048)),
    "L": ("gpt2-1-2", 32, (128, 256, 512, 1024, 2048)),
    # Morris et al.'s smallest shapes at their data shape (V = 2048, S = 64; 704 bits a sequence): width 32 and 64,
    # one layer; the ladders run from ~0.6x to ~3x the data bits of 3.6 bits/param (P ≈ 78K and 178K)
    "W32": ("gpt2-1-1", 32, (256, 512, 768, 1280)),
    "W64": ("gpt2-1-2", 32, (512, 1024, 1536, 2560)),
}
PRESETS = {
    # the first CPU study: 300 epochs, batch 64, lr 1e-2, fp32 and bf16 autocast
    "cpu": dict(models=["S", "M", "L"], vocab=512, epochs=300, batch_size=64, lr=1e-2, warmup_steps=50,
                precisions=["fp32", "bf16-mixed"], until_saturated=False),
    # Morris et al.'s data shape, trained until the stop rule holds (at most --epochs), fp32 and true bf16
    "morris": dict(models=["W32", "W64"], vocab=2048, epochs=1000, batch_size=64, lr=1e-2, warmup_steps=50,
                   precisions=["fp32", "bf16"], until_saturated=True),
}
PRECISIONS = ("fp32", "bf16-mixed", "bf16", "bf16-sr")
"""``hf-capacity memorize --precision`` (``hf_capacity.memorization.PRECISIONS``): fp32; bf16 autocast over fp32
weights; true bf16 (weights and AdamW state); true bf16 with stochastically rounded weight updates."""
COLUMNS = ["model", "head_dim", "precision", "num_params", "N", "length", "vocab", "epochs", "steps_trained",
           "batch_size", "lr", "fused_loss", "data_bits", "memorized_bits", "bits_per_param", "heldout_memorized_bits",
           "saturated", "relative_rise", "wall_time_s"]


def run_folder(out: Path, model: str, head_dim: int, precision: str, n: int) -> Path:
    return out / f"{model}_hd{head_dim}_{precision}_N{n}"


def plan(args) -> list[tuple[str, int, str, int]]:
    """Runs in the order they are started: per model, each precision over the ladder (small models first)."""
    runs = []
    for key in args.models:
        model, head_dim, ladder = MODELS[key]
        for precision in args.precisions:
            runs += [(model, head_dim, precision, n) for n in ladder if not args.N or n in args.N]
    return runs


def run_one(args, out: Path, model: str, head_dim: int, precision: str, n: int) -> str:
    folder = run_folder(out, model, head_dim, precision, n)
    if (folder / "memorization.json").is_file():
        return f"skip {folder.name} (done)"
    # a folder left by a killed attempt is kept: `hf-capacity memorize` resumes it from its newest checkpoint
    cmd = ["hf-capacity", "memorize", "--N", str(n), "--length", str(args.length), "--vocab", str(args.vocab),
           "--model", model, "--head-dim", str(head_dim), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--min-lr-ratio", str(args.min_lr_ratio),
           "--warmup-steps", str(args.warmup_steps),
           "--precision", precision, "--save-steps", str(args.save_steps), "--quiet", "--json", "-o", str(folder)]
    if args.until_saturated:
        cmd.append("--until-saturated")
    cmd.append("--fused-loss" if args.fused_loss else "--no-fused-loss")
    start = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    folder.mkdir(parents=True, exist_ok=True)
    wall = folder / "wall_time_s.txt"
    before = int(wall.read_text()) if wall.is_file() else 0  # the earlier attempts' wall time
    with open(folder / "log.txt", "a") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                rc = process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                wall.write_text(f"{before + time.time() - start:.0f}\n")
    wall.write_text(f"{before + time.time() - start:.0f}\n")
    return f"{'done' if rc == 0 else f'FAILED (rc {rc})'} {folder.name} in {time.time() - start:.0f} s"


def finished_runs(args, out: Path):
    """(model, head dim, precision, N, folder, its ``memorization.json``) of each planned run finished in ``out``."""
    for model, head_dim, precision, n in plan(args):
        folder = run_folder(out, model, head_dim, precision, n)
        if (folder / "memorization.json").is_file():
            yield model, head_dim, precision, n, folder, json.loads((folder / "memorization.json").read_text())


def table(args, out: Path):
    import pandas as pd

    rows = []
    for model, head_dim, precision, n, folder, r in finished_runs(args, out):
        rule = r.get("saturation") or {}
        wall = folder / "wall_time_s.txt"
        rows.append({"model": model, "head_dim": head_dim, "precision": precision, "num_params": r["num_params"],
                     "N": n, "length": r["length"], "vocab": r["vocab"], "epochs": r["epochs"],
                     "steps_trained": r.get("steps_trained"), "batch_size": r.get("batch_size", args.batch_size),
                     "lr": r.get("lr", args.lr), "fused_loss": bool(r.get("config", {}).get("fused_loss", False)),
                     "data_bits": r["data_bits"],
                     "memorized_bits": round(r["memorized_bits"], 1), "bits_per_param": round(r["bits_per_param"], 4),
                     "heldout_memorized_bits": round(r["heldout_memorized_bits"], 1),
                     "saturated": rule.get("saturated"),
                     "relative_rise": None if rule.get("relative_rise") is None else round(rule["relative_rise"], 5),
                     "wall_time_s": int(wall.read_text()) if wall.is_file() else None})
    df = pd.DataFrame(rows, columns=COLUMNS)
    if getattr(args, "with_table", None):
        df = merge_tables(pd.read_csv(args.with_table), df)
    return df


KEY = ["model", "head_dim", "precision", "N", "epochs"]
"""A run's identity in the table: one row per (model, head dim, precision, N, epoch budget): the same data on a
longer schedule is another run, kept beside the shorter one."""


def merge_tables(earlier, measured, columns=COLUMNS, order=KEY):
    """``earlier``'s rows for the runs ``measured`` lacks, then ``measured``: a table (``columns``; the runs' rows, or
    their curves' points) kept across machines whose run folders are not all at hand (a run measured here replaces
    its earlier rows). Sorted by ``order`` (default: model, head dim, precision, N and epoch budget)."""
    import pandas as pd

    missing = set(KEY + ["bits_per_param"]) - set(earlier.columns)
    if missing:
        raise SystemExit(f"error: the earlier table lacks the columns {sorted(missing)}")
    here = set(map(tuple, measured[KEY].astype(str).values))
    kept = earlier[[tuple(k) not in here for k in earlier[KEY].astype(str).values]].reindex(columns=columns)
    merged = pd.concat([kept, measured], ignore_index=True) if len(measured) else kept
    return merged.sort_values(order, kind="stable").reset_index(drop=True)


CURVE_COLUMNS = KEY + ["epoch", "step", "memorized_bits", "bits_per_param"]


def curves(args, out: Path):
    """The measured curves of the finished runs under ``out`` (one row per measurement: epoch, step, memorized bits
    and bits/param), after ``args.with_curves``'s rows for runs not finished here; the saturation evidence."""
    import pandas as pd

    from hf_capacity.memorization import steps_per_epoch

    rows = []
    for model, head_dim, precision, n, _, r in finished_runs(args, out):
        per_epoch = steps_per_epoch(n, r.get("batch_size", args.batch_size))
        for point in r.get("history", []):
            rows.append({"model": model, "head_dim": head_dim, "precision": precision, "N": n, "epochs": r["epochs"],
                         "epoch": round(point["step"] / per_epoch, 2), "step": point["step"],
                         "memorized_bits": round(point["memorized_bits"], 1),
                         "bits_per_param": round(point["memorized_bits"] / r["num_params"], 4)})
    df = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    earlier = pd.read_csv(args.with_curves) if getattr(args, "with_curves", None) else df.iloc[:0]
    return merge_tables(earlier, df, CURVE_COLUMNS, KEY + ["step"])


def plot_curves(df, out_png: str) -> str:
    """Bits/param memorized against epochs, one line per run, with Morris et al.'s 3.6."""
    from hf_capacity.plots import MORRIS_BITS_PER_PARAM, plot_knowledge_curves

    lines = {f"{m} hd{d} {p} N={n:,}, {e:,} epochs": (g["epoch"], g["bits_per_param"])
             for (m, d, p, n, e), g in df.groupby(KEY, sort=False)}
    return plot_knowledge_curves(lines, out_png, reference_ratio=MORRIS_BITS_PER_PARAM,
                                 title="Memorized bits per parameter during training", xlabel="epochs")


def capacities(df):
    """Morris et al.'s capacity of each (model, head dim, precision): the most bits/param memorized over the
    dataset sizes run, with the N that gave it and whether that run met the stop rule (if not, the capacity is a
    lower bound)."""
    rows = []
    for (model, head_dim, precision), g in df.groupby(["model", "head_dim", "precision"], sort=False):
        best = g.loc[g["bits_per_param"].idxmax()]
        rows.append({"model": model, "head_dim": int(head_dim), "precision": precision,
                     "capacity_bits_per_param": float(best["bits_per_param"]), "at_N": int(best["N"]),
                     "at_epochs": int(best["epochs"]),
                     "saturated": bool(best["saturated"]) if best["saturated"] == best["saturated"] else None,
                     "runs": len(g), "sizes": int(g["N"].nunique())})
    return rows


MORRIS_PRESENTATIONS = 10**6 * 2048
"""Sequence presentations of a Morris et al. run: 10⁶ steps at batch 2,048 (N sequences: this / N epochs)."""


def training_length_trend(df, target: float = 3.83) -> list[dict]:
    """How the memorized bits/param grow with the training budget, for each (model, head dim, precision, N) run on
    two or more epoch budgets: the least-squares line of bits/param against log10(epochs), its gain per tenfold
    budget, the budget at which the line would reach ``target`` (default Morris et al.'s fp32 3.83; None when the
    line does not rise), and the line's value at Morris et al.'s training length (``MORRIS_PRESENTATIONS`` / N
    epochs). An extrapolation of a few points: a rate, not a prediction."""
    import numpy as np

    rows = []
    for (model, head_dim, precision, n), g in df.groupby(["model", "head_dim", "precision", "N"], sort=False):
        if g["epochs"].nunique() < 2:
            continue
        slope, intercept = np.polyfit(np.log10(g["epochs"].astype(float)), g["bits_per_param"].astype(float), 1)
        rows.append({"model": model, "head_dim": int(head_dim), "precision": precision, "N": int(n),
                     "budgets": sorted(int(e) for e in g["epochs"]), "gain_per_tenfold": float(slope),
                     "epochs_for_target": float(10 ** ((target - intercept) / slope)) if slope > 1e-6 else None,
                     "target": target, "morris_epochs": MORRIS_PRESENTATIONS / n,
                     "at_morris_epochs": float(intercept + slope * np.log10(MORRIS_PRESENTATIONS / n))})
    return rows


def markdown_rows(df) -> list[str]:
    """The runs table of docs/studies/memorization_morris.md, one row per run in the table's order: model and
    width, precision, N, data bits, data bits / P, epochs run of the budget, steps, memorized bits, bits/param,
    the stop rule's verdict (the rise over the last 20%) and the wall time."""
    from hf_capacity.memorization import steps_per_epoch
    from hf_capacity.model_names import parse_model_name

    rows = []
    for r in df.itertuples():
        width = int(r.head_dim) * parse_model_name(r.model).heads
        epochs_run = int(r.steps_trained) // steps_per_epoch(r.N, r.batch_size)
        verdict = "yes" if r.saturated is True or r.saturated == "True" else "no"
        rise = "" if r.relative_rise != r.relative_rise else f" ({r.relative_rise:.2%})"
        wall = "" if r.wall_time_s != r.wall_time_s else f"{r.wall_time_s / 60:.0f} min"
        rows.append(f"| {r.model} width {width} | {r.precision} | {r.N:,} | {r.data_bits:,.0f} | "
                    f"{r.data_bits / r.num_params:.2f} | {epochs_run:,} of {r.epochs:,} | {r.steps_trained:,} | "
                    f"{r.memorized_bits:,.0f} | **{r.bits_per_param:.3f}** | {verdict}{rise} | {wall} |")
    return rows


def summarize(df) -> list[dict]:
    """The plateau fit of each (model, head dim, precision) over its runs of one epoch budget with at least three
    dataset sizes (sizes trained for different budgets are not points of one curve); where several budgets have
    three sizes, the one with the most. A group whose points admit no plateau (the largest set memorized almost
    whole, or a larger set memorized much less than a smaller one) gets ``fit`` None and the reason in ``error``."""
    from hf_capacity.scaling import fit_memorization_plateau

    fits = []
    for (model, head_dim, precision), g in df.groupby(["model", "head_dim", "precision"], sort=False):
        sizes = g.groupby("epochs")["N"].nunique()
        if sizes.max() < 3:
            continue
        epochs = int(sizes.idxmax())
        runs = g[g["epochs"] == epochs]
        entry = {"model": model, "head_dim": head_dim, "precision": precision, "epochs": epochs, "sizes": len(runs),
                 "fit": None, "error": None}
        try:
            entry["fit"] = fit_memorization_plateau(runs["data_bits"], runs["memorized_bits"],
                                                    num_params=int(runs["num_params"].iloc[0]))
        except ValueError as err:
            entry["error"] = str(err)
        fits.append(entry)
    return fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="studies/memorization", help="folder of the runs")
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                        help="the study's defaults (models, V, epochs, batch, lr, precisions); flags override them")
    parser.add_argument("--models", nargs="*", default=None, choices=list(MODELS))
    parser.add_argument("--precisions", nargs="*", default=None, choices=PRECISIONS)
    parser.add_argument("--N", type=int, nargs="*", default=None, help="only these ladder points")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the data (the most, if saturating)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="the cosine schedule's floor (× the peak)")
    parser.add_argument("--until-saturated", action=argparse.BooleanOptionalAction, default=None,
                        help="stop each run once the stop rule holds (memorized bits rose < 0.5%% over the last 20%%)")
    parser.add_argument("--save-steps", type=int, default=1000,
                        help="checkpoint each run every this many steps (0: none), so a killed study resumes its runs")
    parser.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=True,
                        help="train with the fused head + cross-entropy (the default of `hf-capacity memorize`: the "
                             "same loss to float rounding, 2.7x faster at V = 2048)")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (one core each)")
    parser.add_argument("--table-only", action="store_true", help="tabulate the finished runs, start nothing")
    parser.add_argument("--csv", default=None, help="write the table here")
    parser.add_argument("--with-table", default=None, metavar="CSV",
                        help="keep this earlier table's rows for runs with no finished folder under -o (runs made "
                             "on another machine); a run finished here replaces its row")
    parser.add_argument("--plot", default=None, help="write the memorized-vs-data-bits figure here")
    parser.add_argument("--curves-csv", default=None, help="write every run's measured curve here")
    parser.add_argument("--with-curves", default=None, metavar="CSV",
                        help="keep this earlier curves table's rows for runs with no finished folder under -o")
    parser.add_argument("--curves", default=None, metavar="PNG", help="write the bits/param-vs-epochs figure here")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = Path(args.output)
    if not args.table_only:
        with ThreadPoolExecutor(args.workers) as pool:
            for line in pool.map(lambda r: run_one(args, out, *r), plan(args)):
                print(line, flush=True)
    df = table(args, out)
    if df.empty:
        print(f"error: no finished run under {out}", file=sys.stderr)
        return 2
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(df.to_string(index=False))
    print("\n".join(markdown_rows(df)))  # the runs table of docs/studies/memorization_morris.md
    for c in capacities(df):
        bound = "" if c["saturated"] else " (its run did not meet the stop rule: a lower bound)"
        print(f"{c['model']} hd{c['head_dim']} {c['precision']}: capacity {c['capacity_bits_per_param']:.3f} "
              f"bits/param at N = {c['at_N']:,} ({c['at_epochs']:,} epochs), max over {c['sizes']} dataset sizes "
              f"({c['runs']} runs){bound}")
    for t in training_length_trend(df):
        reach = "never" if t["epochs_for_target"] is None else f"at ~{t['epochs_for_target']:,.0f} epochs"
        print(f"{t['model']} hd{t['head_dim']} {t['precision']} N = {t['N']:,}: budgets {t['budgets']}, "
              f"+{t['gain_per_tenfold']:.3f} bits/param per tenfold budget; the line reaches {t['target']} {reach}; "
              f"at Morris et al.'s length ({t['morris_epochs']:,.0f} epochs) it reads {t['at_morris_epochs']:.2f}")
    fits = summarize(df)
    for f in fits:
        print(f"{f['model']} hd{f['head_dim']} {f['precision']}, {f['sizes']} sizes at {f['epochs']:,} epochs: "
              f"{f['fit'] or 'no plateau fit: ' + f['error']}")
    if args.plot:
        from hf_capacity.plots import plot_memorization

        plot_memorization(df, args.plot, fits={(f["model"], f["head_dim"], f["precision"]): f["fit"]
                                               for f in fits if f["fit"] is not None})
        print(f"wrote {args.plot}")
    if args.curves_csv or args.curves:
        lines = curves(args, out)
        if args.curves_csv:
            lines.to_csv(args.curves_csv, index=False)
        if args.curves and len(lines):
            print(f"wrote {plot_curves(lines, args.curves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
