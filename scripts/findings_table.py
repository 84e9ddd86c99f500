"""Write the table of the paper's other findings measured at capacity (issue 19): mixture of experts against the
dense model, gated against standard MLP, junk with and without the domain token, from their sweeps.

    python scripts/findings_table.py --moe sweeps/cpu_moe --mlp sweeps/cpu_gated_vs_standard --junk sweeps/cpu_junk \\
        --with-table docs/results/findings_at_capacity.csv -o docs/results/findings_at_capacity.csv

One row per finished run: the finding it belongs to ("moe", "mlp" or "junk"), the arm (dense / 32 experts top-1;
GPT-2 or LLaMA with a standard or gated MLP; no junk / 7/8 junk / 7/8 junk + domain token), the run's settings, P
(the paper's count), the parameters a token uses, bits, bits per parameter and per active parameter, the fraction of
its data it learned. Prints the rows of the study page (docs/studies/findings_at_capacity.md).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

import pandas as pd

from hf_capacity.model_names import match_model_name
from hf_capacity.sweep import load_results
from hf_capacity.sweep.analysis import table_flag
from hf_capacity.sweep.config import DEFAULT_MLP

FAMILY_NAMES = {"gpt2": "GPT-2", "llama": "LLaMA", "memory-llama": "MemoryLlama"}

COLUMNS = ["finding", "arm", "model", "mlp_type", "num_experts", "exposures", "learning_rate", "N", "P", "P_active",
           "bits", "bits_max", "bits_per_param", "bits_per_active_param", "fraction_learned", "seed", "wall_time_s",
           "run_id"]


def arm(run, finding: str) -> str:
    """The arm of a results row: "dense" or "<E> experts, top-1" for the MoE finding, "<family>, <type> MLP" for
    the MLP one (LLaMA's default MLP is gated, GPT-2's standard)."""
    experts = int(run.get("num_experts") or 0)
    if finding == "moe":
        return f"{experts} experts, top-1" if experts else "dense"
    if finding == "junk":
        fraction = float(run.get("junk_fraction") or 0)
        if not fraction:
            return "no junk"
        name = f"{Fraction(fraction).limit_denominator(64)} junk"
        return name + (" + domain token" if table_flag(run.get("domain_token")) else "")
    parsed = match_model_name(str(run["model"]))
    family = parsed.family if parsed else str(run["model"])
    mlp = run.get("mlp_type")
    if not isinstance(mlp, str) or not mlp:
        mlp = DEFAULT_MLP.get(family, "standard")
    return f"{FAMILY_NAMES.get(family, family)}, {mlp} MLP"


def findings_table(results: pd.DataFrame, finding: str) -> pd.DataFrame:
    """The finished runs of one sweep's results table (``finding``: "moe", "mlp" or "junk") as rows of ``COLUMNS``."""
    rows = []
    for _, run in results[results["status"] == "done"].iterrows():
        active = run.get("num_params_active_per_token")
        active = float(active) if pd.notna(active) else float(run["num_params"])
        rows.append({
            "finding": finding, "arm": arm(run, finding), "model": run["model"],
            "mlp_type": run.get("mlp_type") if isinstance(run.get("mlp_type"), str) else "",
            "num_experts": int(run.get("num_experts") or 0), "exposures": int(run["exposures"]),
            "learning_rate": float(run["learning_rate"]), "N": int(run["n_people"]), "P": int(run["num_params"]),
            "P_active": int(active), "bits": float(run["bits"]), "bits_max": float(run["bits_max"]),
            "bits_per_param": float(run["bits_per_param"]), "bits_per_active_param": float(run["bits"]) / active,
            "fraction_learned": float(run["fraction_learned"]), "seed": int(run["seed"]),
            "wall_time_s": run.get("wall_time_s"), "run_id": run["run_id"],
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown_rows(table: pd.DataFrame, finding: str) -> list[str]:
    """The study page's rows of one finding (arm, exposures, lr, N, P, active P, bits/param, bits per active
    parameter, learned, seed)."""
    part = table[table["finding"] == finding].sort_values(["arm", "exposures", "learning_rate", "seed"])
    return [f"| {r.arm} | {r.exposures} | {r.learning_rate:g} | {r.N:,} | {r.P:,} | {r.P_active:,} | "
            f"**{r.bits_per_param:.3f}** | {r.bits_per_active_param:.3f} | {r.fraction_learned:.0%} | {r.seed} |"
            for r in part.itertuples()]


def best_rate_seeds(table: pd.DataFrame, finding: str = "mlp") -> pd.DataFrame:
    """Each arm at its best learning rate: the rate with the most bits/param on seed 0, then every seed run at that
    rate. Columns: arm, learning_rate, seeds, mean and sd (sample, n − 1) of bits/param, the per-seed values."""
    part = table[table["finding"] == finding]
    rows = []
    for name, runs in part.groupby("arm", sort=True):
        first = runs[runs["seed"] == 0]
        if first.empty:
            continue
        lr = float(first.loc[first["bits_per_param"].idxmax(), "learning_rate"])
        at = runs[runs["learning_rate"] == lr].sort_values("seed")
        values = at["bits_per_param"].astype(float)
        rows.append({"arm": name, "learning_rate": lr, "seeds": len(at), "mean": values.mean(),
                     "sd": values.std(ddof=1) if len(at) > 1 else float("nan"),
                     "per_seed": dict(zip(at["seed"].astype(int), values))})
    return pd.DataFrame(rows, columns=["arm", "learning_rate", "seeds", "mean", "sd", "per_seed"])


def gated_over_standard(best: pd.DataFrame) -> dict[str, dict]:
    """Per family, gated bits/param over standard at each arm's best rate, seed by seed (a seed draws the same
    people for every arm, so the seeds pair): ``{family: {"ratios": {seed: r}, "of_means": mean gated / mean
    standard}}``."""
    out = {}
    by_arm = best.set_index("arm")
    for family in FAMILY_NAMES.values():
        gated, standard = f"{family}, gated MLP", f"{family}, standard MLP"
        if gated not in by_arm.index or standard not in by_arm.index:
            continue
        g, s = by_arm.loc[gated, "per_seed"], by_arm.loc[standard, "per_seed"]
        ratios = {seed: g[seed] / s[seed] for seed in sorted(set(g) & set(s))}
        out[family] = {"ratios": ratios, "of_means": by_arm.loc[gated, "mean"] / by_arm.loc[standard, "mean"]}
    return out


def summary_rows(table: pd.DataFrame) -> list[str]:
    """The study page's summary of gated vs standard: each arm at its best rate, mean ± sd over its seeds."""
    best = best_rate_seeds(table)
    lines = [f"| {r.arm} | {r.learning_rate:g} | {r.seeds} | **{r.mean:.3f}** ± {r.sd:.3f} | "
             + ", ".join(f"{v:.3f}" for v in r.per_seed.values()) + " |" for r in best.itertuples()]
    for family, ratio in gated_over_standard(best).items():
        lines.append(f"| {family}: gated / standard | | {len(ratio['ratios'])} | **{ratio['of_means']:.2f}×** | "
                     + ", ".join(f"{v:.2f}" for v in ratio["ratios"].values()) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moe", nargs="*", default=[], help="sweep folders (or results.csv) of the MoE finding")
    parser.add_argument("--mlp", nargs="*", default=[], help="sweep folders (or results.csv) of gated vs standard")
    parser.add_argument("--junk", nargs="*", default=[],
                        help="sweep folders (or results.csv) of junk with and without the domain token")
    parser.add_argument("--with-table", default=None, metavar="CSV",
                        help="rows written before (same run_id: the sweep's)")
    parser.add_argument("-o", "--output", default=None, help="CSV to write (default: print only)")
    args = parser.parse_args()
    try:
        parts = [findings_table(load_results(s), "moe") for s in args.moe]
        parts += [findings_table(load_results(s), "mlp") for s in args.mlp]
        parts += [findings_table(load_results(s), "junk") for s in args.junk]
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.with_table:
        parts.insert(0, pd.read_csv(args.with_table))
    table = pd.concat(parts, ignore_index=True).drop_duplicates("run_id", keep="last")
    if args.output:
        table.to_csv(args.output, index=False, float_format="%.6g")
    for finding in ("moe", "mlp", "junk"):
        print("\n".join(markdown_rows(table, finding)))
    print("\n".join(summary_rows(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
