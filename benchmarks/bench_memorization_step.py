"""Memorization steps: the stock ``transformers.Trainer`` path, with and without the fused loss, and a lean loop.

    python benchmarks/bench_memorization_step.py [--quick] [--threads 1] [--N 128] [--head-dim 16]

A memorization run (``hf_capacity.memorization.train_memorization``) trains a tiny GPT-2 on N random sequences of
64 tokens over V = 2048 symbols (Morris et al.'s shape) with full-batch steps: at these sizes the work of a step is
small and the per-step overhead of the Trainer (data loader, collation, callbacks, scheduler, logging) may
dominate; at V = 2048 the head and its softmax are most of a step, which the fused loss (``fused_loss=True``: the
head and cross-entropy chunk by chunk, ``hf-capacity memorize --fused-loss``) computes without materialising the
logits. All paths run the same model (same initialisation), the same AdamW and cosine schedule on the same
batch, in interleaved rounds of ``--steps`` steps after a warm-up round; a round's time runs from the end of its 5th
step to its last. Steps/s are medians over the rounds; the ratio is the median of the paired per-round ratios;
the model FLOP/s is compared with the matmul peak measured in the same run (``bench_train_step``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import SKIP, StepClock, matmul_peak_gflops  # noqa: E402
from transformers import Trainer, TrainingArguments, get_scheduler  # noqa: E402

from hf_capacity.data.random_sequences import RandomSequences  # noqa: E402
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM  # noqa: E402


def build(data: RandomSequences, head_dim: int, fused_loss: bool = False) -> CapacityGPT2ForCausalLM:
    torch.manual_seed(0)
    return CapacityGPT2ForCausalLM(CapacityGPT2Config(
        vocab_size=data.model_vocab_size, hidden_size=head_dim, num_hidden_layers=1, num_attention_heads=1,
        max_position_embeddings=128, fused_loss=fused_loss))


def trainer_round(data, head_dim: int, steps: int, out: str, fused_loss: bool = False) -> list[float]:
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=data.n_sequences, learning_rate=1e-2, weight_decay=0.0,
        warmup_steps=5, max_steps=steps, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, logging_steps=10_000, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0)
    clock = StepClock()
    model = build(data, head_dim, fused_loss)
    Trainer(model=model, args=args, train_dataset=data.to_dataset(), callbacks=[clock]).train()
    return clock.stamps


def lean_round(data, head_dim: int, steps: int) -> list[float]:
    model = build(data, head_dim).train()
    ids = torch.as_tensor(data.input_ids())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    schedule = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=5, num_training_steps=steps,
                             scheduler_specific_kwargs={"min_lr_rate": 0.1})
    stamps = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return stamps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--N", type=int, default=128, help="sequences (one full batch)")
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--steps", type=int, default=60, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 rounds of 20 steps")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 20, 2
    torch.set_num_threads(args.threads)
    data = RandomSequences(args.N, 64, 2048, seed=0)
    model = build(data, args.head_dim)
    params = sum(q.numel() for q in model.parameters())
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    tokens = args.N * 65
    flops_per_step = tokens * (6 * (linear + model.config.vocab_size * args.head_dim) + 12 * 65 * args.head_dim)
    rates = {"Trainer": [], "Trainer, fused loss": [], "lean loop": []}
    peaks = []
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds + 1):
            peaks.append(matmul_peak_gflops(args.threads))
            for name in rates:
                stamps = (lean_round(data, args.head_dim, args.steps) if name == "lean loop"
                          else trainer_round(data, args.head_dim, args.steps, out, fused_loss="fused" in name))
                if round_:
                    rates[name].append((len(stamps) - SKIP) / (stamps[-1] - stamps[SKIP - 1]))
    peak = max(peaks)
    print(f"GPT2-1-1 head dim {args.head_dim} (P = {params:,}), full batch of {args.N} × 65 tokens, {args.threads} "
          f"thread(s); {flops_per_step / 1e9:.3f} GFLOP a step; matmul peak {peak:.1f} GFLOP/s; "
          f"{args.rounds} rounds of {args.steps} steps")
    print("| path | steps/s (median) | ratio vs Trainer | model GFLOP/s | fraction of matmul peak |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = statistics.median(v / b for v, b in zip(values, rates["Trainer"]))
        gflops = median * flops_per_step / 1e9
        print(f"| {name} | {median:.1f} | {ratio:.2f}× | {gflops:.1f} | {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
