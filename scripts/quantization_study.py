"""Quantized capacity of saved runs by method and group size: bitsandbytes (int8, nf4, fp4), round to nearest and
GPTQ on the same symmetric grid (int4 and int8, groups of 128 / 32 / 16 input columns).

    python scripts/quantization_study.py docs/results/calibration_1000 [more run folders] \\
        -o docs/results/quantization.csv

One row per run and method: bits and bits/param after quantization (P by the paper's rule, as trained) and the
ratio to the unquantized run. GPTQ calibrates on 1,000 training biographies (as the paper); round to nearest uses
the same grid without error feedback, so the two differ only by GPTQ's error feedback.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from hf_capacity.data import KnowledgeData
from hf_capacity.evaluation import evaluate_knowledge
from hf_capacity.models.registration import load_causal_lm
from hf_capacity.quantization import (
    calibration_batches,
    gptq_quantize_model,
    quantizable_layers,
    quantized_capacity,
    round_to_nearest_weight,
)

GROUPS = (128, 32, 16)


def study(run: str) -> list[dict]:
    data = KnowledgeData.load(run)
    full = evaluate_knowledge(load_causal_lm(run).eval(), data, progress=False)
    rows = [{"method": "none", "bits": 8 * 4, "group_size": None, "report": full}]
    quantized = quantized_capacity(run, data, ("int8", "nf4", "fp4"), full_precision=full, progress=False)
    for scheme, q in quantized.items():
        rows.append({"method": f"bitsandbytes {scheme}", "bits": 8 if scheme == "int8" else 4, "group_size": 64,
                     "report": q.report})
    batches = calibration_batches(data)
    for bits in (4, 8):
        for group in GROUPS:
            for method in ("round to nearest", "GPTQ"):
                model = load_causal_lm(run).eval()
                if method == "GPTQ":
                    gptq_quantize_model(model, batches, bits, group_size=group)
                else:
                    with torch.no_grad():
                        for _, layer in quantizable_layers(model):
                            layer.weight.copy_(round_to_nearest_weight(layer.weight, bits, group_size=group))
                rows.append({"method": method, "bits": bits, "group_size": group,
                             "report": evaluate_knowledge(model, data, progress=False)})
    out = []
    for row in rows:
        report = row.pop("report")
        bits = report.bits.total
        out.append({"run": run, "model": describe(run), **row, "knowledge_bits": bits,
                    "bits_per_param": bits / full.num_params.paper_params,
                    "ratio_to_unquantized": bits / full.bits.total, "P": full.num_params.paper_params})
    return out


WIDE = [  # (column title, method, bits, group size) of the one-row-per-model summary
    ("int8 (bnb)", "bitsandbytes int8", 8, 64),
    ("GPTQ int8", "GPTQ", 8, 128),
    ("nf4 (bnb)", "bitsandbytes nf4", 4, 64),
    ("RTN int4", "round to nearest", 4, 128),
    ("GPTQ int4", "GPTQ", 4, 128),
    ("GPTQ int4 g32", "GPTQ", 4, 32),
    ("GPTQ int4 g16", "GPTQ", 4, 16),
]


def describe(run: str) -> str:
    """A run's shape for the summary: "GPT2-<layers>-<heads> width <d>" from its saved config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(run, trust_remote_code=True)
    return f"{config.model_type.replace('capacity_', '').upper()}-{config.num_hidden_layers}-" \
           f"{config.num_attention_heads} width {config.hidden_size}"


def wide_rows(table: pd.DataFrame) -> list[str]:
    """One markdown row per run: its model (``describe``), P, unquantized bits/param, then bits/param after each
    ``WIDE`` method."""
    lines = []
    for run, rows in table.groupby("run", sort=False):
        full = rows[rows["method"] == "none"].iloc[0]
        name = full["model"] if "model" in rows else run
        cells = [name, f"{int(full.P):,}", f"**{full.bits_per_param:.3f}**"]
        for _, method, bits, group in WIDE:
            hit = rows[(rows["method"] == method) & (rows["bits"] == bits) & (rows["group_size"] == group)]
            cells.append(f"{hit.iloc[0].bits_per_param:.3f}" if len(hit) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders written by `hf-capacity train`")
    parser.add_argument("-o", "--output", default=None, help="CSV to write (default: print only)")
    parser.add_argument("--summary", action="store_true",
                        help="also print one markdown row per run (P, bits/param unquantized and per method)")
    args = parser.parse_args()
    from hf_capacity.logging_filters import transformers_progress_bars

    with transformers_progress_bars(False):  # no "Loading weights" bar for each of the ~16 loads a run
        table = pd.DataFrame([row for run in args.runs for row in study(run)])
    if args.output:
        table.to_csv(args.output, index=False, float_format="%.6g")
    print(table.drop(columns="run").to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if args.summary:
        print("| model | P | unquantized | " + " | ".join(title for title, *_ in WIDE) + " |")
        print("\n".join(wide_rows(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
