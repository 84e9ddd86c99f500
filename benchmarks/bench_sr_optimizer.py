"""The optimizer step of a true-bf16 memorization run: torch's AdamW on bf16 weights (``--precision bf16``, the
baseline) next to ``StochasticRoundingAdamW`` (``--precision bf16-sr``), with the forward and backward pass of the
same model for scale.

    python benchmarks/bench_sr_optimizer.py [--quick] [--threads 1] [--head-dim 32] [--heads 1]

The model is a Morris-shape memorization model (GPT2-1-h, V = 2048 symbols + BOS, 65 positions, fused loss) in
bf16; both optimizers step the same parameters with the same gradients (one real backward pass of a 64-sequence
batch, kept). Interleaved rounds of ``--steps`` steps after a warm-up round; times are medians over the rounds, the
ratio the median of the paired per-round ratios. The forward + backward time of the same batch, timed in the same
rounds, gives each optimizer's share of a training step (the Trainer's own overhead not counted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hf_capacity.data.random_sequences import RandomSequences  # noqa: E402
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM  # noqa: E402
from hf_capacity.stochastic_rounding import StochasticRoundingAdamW  # noqa: E402


def timed(fn, steps: int) -> float:
    """Seconds a call, over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 rounds of 10 steps")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 10, 2
    torch.set_num_threads(args.threads)
    data = RandomSequences(args.batch, 64, 2048, seed=0)
    torch.manual_seed(0)
    model = CapacityGPT2ForCausalLM(CapacityGPT2Config(
        vocab_size=data.model_vocab_size, hidden_size=args.heads * args.head_dim, num_hidden_layers=1,
        num_attention_heads=args.heads, max_position_embeddings=65, fused_loss=True)).to(torch.bfloat16)
    batch = torch.as_tensor(data.to_dataset()["input_ids"][: args.batch])

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(input_ids=batch, labels=batch).loss.backward()

    forward_backward()  # the gradients both optimizers step with
    grads = {p: p.grad.clone() for p in model.parameters()}
    start = {p: p.detach().clone() for p in model.parameters()}
    settings = dict(lr=3e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    optimizers = {"torch AdamW, bf16 (baseline)": torch.optim.AdamW(model.parameters(), **settings),
                  "StochasticRoundingAdamW, bf16-sr": StochasticRoundingAdamW(model.parameters(), **settings)}
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    times["forward + backward"] = []
    for round_ in range(args.rounds + 1):
        for name, optimizer in optimizers.items():
            with torch.no_grad():
                for p_ in model.parameters():
                    p_.copy_(start[p_])
                    p_.grad = grads[p_].clone()
            seconds = timed(optimizer.step, args.steps)
            if round_:
                times[name].append(seconds)
        seconds = timed(forward_backward, max(args.steps // 5, 2))
        if round_:
            times["forward + backward"].append(seconds)
    params = sum(p_.numel() for p_ in model.parameters())
    step = statistics.median(times["forward + backward"])
    baseline = times["torch AdamW, bf16 (baseline)"]
    print(f"GPT2-1-{args.heads} head dim {args.head_dim} in bf16: {params:,} parameters, batch {args.batch} × 65 "
          f"tokens, {args.threads} thread(s); {args.rounds} rounds of {args.steps} optimizer steps")
    print("| what | ms (median) | ratio vs baseline | share of forward + backward + optimizer |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        if name == "forward + backward":
            print(f"| {name} | {1e3 * median:.2f} | | |")
            continue
        ratio = statistics.median(v / b for v, b in zip(values, baseline))
        print(f"| {name} | {1e3 * median:.3f} | {ratio:.2f}× | {median / (median + step):.1%} |")


if __name__ == "__main__":
    main()
