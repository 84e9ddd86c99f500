"""Write an adapter sweep's table (``docs/results/adapters_cpu.csv`` for the issue-11 study).

    python scripts/adapter_table.py sweeps/cpu_adapters -o docs/results/adapters_cpu.csv

One row per finished adapter run (LoRA ranks, QLoRA, full fine-tuning), with the columns of
``hf_capacity.sweep.analysis.ADAPTER_COLUMNS``: trainable P, the base's P, R_max, bits of the new population,
bits per trainable parameter and the base population's bits before and after; prints the table too.
"""

from __future__ import annotations

import argparse
import sys

from hf_capacity.sweep import adapter_table, load_results, require_finished_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep folder (or its results.csv)")
    parser.add_argument("-o", "--output", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args()
    try:
        table = adapter_table(require_finished_runs(load_results(args.sweep), args.sweep))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"error: {args.sweep} has no finished adapter run (runs with init_from)", file=sys.stderr)
        return 2
    if args.output:
        table.to_csv(args.output, index=False, float_format="%.6g")
    print(table.drop(columns="run_id").to_string(index=False, float_format=lambda x: f"{x:,.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
