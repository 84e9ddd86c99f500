"""`hf-capacity memorize`: train a model on uniform random sequences and report the bits it memorized."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import CLIError, add_command, add_count


def cmd_memorize(args) -> None:
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from ..callbacks import MemorizationCallback
    from ..data.random_sequences import RandomSequences
    from ..models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM
    from ..training import check_model_name

    family, layers, heads = check_model_name(args.model)
    if family != "gpt2":
        raise CLIError(f"memorize trains gpt2-<layers>-<heads> models, not {args.model!r}")
    data = RandomSequences(args.N, args.length, args.vocab, seed=args.seed)
    set_seed(args.seed)
    config = CapacityGPT2Config(vocab_size=data.model_vocab_size, hidden_size=heads * args.head_dim,
                                num_hidden_layers=layers, num_attention_heads=heads,
                                max_position_embeddings=max(args.length + 1, 64), fused_loss=args.fused_loss)
    model = CapacityGPT2ForCausalLM(config)
    steps = args.epochs * -(-args.N // args.batch_size)
    training = TrainingArguments(
        output_dir=args.output, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=0.0, warmup_steps=min(args.warmup_steps, max(steps // 10, 1)), max_steps=steps,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, logging_steps=max(steps // 20, 1),
        save_strategy="no", report_to=args.report_to, bf16=args.bf16, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=args.quiet, seed=args.seed,
    )
    callback = MemorizationCallback(data, eval_steps=max(steps // 10, 1), held_out=data.held_out(min(args.N, 256)))
    trainer = Trainer(model=model, args=training, train_dataset=data.to_dataset())
    callback.attach(trainer)
    trainer.train()
    report = callback.last_report
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "head_dim": args.head_dim, "num_params": report.num_params, "N": args.N,
              "length": args.length, "vocab": args.vocab, "data_bits": data.entropy_bits, "epochs": args.epochs,
              "bf16": args.bf16, "memorized_bits": report.bits_total, "bits_per_param": report.bits_per_param,
              "heldout_memorized_bits": callback.history[-1].get("heldout_memorized_bits"),
              "history": callback.history}
    (out / "memorization.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
        return
    print(f"{args.model} (P = {report.num_params:,}) on {args.N:,} random sequences of {args.length} tokens over "
          f"{args.vocab} symbols ({data.entropy_bits:,.0f} bits), {args.epochs} epochs:")
    print(f"  memorized {report.bits_total:,.0f} bits = {report.bits_per_param:.3f} bits/param "
          f"({report.bits_total / data.entropy_bits:.1%} of the data); held-out set: "
          f"{result['heldout_memorized_bits']:,.0f} bits")
    print(f"wrote {out / 'memorization.json'}")


def add_commands(subparsers) -> None:
    """Add `memorize` to `hf-capacity`'s subparsers."""
    m = add_command(subparsers, "memorize",
                    help="memorization capacity: train on uniform random sequences, report memorized bits (Morris 2025)")
    add_count(m, "--N", default=1024, help="random sequences")
    add_count(m, "--length", default=64, help="tokens per sequence (after one BOS token)")
    add_count(m, "--vocab", minimum=2, default=2048, help="symbols each token is drawn from")
    m.add_argument("--model", default="gpt2-1-1", help="gpt2-<layers>-<heads>")
    add_count(m, "--head-dim", default=32, help="width of each attention head")
    add_count(m, "--epochs", default=100, help="passes over the sequences")
    add_count(m, "--batch-size", default=64, help="sequences per step")
    m.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine to 0.1×)")
    add_count(m, "--warmup-steps", minimum=0, default=100, help="learning-rate warm-up (at most a tenth of the steps)")
    add_count(m, "--seed", minimum=0, default=0, help="seed of the sequences and the initialisation")
    m.add_argument("--bf16", action="store_true", help="train in bfloat16 autocast")
    m.add_argument("--fused-loss", action="store_true", help="fused head + cross-entropy (see `train --help`)")
    m.add_argument("--report-to", nargs="*", default=[], help="Trainer report_to backends")
    m.add_argument("--output", "-o", default="runs/memorize", help="output folder")
    m.add_argument("--json", action="store_true", help="print the result as one JSON object")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_memorize)
