"""Training-step throughput and peak memory of CapacityGPT2 next to stock transformers GPT-2 of the same shape.

    python benchmarks/bench_gpt2.py [--quick] [--layers 2 --heads 2 --batch 4 --context 256] [--device cuda]

One training step is forward + backward + AdamW step on a random batch. The models are timed in interleaved
repetitions after a warm-up, so drifts and load of the machine hit all of them alike: the table gives the median
and best tokens/s of each model, and the ratio to stock GPT-2 as the median of the per-repetition ratios (paired,
the statistic least moved by other work on a shared machine).
Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the steps; on CPU the peak resident set size of a
separate process that builds the model and runs two steps, minus its size just before the first step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM  # noqa: E402

VARIANTS = ("stock GPT2LMHeadModel", "CapacityGPT2 learned", "CapacityGPT2 rotary")


def build_model(variant: str, args: argparse.Namespace) -> torch.nn.Module:
    """The model of `variant` with the benchmark's shape, dropout 0 and sdpa attention."""
    hidden = args.heads * args.head_size
    if variant == "stock GPT2LMHeadModel":
        config = GPT2Config(vocab_size=args.vocab, n_positions=args.context, n_embd=hidden, n_layer=args.layers,
                            n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
        return GPT2LMHeadModel(config)
    positions = "learned" if variant.endswith("learned") else "rotary"
    config = CapacityGPT2Config(vocab_size=args.vocab, max_position_embeddings=args.context, hidden_size=hidden,
                                num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                position_embedding_type=positions, mlp_type="standard",
                                attn_implementation="sdpa")
    return CapacityGPT2ForCausalLM(config)


class Trainer:
    """A model, its AdamW optimizer and a fixed random batch; `step()` runs one training step."""

    def __init__(self, variant: str, args: argparse.Namespace):
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.model = build_model(variant, args).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.ids = torch.randint(0, args.vocab, (args.batch, args.context), device=self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> float:
        """Seconds for `steps` training steps."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_memory_mib(variant: str, args: argparse.Namespace) -> float:
    """In this (fresh) process: peak RSS of two training steps over the RSS before them, in MiB."""
    trainer = Trainer(variant, args)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    trainer.step()
    trainer.step()
    return (_rss_kib("VmHWM") - before) / 1024


def peak_memory_mib(variant: str, args: argparse.Namespace) -> float | None:
    """Peak training-step memory of `variant` in MiB: CUDA allocator peak, or a CPU probe in a fresh process."""
    if args.device.startswith("cuda"):
        trainer = Trainer(variant, args)
        trainer.step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        trainer.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--memory-probe", variant]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1, help="training steps per timed repetition")
    parser.add_argument("--reps", type=int, default=25, help="interleaved timed repetitions per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps({"peak_mib": cpu_peak_memory_mib(args.memory_probe, args)}))
        return
    if args.quick:
        args.reps, args.steps, args.warmup = 7, 1, 1

    trainers = {variant: Trainer(variant, args) for variant in VARIANTS}
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    tokens = args.steps * args.batch * args.context
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for rep in range(args.reps):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[: rep % len(VARIANTS)]  # rotate who goes first
        for variant in order:
            rates[variant].append(tokens / trainers[variant].timed(args.steps))
    params = {variant: sum(p.numel() for p in trainer.model.parameters()) for variant, trainer in trainers.items()}
    del trainers
    memory = {variant: peak_memory_mib(variant, args) for variant in VARIANTS}

    stock_rates = rates[VARIANTS[0]]
    print(f"GPT-2 shape: {args.layers} layers, {args.heads} heads of {args.head_size}, vocab {args.vocab}, "
          f"batch {args.batch} × context {args.context}, {args.device} {args.dtype}, torch threads "
          f"{torch.get_num_threads()}; median of {args.reps} interleaved repetitions of {args.steps} steps\n")
    print("| model | parameters | tokens/s (median) | tokens/s (best) | ratio vs stock (paired median) "
          "| peak step memory (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        ratio = statistics.median(ours / stock for ours, stock in zip(rates[variant], stock_rates))
        mem = "n/a" if memory[variant] is None else f"{memory[variant]:,.0f}"
        print(f"| {variant} | {params[variant]:,} | {statistics.median(rates[variant]):,.0f} "
              f"| {max(rates[variant]):,.0f} | {ratio:.3f} | {mem} |")


if __name__ == "__main__":
    main()
