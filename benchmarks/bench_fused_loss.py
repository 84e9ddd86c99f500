"""The fused linear + cross-entropy kernel alone: today's ``FusedLinearCrossEntropy`` forward next to the previous
kernel (a fresh logits tensor and a fresh probabilities tensor for every chunk), side by side in one run.

Both compute the summed loss's gradients of the hidden states and the head for 2,044 tokens (a step of the
calibration config, batch 4 × 512 less the shifted token) at hidden size 32, for the whole BPE vocabulary (5,096)
and the fitted one (2,745), at several chunk sizes; the results are checked equal. Times are medians of
``--repeats`` calls, alternating the kernels; FLOPs are the head's three matmuls (6 · tokens · vocabulary · d), the
fraction is of the machine's fp32 matmul peak (1024² ``torch.mm``) measured in the same run.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_fused_loss.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import matmul_peak_gflops  # noqa: E402

from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import FusedLinearCrossEntropy  # noqa: E402


def previous_kernel(hidden, weight, labels, chunk_size):
    """The kernel before 2026-12-07: one new logits and one new probabilities tensor a chunk (the baseline)."""
    valid = labels != -100
    target = torch.where(valid, labels, 0)
    masked = hidden * valid[:, None].to(hidden.dtype)
    grad_hidden = torch.empty_like(hidden)
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32)
    picked = torch.empty(hidden.shape[0], dtype=torch.float32)
    minus_one = torch.full((chunk_size, 1), -1.0)
    for start in range(0, hidden.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        h, y = masked[chunk], target[chunk, None]
        probs = torch.softmax((h @ weight.T).float(), dim=1)
        picked[chunk] = probs.gather(1, y)[:, 0]
        probs.scatter_add_(1, y, minus_one[: y.shape[0]])
        probs = probs.to(h.dtype)
        torch.mm(probs, weight, out=grad_hidden[chunk])
        grad_weight.addmm_(probs.T.float(), h.float())
    grad_hidden.mul_(valid[:, None].to(grad_hidden.dtype))
    token_loss = -picked.clamp_min(1e-30).log()
    return grad_hidden, grad_weight, (token_loss * valid).sum()


class _Ctx:
    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def current_kernel(hidden, weight, labels, chunk_size):
    ctx = _Ctx()
    loss = FusedLinearCrossEntropy.forward(ctx, hidden, weight, labels, chunk_size)
    return (*ctx.saved_tensors, loss)


def median_seconds(fn, *args, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2044)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256])
    args = p.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak_gflops(torch.get_num_threads())
    print(f"{args.tokens} tokens, hidden {args.hidden}, {torch.get_num_threads()} thread(s), matmul peak "
          f"{peak:.1f} GFLOP/s, median of {args.repeats} calls\n")
    print("| vocabulary | chunk rows | previous kernel ms | current kernel ms | speed-up | current GFLOP/s "
          "| fraction of peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in (5096, 2745):
        hidden = torch.randn(args.tokens, args.hidden)
        weight = torch.randn(vocab, args.hidden) * 0.1
        labels = torch.randint(0, vocab, (args.tokens,))
        labels[::17] = -100
        for rows in args.chunks:
            for a, b in zip(previous_kernel(hidden, weight, labels, rows)[:2],
                            current_kernel(hidden, weight, labels, rows)[:2]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            old, new = [], []
            for _ in range(3):  # alternate the kernels in blocks
                old.append(median_seconds(previous_kernel, hidden, weight, labels, rows, repeats=args.repeats))
                new.append(median_seconds(current_kernel, hidden, weight, labels, rows, repeats=args.repeats))
            t_old, t_new = statistics.median(old), statistics.median(new)
            gflops = 6 * args.tokens * vocab * args.hidden / t_new / 1e9
            print(f"| {vocab:,} | {rows} | {t_old * 1e3:.2f} | {t_new * 1e3:.2f} | {t_old / t_new:.2f}× "
                  f"| {gflops:.1f} | {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
