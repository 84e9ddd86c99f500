"""The fused linear + cross-entropy kernel alone, three ways side by side in one run: the kernel before 2026-12-07 (a
fresh logits tensor and a fresh probabilities tensor for every chunk), ``FusedLinearCrossEntropy`` with the head as
it is (one reused buffer), and the same with the head laid out with ``fused_padded_rows`` rows (today's default:
the vocabulary rounded up to a 64-byte row stride off 1 KiB multiples, padding logits at -inf).

Each computes the summed loss's gradients of the hidden states and the head for 2,044 tokens (a step of the
calibration config, batch 4 × 512 less the shifted token) at hidden size 32, for the whole BPE vocabulary (5,096),
the fitted one (2,745) and bioS's 4,096 at several chunk sizes; the results are checked equal. Times are medians of
``--repeats`` calls, alternating the kernels in blocks; FLOPs are the head's three matmuls over the real vocabulary
(6 · tokens · vocabulary · d), the fraction is of the machine's fp32 matmul peak (1024² ``torch.mm``) measured in
the same run.

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

from hf_capacity.models.capacity_gpt2.modeling_capacity_gpt2 import (  # noqa: E402
    FusedLinearCrossEntropy,
    fused_padded_rows,
)


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


def unpadded_kernel(hidden, weight, labels, chunk_size, padded_rows=None):
    ctx = _Ctx()
    loss = FusedLinearCrossEntropy.forward(ctx, hidden, weight, labels, chunk_size, padded_rows)
    return (*ctx.saved_tensors, loss)


def padded_kernel(hidden, weight, labels, chunk_size):
    return unpadded_kernel(hidden, weight, labels, chunk_size, fused_padded_rows(len(weight)))


KERNELS = (previous_kernel, unpadded_kernel, padded_kernel)


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
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--vocabularies", type=int, nargs="+", default=[5096, 2745, 4096])
    args = p.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak_gflops(torch.get_num_threads())
    print(f"{args.tokens} tokens, hidden {args.hidden}, {torch.get_num_threads()} thread(s), matmul peak "
          f"{peak:.1f} GFLOP/s, median of {args.repeats} calls\n")
    print("| vocabulary | padded rows | chunk rows | previous kernel ms | reused buffer ms | + padded head ms "
          "| padding speed-up | vs previous | GFLOP/s | fraction of peak |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in args.vocabularies:
        hidden = torch.randn(args.tokens, args.hidden)
        weight = torch.randn(vocab, args.hidden) * 0.1
        labels = torch.randint(0, vocab, (args.tokens,))
        labels[::17] = -100
        for rows in args.chunks:
            reference = previous_kernel(hidden, weight, labels, rows)
            for kernel in KERNELS[1:]:
                for a, b in zip(reference, kernel(hidden, weight, labels, rows)):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            times: list[list[float]] = [[] for _ in KERNELS]
            for _ in range(3):  # alternate the kernels in blocks
                for kernel, seconds in zip(KERNELS, times):
                    seconds.append(median_seconds(kernel, hidden, weight, labels, rows, repeats=args.repeats))
            t_old, t_buffer, t_padded = (statistics.median(seconds) for seconds in times)
            gflops = 6 * args.tokens * vocab * args.hidden / t_padded / 1e9
            print(f"| {vocab:,} | {fused_padded_rows(vocab):,} | {rows} | {t_old * 1e3:.2f} | {t_buffer * 1e3:.2f} "
                  f"| {t_padded * 1e3:.2f} | {t_buffer / t_padded:.2f}× | {t_old / t_padded:.2f}× "
                  f"| {gflops:.1f} | {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
