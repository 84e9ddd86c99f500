"""Measure the knowledge capacity of a model trained with the stock `transformers.Trainer`: one added line.

A copyable, self-contained script: synthetic biographies bioS(N) → a small CapacityGPT2 (the paper's rotary
GPT2-ℓ-h) → `Trainer` + `add_capacity_callbacks(trainer, data)` → the final `KnowledgeReport` (bits of knowledge
stored, bits per parameter, per-attribute loss and exact match). Nothing is downloaded from the Hub.

    python examples/train_with_trainer.py                          # ~1 minute on a laptop CPU
    python examples/train_with_trainer.py --N 2000 --model gpt2-4-4 --exposures 100 --context-length 512

The defaults are tiny so that the script finishes quickly; a model only approaches the paper's ~2 bits/param
with 100-1000 exposures of every person and enough steps (scale up with --N, --model, --exposures).
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

import hf_capacity.models  # noqa: F401 - registers CapacityGPT2 / MemoryLlama with the Auto classes
from hf_capacity.callbacks import add_capacity_callbacks
from hf_capacity.data import BioSPopulation, KnowledgeData
from hf_capacity.models import CapacityGPT2Config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, default=200, help="people in bioS(N) (default 200)")
    p.add_argument("--model", default="gpt2-2-2", help="gpt2-<layers>-<heads>, heads of --head-dim (default gpt2-2-2)")
    p.add_argument("--head-dim", type=int, default=64, help="width of each attention head (default 64, as the paper)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary trained on the data (default 1024)")
    p.add_argument("--exposures", type=int, default=10, help="times each person is seen in one epoch (default 10)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (default: one epoch)")
    p.add_argument("--context-length", type=int, default=256, help="tokens per training window (default 256)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per device per step (default 16)")
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--eval-steps", type=int, default=None, help="also measure knowledge every N steps")
    p.add_argument("--max-people", type=int, default=None, help="evaluate a random subsample (default: all N)")
    p.add_argument("--output-dir", default="runs/train_with_trainer", help="results.json, plot and card go here")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_seed(args.seed)

    # 1. Data: a population of N people (the ground truth), a BPE tokenizer trained on its renderings, and the
    #    training stream: every person rendered afresh for each exposure, packed into windows of context_length.
    data = KnowledgeData.create(BioSPopulation(n_people=args.N, seed=args.seed), vocab_size=args.vocab_size)
    train_dataset = data.stream(args.exposures, args.context_length).to_dataset(progress=False)

    # 2. Model: GPT2-ℓ-h by name (rotary GPT-2, heads of head_dim), sized to the data's tokenizer.
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

    # 3. The plain Trainer: the windows already carry input_ids / attention_mask / labels, so no collator is needed.
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=0.02,
        adam_beta2=0.98,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # a fraction of the total steps
        num_train_epochs=1,  # one epoch of the stream = `exposures` exposures of every person
        max_steps=args.max_steps,  # -1: the epoch decides
        logging_steps=10,
        save_strategy="no",
        report_to=[],  # e.g. ["tensorboard"]: the knowledge metrics reach every backend
        use_cpu=not torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset)

    # 4. The one added line: knowledge bits during/at the end of training, exposure counting, and
    #    results.json + knowledge_curve.png + a model card written into output_dir at the end.
    callbacks = add_capacity_callbacks(trainer, data, eval_steps=args.eval_steps, max_people=args.max_people)

    trainer.train()

    # 5. The final measurement (also in output_dir/results.json and trainer.state.log_history).
    if trainer.is_world_process_zero():
        print(callbacks["knowledge"].last_report.table())
        print(f"exposures: {callbacks['exposures'].exposures:.1f}; results in {args.output_dir}")


if __name__ == "__main__":
    main()
