"""The CPU memorization study (docs/studies/memorization_cpu.md): a ladder of data sizes per model and precision.

    python scripts/memorization_study.py -o studies/memorization            # run what is missing, then tabulate
    python scripts/memorization_study.py -o studies/memorization --table-only \\
        --csv docs/results/memorization_cpu.csv --plot docs/figures/memorization_cpu.png

Each run is one ``hf-capacity memorize`` process (``OMP_NUM_THREADS=1``, ``--workers`` at a time) writing
``<out>/<model>_hd<d>_<precision>_N<N>/memorization.json``; a run whose file exists is skipped, so the same
command started again after a kill goes on where it stopped. The table has one row per run; the plateau of
each (model, precision) is fitted with ``hf_capacity.scaling.fit_memorization_plateau`` and drawn with
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
    "S": ("gpt2-1-1", 16, (32, 64, 128, 256, 512)),
    "M": ("gpt2-1-1", 32, (64, 128, 256, 512, 1024, 2048)),
    "L": ("gpt2-1-2", 32, (128, 256, 512, 1024, 2048)),
}
COLUMNS = ["model", "head_dim", "precision", "num_params", "N", "length", "vocab", "epochs", "lr", "data_bits",
           "memorized_bits", "bits_per_param", "heldout_memorized_bits"]


def run_folder(out: Path, model: str, head_dim: int, precision: str, n: int) -> Path:
    return out / f"{model}_hd{head_dim}_{precision}_N{n}"


def plan(args) -> list[tuple[str, int, str, int]]:
    """Runs in the order they are started: per model, both precisions over the ladder (small models first)."""
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
    cmd = ["hf-capacity", "memorize", "--N", str(n), "--length", str(args.length), "--vocab", str(args.vocab),
           "--model", model, "--head-dim", str(head_dim), "--epochs", str(args.epochs), "--batch-size", "64",
           "--lr", str(args.lr), "--warmup-steps", "50", "--quiet", "--json", "-o", str(folder)]
    if precision == "bf16":
        cmd.append("--bf16")
    start = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return f"{'done' if rc == 0 else f'FAILED (rc {rc})'} {folder.name} in {time.time() - start:.0f} s"


def table(args, out: Path):
    import pandas as pd

    rows = []
    for model, head_dim, precision, n in plan(args):
        path = run_folder(out, model, head_dim, precision, n) / "memorization.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        rows.append({"model": model, "head_dim": head_dim, "precision": precision, "num_params": r["num_params"],
                     "N": n, "length": r["length"], "vocab": r["vocab"], "epochs": r["epochs"], "lr": args.lr,
                     "data_bits": r["data_bits"], "memorized_bits": round(r["memorized_bits"], 1),
                     "bits_per_param": round(r["bits_per_param"], 4),
                     "heldout_memorized_bits": round(r["heldout_memorized_bits"], 1)})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(df) -> list[dict]:
    from hf_capacity.scaling import fit_memorization_plateau

    fits = []
    for (model, head_dim, precision), g in df.groupby(["model", "head_dim", "precision"], sort=False):
        if len(g) < 3:
            continue
        fit = fit_memorization_plateau(g["data_bits"], g["memorized_bits"], num_params=int(g["num_params"].iloc[0]))
        fits.append({"model": model, "head_dim": head_dim, "precision": precision, "fit": fit})
    return fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="studies/memorization", help="folder of the runs")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--N", type=int, nargs="*", default=None, help="only these ladder points")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (one core each)")
    parser.add_argument("--table-only", action="store_true", help="tabulate the finished runs, start nothing")
    parser.add_argument("--csv", default=None, help="write the table here")
    parser.add_argument("--plot", default=None, help="write the memorized-vs-data-bits figure here")
    args = parser.parse_args()
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
    fits = summarize(df)
    for f in fits:
        print(f"{f['model']} hd{f['head_dim']} {f['precision']}: {f['fit']}")
    if args.plot:
        from hf_capacity.plots import plot_memorization

        plot_memorization(df, args.plot, fits={(f["model"], f["head_dim"], f["precision"]): f["fit"] for f in fits})
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
