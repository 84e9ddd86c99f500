"""Knowledge-bits evaluation: batched span losses vs. a per-person loop, side by side in one run.

Both sides evaluate every person of the same population with the same model and must give the same losses
(asserted). The per-person loop is the obvious implementation: one forward pass per biography
(``batch_size=1``); the batched path pads up to ``--batch-size`` biographies per forward pass.

    python benchmarks/bench_eval.py                 # N = 2,000 people, GPT2-2-2 (hidden 128)
    python benchmarks/bench_eval.py --quick
    python benchmarks/bench_eval.py --device cuda --N 100000 --model gpt2-12-12
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from hf_capacity.data import BioSPopulation, KnowledgeData
from hf_capacity.evaluation import span_losses
from hf_capacity.training import CapacityTrainingConfig, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=2000)
    parser.add_argument("--model", default="gpt2-2-2")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="N=300, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.N, args.repeats = 300, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    data = KnowledgeData.create(BioSPopulation(args.N, seed=0), vocab_size=1024)
    config = CapacityTrainingConfig(model=args.model, head_dim=args.head_dim)
    model = build_model(config, data.tokenizer).to(args.device).eval()
    people = np.arange(args.N)

    batched = span_losses(model, data, people[:50], batch_size=args.batch_size, progress=False)  # warm-up + check
    looped = span_losses(model, data, people[:50], batch_size=1, progress=False)
    np.testing.assert_allclose(batched.value_loss, looped.value_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(batched.name_loss, looped.name_loss, rtol=1e-4, atol=1e-4)

    times: dict[str, list[float]] = {"batched": [], "per-person loop": []}
    for _ in range(args.repeats):
        for name, bs in (("batched", args.batch_size), ("per-person loop", 1)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            span_losses(model, data, people, batch_size=bs, progress=False)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"bioS(N={args.N:,}), model {args.model} (head dim {args.head_dim}), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, batch {args.batch_size}; median of {args.repeats}\n")
    print("| path | median s | people/s |")
    print("|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {args.N / v:,.0f} |")
    print(f"\nratio batched / per-person loop: **{med['per-person loop'] / med['batched']:.1f}x**")


if __name__ == "__main__":
    main()
