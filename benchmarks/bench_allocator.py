"""Training throughput with glibc's default ``malloc`` next to ``hf_capacity.cpu_allocator.tune_malloc_for_training``
(the allocator keeps freed buffers instead of unmapping them every step), for the plain head and the fused loss.

    python benchmarks/bench_allocator.py [--quick] [--threads 1] [--rounds 5] [--steps 60]

An allocator setting holds for a whole process, so every (round, allocator) pair runs in a fresh child process:
rounds alternate default / tuned, each child trains the calibration config (bioD(1500, K=1, C=16, D=1000, L=1,
T=1000), GPT2-1-1 head dim 32, batch 4 × 512, whole 5,096-token vocabulary, AdamW, fp32) through the stock
``Trainer`` as ``bench_train_step.py`` does, first with the plain head + cross-entropy, then with the fused loss,
``--steps`` steps each after a 10-step warm-up run, timed from the 5th step. It also reports the child's minor
page faults (``getrusage``): what the tuning removes. Medians over rounds; ratios are medians of the paired
per-round ratios; the fraction of the matmul peak uses the best fp32 1024² ``mm`` measured in the children.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

PATHS = ("plain loss", "fused loss")
ALLOCATORS = ("glibc defaults", "tuned (tune_malloc_for_training)")


def child(tune: bool, steps: int, threads: int) -> dict:
    """One process, one allocator: tokens/s, MFLOP a token and page faults of both paths; the matmul peak."""
    from hf_capacity.cpu_allocator import tune_malloc_for_training

    applied = tune_malloc_for_training() if tune else False
    if tune and not applied:
        raise SystemExit("tune_malloc_for_training() did not apply here (not glibc, or MALLOC_* tunables set)")
    from dataclasses import replace

    import torch
    from bench_train_step import SKIP, flops_per_token, make_trainer, matmul_peak_gflops

    from hf_capacity.training import CapacityTrainingConfig, build_data

    torch.set_num_threads(threads)
    config = CapacityTrainingConfig(
        dataset="bioD", n_people=1500, model="gpt2-1-1", head_dim=32, context_length=512,
        biod={"n_attributes": 1, "chunks_per_value": 16, "diversity": 1000, "chunk_length": 1, "alphabet": 1000},
        batch_size=4, learning_rate=1e-2, progress=False,
    )
    data = build_data(config)
    dataset = data.stream(40, 512).to_dataset(progress=False)
    result = {"peak_gflops": matmul_peak_gflops(threads)}
    with tempfile.TemporaryDirectory() as out:
        for name, fused in zip(PATHS, (False, True)):
            cfg = replace(config, fused_loss=fused)
            make_trainer(cfg, data, dataset, 10, False, out)[0].train()  # warm-up: first-touch allocations
            trainer, clock = make_trainer(cfg, data, dataset, steps, False, out)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            trainer.train()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            seconds = clock.stamps[-1] - clock.stamps[SKIP - 1]
            result[name] = {
                "tokens_per_s": (len(clock.stamps) - SKIP) * cfg.batch_size * 512 / seconds,
                "flops_per_token": flops_per_token(trainer.model, 512),
                "faults_per_step": faults / steps,
            }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=60, help="timed steps a path, per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 rounds of 20 steps")
    p.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "tuned", args.steps, args.threads)))
        return
    if args.quick:
        args.steps, args.rounds = 20, 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    runs: dict[str, list[dict]] = {a: [] for a in ALLOCATORS}
    for round_ in range(args.rounds):
        for allocator, mode in zip(ALLOCATORS, ("default", "tuned")):
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", mode, "--steps", str(args.steps),
                 "--threads", str(args.threads)], capture_output=True, text=True,
                env={**env, "HF_CAPACITY_MALLOC_TUNING": "0" if mode == "default" else "1"})
            if done.returncode != 0:
                raise SystemExit(f"child ({mode}) failed:\n{done.stderr[-3000:]}")
            runs[allocator].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}/{args.rounds} {mode}: "
                  + ", ".join(f"{p} {runs[allocator][-1][p]['tokens_per_s']:,.0f} tokens/s" for p in PATHS),
                  file=sys.stderr)
    peak = max(r["peak_gflops"] for rs in runs.values() for r in rs)
    print(f"GPT2-1-1 head dim 32, 2048 tokens a step, {args.threads} thread(s); matmul peak {peak:.1f} GFLOP/s; "
          f"{args.rounds} rounds of {args.steps} steps, one process per round and allocator")
    print("| path | allocator | tokens/s (median) | ratio vs glibc defaults | minor page faults a step "
          "| model GFLOP/s | fraction of matmul peak |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in PATHS:
        base = [r[path]["tokens_per_s"] for r in runs[ALLOCATORS[0]]]
        for allocator in ALLOCATORS:
            rates = [r[path]["tokens_per_s"] for r in runs[allocator]]
            median = statistics.median(rates)
            ratio = statistics.median(v / b for v, b in zip(rates, base))
            faults = statistics.median(r[path]["faults_per_step"] for r in runs[allocator])
            gflops = median * runs[allocator][0][path]["flops_per_token"] / 1e9
            print(f"| {path} | {allocator} | {median:,.0f} | {ratio:.2f}× | {faults:,.0f} | {gflops:.1f} "
                  f"| {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
