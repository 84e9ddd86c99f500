"""Knowledge capacity with the stock `Trainer` on several processes (DDP), evaluation sharded across ranks.

The same run as ``train_with_trainer.py``, launched with ``torchrun`` or ``accelerate launch``. Training is
data-parallel; the knowledge evaluation (``evaluate_knowledge``, called by the capacity callback) shards the
people across the ranks and gathers the per-person losses, so every rank gets the same report, with the numbers
one process would get (up to float rounding). ``--check-single-process`` verifies that after training: every
rank also evaluates all people alone (``distributed=False``), and rank 0 writes the comparison as one JSON line
to ``--report-file``. Only rank 0 prints and writes files.

CPU, 2 processes (gloo). ``use_cpu=True`` is set below when no GPU is visible; ``ACCELERATE_USE_CPU=1`` does
the same. Without either, each rank would silently train alone (and ``accelerate launch --cpu`` starts ONE
process), so the script checks that it really runs on ``WORLD_SIZE`` processes::

    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 --master_port 29531 \\
        examples/accelerate_multi_process.py --check-single-process --report-file runs/mp_check.jsonl
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 29532 \\
        examples/accelerate_multi_process.py --check-single-process --report-file runs/mp_check.jsonl

N GPUs (NCCL), one process per GPU::

    torchrun --nproc_per_node 8 examples/accelerate_multi_process.py --N 10000 --exposures 100 --model gpt2-6-4
    accelerate launch --multi_gpu --num_processes 8 examples/accelerate_multi_process.py --N 10000 ...

Single process works too (``python examples/accelerate_multi_process.py``), then nothing is sharded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

import hf_capacity.models  # noqa: F401 - registers CapacityGPT2 / MemoryLlama with the Auto classes
from hf_capacity.callbacks import add_capacity_callbacks
from hf_capacity.data import BioSPopulation, KnowledgeData
from hf_capacity.evaluation import KnowledgeReport, evaluate_knowledge
from hf_capacity.models import CapacityGPT2Config

COMPARED = ("p1", "p2", "bits")
REL_TOL = 1e-6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, default=200, help="people in bioS(N) (default 200)")
    p.add_argument("--model", default="gpt2-2-2", help="gpt2-<layers>-<heads>, heads of --head-dim (default gpt2-2-2)")
    p.add_argument("--head-dim", type=int, default=64, help="width of each attention head (default 64, as the paper)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary trained on the data (default 1024)")
    p.add_argument("--exposures", type=int, default=10, help="times each person is seen in one epoch (default 10)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: one epoch)")
    p.add_argument("--context-length", type=int, default=256, help="tokens per training window (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per process per step (default 8)")
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--eval-steps", type=int, default=None, help="also measure knowledge every N steps")
    p.add_argument("--output-dir", default="runs/accelerate_multi_process")
    p.add_argument("--check-single-process", action="store_true",
                   help="after training, compare the sharded evaluation with a single-process one on every rank")
    p.add_argument("--report-file", default=None,
                   help="append the comparison as a JSON line here (default: <output-dir>/single_process_check.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def summary(report: KnowledgeReport) -> dict:
    """The numbers compared between the sharded and the single-process evaluation."""
    return {
        "n_evaluated": report.n_evaluated,
        "p1": report.p1,
        "p2": report.p2,
        "bits": report.bits.total,
        "bits_max": report.bits_max.total,
        "bits_per_param": report.bits_per_param,
        "accuracy": {a: r["accuracy"] for a, r in report.per_attribute.items()},
    }


def relative_difference(a: float, b: float, scale: float = 0.0) -> float:
    """|a - b| / max(|a|, |b|, scale): 0 for equal values, also when both are 0 (clipped bits)."""
    denominator = max(abs(a), abs(b), scale)
    return 0.0 if denominator == 0 else abs(a - b) / denominator


def compare(sharded: KnowledgeReport, single: KnowledgeReport) -> dict[str, float]:
    """Relative differences of p1, p2 and bits. Bits are a difference of two large terms (clipped at 0), so
    their difference is taken relative to at least 1e-3·bits_max (the data's bit budget) as well."""
    a, b = summary(sharded), summary(single)
    diffs = {k: relative_difference(a[k], b[k]) for k in ("p1", "p2")}
    diffs["bits"] = relative_difference(a["bits"], b["bits"], scale=1e-3 * a["bits_max"])
    return diffs


def main(argv=None) -> None:
    args = parse_args(argv)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # 1. TrainingArguments first: it initialises the distributed state (gloo on CPU with use_cpu=True, NCCL on GPUs).
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,  # global batch = batch_size × processes
        learning_rate=args.learning_rate,
        weight_decay=0.02,
        adam_beta2=0.98,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        num_train_epochs=1,  # one epoch of the stream = `exposures` exposures of every person
        max_steps=args.max_steps,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),  # CPU DDP over gloo; on GPUs one process per device
        ddp_find_unused_parameters=False,
        seed=args.seed,
    )
    state = PartialState()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != world_size:
        raise RuntimeError(
            f"launched on {world_size} processes but the distributed state has {state.num_processes}: on CPU "
            "set ACCELERATE_USE_CPU=1 (or TrainingArguments(use_cpu=True)), and use --multi_gpu with accelerate launch"
        )

    # 2. Data: rank 0 creates the population and trains the tokenizer; the other ranks load the very same files.
    data_dir = output_dir / "knowledge_data"
    with state.main_process_first():
        if state.is_main_process:
            population = BioSPopulation(n_people=args.N, seed=args.seed)
            KnowledgeData.create(population, vocab_size=args.vocab_size).save(data_dir)
    data = KnowledgeData.load(data_dir)
    # Every rank builds the same packed stream; the Trainer's distributed sampler gives each rank its share.
    train_dataset = data.stream(args.exposures, args.context_length).to_dataset(progress=False)

    # 3. Model: GPT2-ℓ-h by name; DDP broadcasts rank 0's initial weights to the others.
    tokenizer = data.tokenizer
    heads = int(args.model.rsplit("-", 1)[1])
    config = CapacityGPT2Config.from_name(
        args.model,
        hidden_size=heads * args.head_dim,
        vocab_size=len(tokenizer),
        max_position_embeddings=args.context_length,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)

    # 4. Trainer + the one added line. Every rank runs the callbacks (each evaluates its shard of the people);
    #    files (results.json, plot, card) are written by rank 0 only.
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset)
    callbacks = add_capacity_callbacks(trainer, data, eval_steps=args.eval_steps, context_length=args.context_length)
    trainer.train()
    report = callbacks["knowledge"].last_report  # measured at the last step, sharded over the ranks

    if state.is_main_process:  # every rank holds the same report; one prints it
        print(report.table())
        print(f"processes: {state.num_processes}; exposures: {callbacks['exposures'].exposures:.1f}")

    # 5. Optional check: the same weights evaluated on one process (every rank, all people) give the same numbers.
    if args.check_single_process:
        check_single_process(trainer.model, data, report, state, args, output_dir)


def check_single_process(model, data, callback_report, state, args, output_dir: Path) -> None:
    """Evaluate sharded (counting the biographies each rank scores) and alone; rank 0 writes one JSON line."""
    scored = {"biographies": 0}

    def count(module, positional, kwargs):  # a forward pre-hook: rows of every evaluation batch on this rank
        scored["biographies"] += kwargs["input_ids"].shape[0]

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    sharded = evaluate_knowledge(model, data, progress=False)  # distributed=None: sharded when multi-process
    hook.remove()
    single = evaluate_knowledge(model, data, progress=False, distributed=False)
    diffs = {
        "sharded": compare(sharded, single),
        "callback": compare(callback_report, single),  # what the callback logged at the last step
    }
    # a collective: every rank contributes its numbers, rank 0 writes them all
    per_rank = gather_object([{
        "rank": state.process_index,
        "biographies_scored_sharded": scored["biographies"],
        "single_process": summary(single),
        "rel_diff": diffs,
    }])
    if state.is_main_process:
        worst = {k: max(r["rel_diff"][which][k] for r in per_rank for which in diffs) for k in COMPARED}
        match = all(math.isfinite(v) and v <= REL_TOL for v in worst.values())
        line = {
            "num_processes": state.num_processes,
            "sharded": summary(sharded),
            "single_process": summary(single),
            "callback": summary(callback_report),
            "people_per_rank": [r["biographies_scored_sharded"] for r in per_rank],
            "max_rel_diff": worst,
            "rel_tol": REL_TOL,
            "match": match,
            "per_rank": per_rank,
        }
        report_file = Path(args.report_file) if args.report_file else output_dir / "single_process_check.jsonl"
        report_file.parent.mkdir(parents=True, exist_ok=True)
        with report_file.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"sharded vs single-process: match={match}, max relative differences {worst}, "
              f"people per rank {line['people_per_rank']} → {report_file}")
    state.wait_for_everyone()

if __name__ == "__main__":
    main()
