"""Benchmarks MemoryLlama: embedding_bag memory lookup vs a naive gather, and training steps vs a dense Llama.

Run: `python benchmarks/bench_memory.py [--quick] [--device cuda] [--tokens 4096 --rows 65536 ...]`.

(a) Lookup `y[t] = Σ_j w[t, j] V[slot[t, j]]` over H·k = heads·topk rows per token: one
    `F.embedding_bag(mode="sum", per_sample_weights=w)` (what `MemoryPlusLayer` uses) against `V[slots]` followed by a
    weighted sum, which materialises a (tokens, H·k, v) tensor. Forward and forward+backward (gradients into V and w).
(b) One AdamW training step (forward, backward, optimizer step) of MemoryLlama against a stock `LlamaForCausalLM`
    with the same number of ACTIVE parameters per token: both have the same attention, embeddings and dense gated
    MLPs everywhere except at the memory layers, where the Llama keeps its gated MLP (3·C·I weights) and MemoryLlama
    has a Memory+ layer whose per-token active parameters (W_q, b_q, all half-keys, W_1, b_1, W_o, b_o and the
    H·k·v values it reads) are chosen to be within a few percent of that (defaults: C=256, I=688, H=4, d=240,
    k=32, v=C). The value table is counted in total parameters but only its read rows count as active. Memory layers
    sit at `default_memory_layers(L)` (3 of L=12 blocks by default; the paper uses 3 of 24).

Timings: warm-up first, then repetitions interleaved between the variants, medians reported. Peak memory of (a): on
CUDA `max_memory_allocated`; on CPU (Linux) the rise of the peak resident set (VmHWM, reset through
/proc/self/clear_refs) above the set-up state, each lookup in a fresh process.
"""

import argparse
import multiprocessing
import statistics
import time

import torch

from hf_capacity.models.memory_llama import (
    MemoryLlamaConfig,
    MemoryLlamaForCausalLM,
    default_memory_layers,
    memory_lookup,
)

# -- (a) the lookup -------------------------------------------------------------------------------------------------


def lookup_embedding_bag(values, slots, weights):
    return memory_lookup(values, slots, weights)


def lookup_naive(values, slots, weights):
    return (values[slots] * weights[..., None].to(values.dtype)).sum(dim=(1, 2))


LOOKUPS = {"embedding_bag": lookup_embedding_bag, "naive gather + sum": lookup_naive}


def make_lookup_inputs(args, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(args.rows, args.value_dim, generator=generator).to(args.device).requires_grad_()
    slots = torch.randint(0, args.rows, (args.tokens, args.heads, args.topk), generator=generator).to(args.device)
    weights = torch.rand(args.tokens, args.heads, args.topk, generator=generator).softmax(-1)
    weights = weights.to(args.device).requires_grad_()
    probe = torch.randn(args.tokens, args.value_dim, generator=generator).to(args.device)
    return values, slots, weights, probe


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_lookup(fn, inputs, backward):
    values, slots, weights, probe = inputs
    if not backward:
        with torch.no_grad():
            return fn(values, slots, weights)
    values.grad = weights.grad = None
    (fn(values, slots, weights) * probe).sum().backward()


def timed(callable_, device):
    sync(device)
    start = time.perf_counter()
    callable_()
    sync(device)
    return time.perf_counter() - start


def _proc_status_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_memory_child(name, args, queue):
    """In a fresh process: peak memory (bytes) the lookup needs above its inputs, forward and forward+backward."""
    torch.set_num_threads(args.threads)
    inputs = make_lookup_inputs(args)
    peaks = []
    for backward in (False, True):
        if args.device.startswith("cuda"):
            run_lookup(LOOKUPS[name], inputs, backward)  # warm-up
            inputs[0].grad = inputs[2].grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run_lookup(LOOKUPS[name], inputs, backward)
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - base)
        else:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets the peak resident set (VmHWM) to the current one
            base = _proc_status_kib("VmRSS")
            run_lookup(LOOKUPS[name], inputs, backward)
            peaks.append((_proc_status_kib("VmHWM") - base) * 1024)
        inputs[0].grad = inputs[2].grad = None
    queue.put(peaks)


def peak_memory(name, args):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=peak_memory_child, args=(name, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_lookup(args):
    inputs = make_lookup_inputs(args)
    out_fast = lookup_embedding_bag(*inputs[:3])
    out_naive = lookup_naive(*inputs[:3])
    max_diff = (out_fast - out_naive).abs().max().item()
    times = {(name, bwd): [] for name in LOOKUPS for bwd in (False, True)}
    for rep in range(args.warmup + args.reps):
        order = list(LOOKUPS) if rep % 2 == 0 else list(reversed(LOOKUPS))
        for backward in (False, True):
            for name in order:
                elapsed = timed(lambda: run_lookup(LOOKUPS[name], inputs, backward), args.device)
                if rep >= args.warmup:
                    times[(name, backward)].append(elapsed)
    medians = {key: statistics.median(value) for key, value in times.items()}
    memory = {}
    for name in LOOKUPS:
        memory[(name, False)], memory[(name, True)] = peak_memory(name, args)

    shape = (
        f"tokens={args.tokens}, H={args.heads}, k={args.topk}, v={args.value_dim}, table={args.rows} rows, "
        f"device={args.device}, threads={torch.get_num_threads()}, max |difference|={max_diff:.1e}"
    )
    print(f"\n### (a) memory lookup ({shape})\n")
    print("| lookup | forward ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |")
    print("|---|---:|---:|---:|---:|")
    for name in LOOKUPS:
        print(
            f"| {name} | {medians[(name, False)] * 1e3:.1f} | {medians[(name, True)] * 1e3:.1f} | "
            f"{memory[(name, False)] / 2**20:.0f} | {memory[(name, True)] / 2**20:.0f} |"
        )
    fast, naive = "embedding_bag", "naive gather + sum"
    print(
        f"| **speed-up (naive / embedding_bag)** | **{medians[(naive, False)] / medians[(fast, False)]:.1f}×** | "
        f"**{medians[(naive, True)] / medians[(fast, True)]:.1f}×** | "
        f"{memory[(naive, False)] / max(memory[(fast, False)], 1):.1f}× | "
        f"{memory[(naive, True)] / max(memory[(fast, True)], 1):.1f}× |"
    )


# -- (b) training steps ---------------------------------------------------------------------------------------------


def build_models(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    shared = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        max_position_embeddings=max(2048, args.seq),
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(**shared))
    memory_config = MemoryLlamaConfig(
        **shared,
        memory_layers=default_memory_layers(args.layers),
        memory_n_keys=args.n_keys,
        memory_heads=args.heads,
        memory_topk=args.topk,
        memory_key_dim=args.key_dim,
    )
    memory = MemoryLlamaForCausalLM(memory_config)
    return dense.to(args.device), memory.to(args.device)


def active_parameters(model):
    total = model.num_parameters()
    breakdown = getattr(model, "capacity_parameter_breakdown", None)
    inactive = breakdown()["inactive_per_token"] if breakdown else 0
    return total, total - inactive


def bench_training(args):
    dense, memory = build_models(args)
    optimizers = {
        "dense Llama": torch.optim.AdamW(dense.parameters(), lr=1e-4, weight_decay=0.01),
        "MemoryLlama": torch.optim.AdamW(memory.optimizer_param_groups(lr=1e-4, weight_decay=0.01)),
    }
    models = {"dense Llama": dense.train(), "MemoryLlama": memory.train()}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator).to(args.device)

    def step(name):
        loss = models[name](ids, labels=ids).loss
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    times = {name: [] for name in models}
    for rep in range(args.warmup + args.reps):
        order = list(models) if rep % 2 == 0 else list(reversed(models))
        for name in order:
            elapsed = timed(lambda: step(name), args.device)
            if rep >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(value) for name, value in times.items()}

    tokens = args.batch * args.seq
    c = memory.config
    print(
        f"\n### (b) training step, AdamW (L={args.layers}, C={args.hidden}, I={args.intermediate}, "
        f"memory layers {c.memory_layers}: H={c.memory_heads}, d={c.memory_key_dim}, k={c.memory_topk}, "
        f"n_keys={c.memory_n_keys} → {c.memory_slots} values × v={c.memory_value_dim}; "
        f"batch {args.batch}×{args.seq} tokens, device={args.device})\n"
    )
    print("| model | total params | active params / token | step ms | tokens/s | step time vs dense |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        total, active = active_parameters(model)
        print(
            f"| {name} | {total:,} | {active:,} | {medians[name] * 1e3:.0f} | {tokens / medians[name]:,.0f} | "
            f"{medians[name] / medians['dense Llama']:.2f}× |"
        )
    mlp = 3 * args.hidden * args.intermediate
    layer = memory.model.layers[c.memory_layers[0]].mlp
    per_layer = sum(p.numel() for p in layer.parameters()) + c.memory_heads * c.memory_topk * c.memory_value_dim
    print(f"\nactive parameters of one replaced block: dense gated MLP {mlp:,} vs Memory+ layer {per_layer:,} "
          f"({per_layer / mlp - 1:+.1%})")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repetitions (a smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    lookup = parser.add_argument_group("(a) lookup")
    lookup.add_argument("--tokens", type=int, default=4096)
    lookup.add_argument("--rows", type=int, default=65536, help="rows of the value table")
    lookup.add_argument("--value-dim", type=int, default=256)
    shared = parser.add_argument_group("shared by (a) and (b)")
    shared.add_argument("--heads", type=int, default=4, help="memory heads H")
    shared.add_argument("--topk", type=int, default=32, help="values per head k")
    training = parser.add_argument_group("(b) training")
    training.add_argument("--vocab", type=int, default=2048)
    training.add_argument("--hidden", type=int, default=256)
    training.add_argument("--intermediate", type=int, default=688)
    training.add_argument("--layers", type=int, default=12, help="memory layers at default_memory_layers(L)")
    training.add_argument("--key-dim", type=int, default=240)
    training.add_argument("--n-keys", type=int, default=128, help="table rows are n_keys²")
    training.add_argument("--batch", type=int, default=8)
    training.add_argument("--seq", type=int, default=128)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.rows, args.reps, args.batch, args.seq = 1024, 16384, 3, 4, 64
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not args.skip_lookup:
        bench_lookup(args)
    if not args.skip_training:
        bench_training(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s; torch {torch.__version__})")


if __name__ == "__main__":
    main()
