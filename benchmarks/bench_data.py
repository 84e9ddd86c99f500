"""Data pipeline throughput: composed pre-tokenized pieces vs. the naive path (render text, then tokenize), and
the stream of a user's own tokenizer (spans from offset mappings) next to them.

The composed and naive sides produce the same packed training windows (asserted), from the same population and
exposures, on one core (tokenizers' thread pool is limited to 1 thread). The foreign side streams the same
people and exposures through ``OffsetRenderer`` with a GPT-2-style byte-level BPE (vocabulary 4096) trained here
on English text (Python's module docs), so its token counts differ: compare biographies/s. Repetitions are
interleaved; medians reported.

    python benchmarks/bench_data.py            # N = 20,000 people, 5 exposures
    python benchmarks/bench_data.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from hf_capacity.data import BioSPopulation, KnowledgeData  # noqa: E402
from hf_capacity.data.stream import exposure_rounds  # noqa: E402


def composed(data: KnowledgeData, exposures: int, context: int) -> tuple[int, np.ndarray]:
    """hf-capacity's stream: numpy composition of pre-tokenized pieces, packed into windows."""
    n_tokens, last = 0, None
    for item in data.stream(exposures, context):
        n_tokens += int(item["attention_mask"].sum())
        last = item["input_ids"]
    return n_tokens, last


def naive(data: KnowledgeData, exposures: int, context: int) -> tuple[int, np.ndarray]:
    """The obvious path: render each biography as a string, tokenize with the fast tokenizer, pack."""
    tok, renderer = data.tokenizer, data.renderer
    buffer: list[int] = []
    n_tokens, last = 0, None
    for people, e in exposure_rounds(data.population.n_people, exposures, data.population.seed):
        texts = renderer.render_text(people, e)
        for ids in tok(texts, add_special_tokens=False)["input_ids"]:
            buffer.extend(ids)
        full = len(buffer) // context * context
        for start in range(0, full, context):
            last = np.asarray(buffer[start : start + context], dtype=np.int32)
        n_tokens += full
        buffer = buffer[full:]
    if buffer:
        n_tokens += len(buffer)
        last = np.full(context, tok.pad_token_id, dtype=np.int32)
        last[: len(buffer)] = buffer
    return n_tokens, last


def foreign_tokenizer():
    """A byte-level BPE trained on ordinary English text, as a user's model would bring (GPT-2 style)."""
    import email
    import json
    import logging

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = [line for m in (email, json, logging, os, np, argparse) for line in (m.__doc__ or "").splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(text * 5, trainers.BpeTrainer(vocab_size=4096, special_tokens=["</s>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=20_000)
    parser.add_argument("--exposures", type=int, default=5)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N=2000, 2 exposures, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.N, args.exposures, args.repeats = 2000, 2, 2

    data = KnowledgeData.create(BioSPopulation(args.N, seed=0))
    foreign = KnowledgeData.create(BioSPopulation(args.N, seed=0), tokenizer=foreign_tokenizer())
    tokens_a, last_a = composed(data, 1, args.context)  # warm-up, and a correctness check of both paths
    tokens_b, last_b = naive(data, 1, args.context)
    assert tokens_a == tokens_b and np.array_equal(last_a, last_b), "the two paths disagree"

    times: dict[str, list[float]] = {"composed": [], "naive": [], "foreign": []}
    counts = {}
    paths = (("composed", composed, data), ("naive", naive, data), ("foreign", composed, foreign))
    for _ in range(args.repeats):
        for name, fn, source in paths:
            t0 = time.perf_counter()
            counts[name], _ = fn(source, args.exposures, args.context)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: counts[k] / med[k] for k in med}
    bios = args.N * args.exposures
    print(f"bioS(N={args.N:,}), {args.exposures} exposures, context {args.context}, "
          f"{counts['composed']:,} tokens ({counts['foreign']:,} with the foreign tokenizer); "
          f"{platform.processor() or platform.machine()}, 1 thread\n")
    print("| path | median s | tokens/s | biographies/s |")
    print("|---|---:|---:|---:|")
    labels = {"composed": "composed pre-tokenized pieces (project tokenizer)",
              "naive": "naive: render string → fast tokenizer → pack (project tokenizer)",
              "foreign": "a user's byte-level BPE: render → tokenize with offsets → spans → pack"}
    for k in ("composed", "naive", "foreign"):
        print(f"| {labels[k]} | {med[k]:.3f} | {rate[k] / 1e6:.2f} M | {bios / med[k]:,.0f} |")
    print(f"\nratio composed / naive: **{rate['composed'] / rate['naive']:.1f}x**; "
          f"composed / foreign (biographies/s): **{med['foreign'] / med['composed']:.1f}x**")


if __name__ == "__main__":
    main()
