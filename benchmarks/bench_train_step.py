"""Training throughput of a capacity run in the Trainer path: the plain loss, the fused loss with the whole BPE
vocabulary (the baseline), the fused loss with the vocabulary fitted to the data, and the same at context 256, with
the fraction of the machine's matmul peak (measured in the same run).

    python benchmarks/bench_train_step.py [--quick] [--threads 1] [--head-dim 32] [--batch 4] [--compile]

It first tunes glibc's malloc (``hf_capacity.cpu_allocator``, opt-in for training; ``--default-malloc`` leaves it
alone; ``bench_allocator.py`` measures the difference).

The calibration config (bioD(1500, K=1, C=16, D=1000, L=1, T=1000), GPT2-1-1, context 512, AdamW, fp32) trains
with the stock ``transformers.Trainer`` exactly as ``hf-capacity train`` builds it (rows formatted as numpy,
without labels: ``collate_windows`` stacks the arrays and adds them; the baseline reads them from the table, as
it did): with the plain head + cross-entropy and the whole 5,096-token vocabulary; with ``--fused-loss`` and the
whole vocabulary, the kernel pinned as it was when issue 18 set its goal (chunks of 128 rows, the head unpadded:
the baseline); with the fused loss and the fitted vocabulary (2,745 tokens: the same tokens in every window, the
same P); with the fitted vocabulary at context 256 and twice the batch (the same tokens a step); and the last
again with the head unpadded (``fused_padded_rows`` off: what the padding alone gives). Variants run in
interleaved rounds of ``--steps`` steps after a warm-up round; a round's time runs from the end of its 5th step
to its last (a callback stamps the steps), so start-up and the first steps' allocations are not counted.
Tokens/s are medians over the rounds; the ratio is the median of the paired per-round ratios against the
baseline.

Model FLOPs per token: 6 × (linear weights: 12·d² per layer + the head's vocabulary × d) + 12 · layers · context · d
(attention scores and values, forward and backward, the usual convention that counts the full causal square).
The matmul peak is the best of several fp32 ``torch.mm`` of 1024 × 1024 matrices with the same thread count,
timed in the same run; the fraction of peak is model FLOP/s divided by it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from hf_capacity.cpu_allocator import tune_malloc_for_training  # noqa: E402
from hf_capacity.data import collate_windows  # noqa: E402
from hf_capacity.models.capacity_gpt2 import modeling_capacity_gpt2 as modeling  # noqa: E402
from hf_capacity.training import CapacityTrainingConfig, build_data, build_model  # noqa: E402  (first: quiet bnb)

SKIP = 5
BASELINE = "fused loss, whole vocabulary (baseline)"
UNPADDED = "fused loss, fitted vocabulary, context 256, unpadded head"


def matmul_peak_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class StepClock(TrainerCallback):
    """Stamps the wall time at the end of every optimizer step."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


@contextlib.contextmanager
def pinned_kernel(rows: int | None, padded: bool = True):
    """Fix the fused loss's chunk to ``rows`` (the baseline's 128, the rule before fused_chunk_size) and, with
    ``padded=False``, lay its head out unpadded (as before fused_padded_rows), for a while."""
    chunk_rule, padding_rule = modeling.fused_chunk_size, modeling.fused_padded_rows
    if rows is not None:
        modeling.fused_chunk_size = lambda vocab_size: rows
    if not padded:
        modeling.fused_padded_rows = lambda vocab_size: vocab_size
    try:
        yield
    finally:
        modeling.fused_chunk_size, modeling.fused_padded_rows = chunk_rule, padding_rule


def flops_per_token(model, context: int) -> float:
    c = model.config
    d, layers = c.hidden_size, c.num_hidden_layers
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    head = c.vocab_size * d
    return 6 * (linear + head) + 12 * layers * context * d


def make_trainer(config, data, dataset, steps: int, compile_: bool, out: str,
                 collator=collate_windows) -> tuple[Trainer, StepClock]:
    torch.manual_seed(0)
    model = build_model(config, data.tokenizer)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, adam_beta2=config.adam_beta2, adam_epsilon=config.adam_epsilon,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=10,
        max_steps=steps, logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        torch_compile=compile_, seed=0,
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock], data_collator=collator)
    return trainer, clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=60, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of each variant")
    p.add_argument("--quick", action="store_true", help="2 rounds of 20 steps")
    p.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc at its defaults")
    args = p.parse_args()
    if not args.default_malloc:
        tune_malloc_for_training()
    if args.quick:
        args.steps, args.rounds = 20, 2
    torch.set_num_threads(args.threads)
    base = CapacityTrainingConfig(
        dataset="bioD", n_people=1500, model="gpt2-1-1", head_dim=args.head_dim, context_length=512,
        biod={"n_attributes": 1, "chunks_per_value": 16, "diversity": 1000, "chunk_length": 1, "alphabet": 1000},
        batch_size=args.batch, learning_rate=1e-2, progress=False,
    )
    full, fitted = build_data(base), build_data(replace(base, fit_vocabulary=True))
    # numpy rows without labels, as `hf-capacity train` hands them to the Trainer (collate_windows adds the labels)
    windows = {(fit, context): data.stream(40, context).to_dataset(progress=False, labels=False).with_format("numpy")
               for fit, data in ((False, full), (True, fitted)) for context in (512, 256)}
    # the baseline reads its labels from the table, with the Trainer's default collator (as it was)
    labelled = full.stream(40, 512).to_dataset(progress=False).with_format("numpy")
    # name, config, data, fused-loss chunk rows (None: the model's rule, fused_chunk_size), head padded
    # (fused_padded_rows) or not; the baseline is the fused path as it was when issue 18 set the goal
    variants = [
        ("plain loss, whole vocabulary", replace(base, fit_vocabulary=False), full, None, True),
        (BASELINE, replace(base, fit_vocabulary=False, fused_loss=True), full, 128, False),
        ("fused loss, fitted vocabulary", replace(base, fused_loss=True, fit_vocabulary=True), fitted, None, True),
        ("fused loss, fitted vocabulary, context 256",
         replace(base, fused_loss=True, fit_vocabulary=True, context_length=256, batch_size=2 * args.batch),
         fitted, None, True),
    ]
    variants.append((UNPADDED, variants[-1][1], fitted, None, False))
    if args.compile:
        variants += [(name + ", compiled", replace(config, torch_compile=True), data, rows, padded)
                     for name, config, data, rows, padded in variants]
    tokens_per_step = args.batch * 512
    rates: dict[str, list[float]] = {name: [] for name, *_ in variants}
    per_token: dict[str, float] = {}
    vocab: dict[str, int] = {}
    peaks = []
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds + 1):  # round 0 warms up (and compiles)
            peaks.append(matmul_peak_gflops(args.threads))
            for name, config, data, rows, padded in variants:
                if name.startswith(BASELINE):  # compiled too (--compile): the baseline's table and collator
                    trainer, clock = make_trainer(config, data, labelled, args.steps, config.torch_compile, out,
                                                  collator=None)
                else:
                    dataset = windows[(config.fit_vocabulary, config.context_length)]
                    trainer, clock = make_trainer(config, data, dataset, args.steps, config.torch_compile, out)
                per_token[name] = flops_per_token(trainer.model, config.context_length)
                vocab[name] = trainer.model.config.vocab_size
                with pinned_kernel(rows, padded):
                    trainer.train()
                if round_ == 0:
                    continue
                seconds = clock.stamps[-1] - clock.stamps[SKIP - 1]
                rates[name].append((len(clock.stamps) - SKIP) * tokens_per_step / seconds)
    peak = max(peaks)
    baseline = rates[BASELINE]
    print(f"GPT2-1-1 head dim {args.head_dim}, {tokens_per_step} tokens a step, {args.threads} thread(s); "
          f"matmul peak {peak:.1f} GFLOP/s; {args.rounds} rounds of {args.steps} steps")
    print("| path | vocabulary | MFLOP a token | tokens/s (median) | ratio vs baseline | model GFLOP/s "
          "| fraction of matmul peak |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = statistics.median(v / b for v, b in zip(values, baseline))
        gflops = median * per_token[name] / 1e9
        print(f"| {name} | {vocab[name]:,} | {per_token[name] / 1e6:.3f} | {median:,.0f} | {ratio:.2f}× "
              f"| {gflops:.1f} | {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
