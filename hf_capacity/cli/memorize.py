"""`hf-capacity memorize`: train a model on uniform random sequences and report the bits it memorized, or re-measure
a saved run (``--eval RUN``). The run itself is ``hf_capacity.memorization.train_memorization``; the same command
started again on a folder whose run was killed resumes it from its newest checkpoint."""

from __future__ import annotations

import argparse
import json

from ._common import CLIError, add_command, add_count


def _print_remeasured(run: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    print(f"{run}: memorized {result['memorized_bits']:,.0f} bits = {result['bits_per_param']:.3f} bits/param "
          f"(P = {result['num_params']:,}); held-out set: {result['heldout_memorized_bits']:,.0f} bits")
    if result["recorded"] is not None:
        print(f"  recorded when it finished: {result['recorded']['memorized_bits']:,.0f} bits")


def cmd_memorize(args) -> None:
    from ..memorization import MemorizationRunConfig, check_run_dir, remeasure_memorization, train_memorization

    if args.eval:
        try:
            result = remeasure_memorization(args.eval)
        except FileNotFoundError as err:
            raise CLIError(str(err)) from None
        _print_remeasured(args.eval, result, args.json)
        return
    precision = "bf16-mixed" if args.bf16 else args.precision
    try:
        config = MemorizationRunConfig(
            output_dir=args.output, n_sequences=args.N, length=args.length, vocab_size=args.vocab, seed=args.seed,
            model=args.model, head_dim=args.head_dim, fused_loss=args.fused_loss, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, min_lr_ratio=args.min_lr_ratio,
            warmup_steps=args.warmup_steps,
            precision=precision, eval_steps=args.eval_steps, until_saturated=args.until_saturated,
            report_to=args.report_to, progress=not args.quiet, save_steps=args.save_steps)
        checkpoint = check_run_dir(config)  # refuses a folder holding another run or a finished one
    except ValueError as err:
        raise CLIError(str(err)) from None
    if checkpoint:
        print(f"resuming from {checkpoint}", flush=True)
    result = train_memorization(config)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("history", "config")}))
        return
    rule = result["saturation"]
    verdict = ("saturated" if rule["saturated"] else "not saturated") + (
        f" (rose {rule['relative_rise']:.2%} from step {rule['from_step']:,} to {rule['to_step']:,})"
        if rule["relative_rise"] is not None else " (too few measurements to tell)")
    print(f"{config.model} (P = {result['num_params']:,}) on {config.n_sequences:,} random sequences of "
          f"{config.length} tokens over {config.vocab_size} symbols ({result['data_bits']:,.0f} bits), "
          f"{result['steps_trained']:,} steps, {config.precision}:")
    print(f"  memorized {result['memorized_bits']:,.0f} bits = {result['bits_per_param']:.3f} bits/param "
          f"({result['memorized_bits'] / result['data_bits']:.1%} of the data); held-out set: "
          f"{result['heldout_memorized_bits']:,.0f} bits; {verdict}")
    print(f"wrote {config.output_dir}: model, memorization_run.json, memorization.json "
          f"(re-measure: hf-capacity memorize --eval {config.output_dir})")


def add_commands(subparsers) -> None:
    """Add `memorize` to `hf-capacity`'s subparsers."""
    m = add_command(subparsers, "memorize",
                    help="memorization capacity: train on uniform random sequences, "
                    "report memorized bits (Morris 2025)")
    add_count(m, "--N", default=1024, help="random sequences")
    add_count(m, "--length", default=64, help="tokens per sequence (after one BOS token)")
    add_count(m, "--vocab", minimum=2, default=2048, help="symbols each token is drawn from")
    m.add_argument("--model", default="gpt2-1-1", help="gpt2-<layers>-<heads>")
    add_count(m, "--head-dim", default=32, help="width of each attention head")
    add_count(m, "--epochs", default=100, help="passes over the sequences (the most, with --until-saturated)")
    add_count(m, "--batch-size", default=64, help="sequences per step (>= --N: full-batch steps)")
    m.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine to --min-lr-ratio × it)")
    m.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="the cosine schedule's floor, a fraction of the peak learning rate (0 to 1; default 0.1)")
    add_count(m, "--warmup-steps", minimum=0, default=100, help="learning-rate warm-up (at most a tenth of the steps)")
    add_count(m, "--seed", minimum=0, default=0, help="seed of the sequences and the initialisation")
    m.add_argument("--precision", choices=["fp32", "bf16-mixed", "bf16", "bf16-sr"], default="fp32",
                   help="fp32; bf16 autocast over fp32 weights; true bf16 (bf16 weights and optimizer state); or "
                        "true bf16 with the new weights stochastically rounded (right on average: no update is "
                        "lost to rounding)")
    m.add_argument("--bf16", action="store_true", help="the same as --precision bf16-mixed")
    add_count(m, "--eval-steps", default=None, help="measure every this many steps (default: 20 measurements)")
    add_count(m, "--save-steps", minimum=0, default=1000,
              help="checkpoint every this many steps (0: none); the same command run again resumes from the newest")
    m.add_argument("--until-saturated", action="store_true",
                   help="stop once memorized bits rose < 0.5%% over the last 20%% of the steps, checked where the "
                        "learning rate has annealed to <= 0.2x its peak (else at --epochs)")
    m.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=True,
                   help="fused head + cross-entropy (the default: the same loss to float rounding, 2.7x faster steps "
                        "at V = 2048; benchmarks/RESULTS.md); --no-fused-loss: the plain head")
    m.add_argument("--report-to", nargs="*", default=[], help="Trainer report_to backends")
    m.add_argument("--output", "-o", default="runs/memorize", help="output folder")
    m.add_argument("--eval", default=None, metavar="RUN",
                   help="re-measure a saved run folder (its sequences regenerated from its config) "
                   "instead of training")
    m.add_argument("--json", action="store_true", help="print the result as one JSON object")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=cmd_memorize)
