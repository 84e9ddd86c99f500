"""Training throughput of adapter runs (LoRA, QLoRA) next to full fine-tuning of the same base, in one run.

    python benchmarks/bench_adapter_step.py [--quick] [--threads 1] [--base docs/results/calibration_1000]

Each variant is built exactly as ``hf-capacity train --init-from BASE [--lora-r R] [--load-in-4bit]`` builds it
(``training.build_model``) and trained with the stock ``transformers.Trainer`` on the base's format (300 new
bioD people), in interleaved rounds of ``--steps`` steps after a warm-up round; a round's time runs from the end
of its 5th step to its last. Tokens/s are medians over the rounds; the ratio to full fine-tuning is the median
of the paired per-round ratios. Also printed: the trainable parameters (the P of bits per trainable parameter)
and the optimizer state they need (AdamW: two fp32 moments per trainable parameter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import SKIP, StepClock  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from hf_capacity.training import CapacityTrainingConfig, build_data, build_model  # noqa: E402  (first: quiet bnb)

VARIANTS = [
    ("full fine-tuning", 0, False), ("LoRA r=8", 8, False), ("LoRA r=32", 32, False),
    ("QLoRA r=8 (NF4 base)", 8, True),
]


def make_trainer(config, dataset, steps: int, out: str) -> tuple[Trainer, StepClock]:
    torch.manual_seed(0)
    data = build_data(config)
    model = build_model(config, data.tokenizer)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        weight_decay=0.0, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=10, max_steps=steps, logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    clock = StepClock()
    return Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock]), clock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "results",
                                                  "calibration_1000"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=40, help="steps per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 rounds of 15 steps")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 15, 2
    torch.set_num_threads(args.threads)
    configs = {
        name: CapacityTrainingConfig(
            init_from=args.base, dataset="bioD", n_people=300, lora_r=r, load_in_4bit=q, context_length=512,
            biod={"n_attributes": 1, "chunks_per_value": 16, "diversity": 1000, "chunk_length": 1, "alphabet": 1000},
            batch_size=args.batch, learning_rate=1e-2, progress=False)
        for name, r, q in VARIANTS
    }
    dataset = build_data(next(iter(configs.values()))).stream(40, 512).to_dataset(progress=False)
    rates: dict[str, list[float]] = {name: [] for name in configs}
    trainable: dict[str, int] = {}
    tokens_per_step = args.batch * 512
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name, config in configs.items():
                trainer, clock = make_trainer(config, dataset, args.steps, out)
                trainable[name] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
                trainer.train()
                if round_:
                    seconds = clock.stamps[-1] - clock.stamps[SKIP - 1]
                    rates[name].append((len(clock.stamps) - SKIP) * tokens_per_step / seconds)
    reference = rates[VARIANTS[0][0]]
    print(f"base {os.path.normpath(args.base)}, batch {args.batch} × 512, {args.threads} thread(s); "
          f"{args.rounds} rounds of {args.steps} steps")
    print("| run | trainable parameters | AdamW state | tokens/s (median) | ratio vs full fine-tuning |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, reference))
        print(f"| {name} | {trainable[name]:,} | {8 * trainable[name] / 1024:,.0f} KiB | "
              f"{statistics.median(values):,.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
