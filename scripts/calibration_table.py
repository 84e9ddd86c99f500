"""Write a sweep's capacity table by precision (``docs/results/calibration.csv`` for the calibration study).

    python scripts/calibration_table.py sweeps/cpu_calibration -o docs/results/calibration.csv

One row per finished run and precision (fp32/bf16 as trained, then int8 / nf4 / fp4 where measured), with the
columns of ``hf_capacity.sweep.analysis.PRECISION_COLUMNS``; prints the table too.
"""

from __future__ import annotations

import argparse
import sys

from hf_capacity.sweep import load_results, precision_table, require_finished_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep folder (or its results.csv)")
    parser.add_argument("-o", "--output", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args()
    try:
        table = precision_table(require_finished_runs(load_results(args.sweep), args.sweep))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output:
        table.to_csv(args.output, index=False, float_format="%.6g")
    print(table.drop(columns="run_id").to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
