"""`hf-capacity train`, `demo` and `eval`: one capacity run end to end (``training.train_capacity``), the laptop
demo, and re-measuring the knowledge a saved model stores.

    hf-capacity train --dataset bioS --N 1000 --model gpt2-2-2 --exposures 100 -o runs/gpt2-2-2
    hf-capacity demo
    hf-capacity eval runs/gpt2-2-2 [--max-people 500] [--quantized int8 nf4]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ._common import CLIError, add_command, add_count, add_population_args

QUANTIZED_CHOICES = ["int8", "nf4", "fp4", "gptq-int4", "gptq-int8"]
"""``hf_capacity.quantization.ALL_SCHEMES`` (not imported here: the parser must not import torch)."""

DEMO = {
    "N": 100, "model": "gpt2-2-2", "head_dim": 32, "exposures": 300, "context_length": 256, "lr": 5e-3,
    "batch_size": 8, "warmup_steps": 20, "vocab_size": 4096, "eval_steps": 250, "weight_decay": 0.02,
}
"""Defaults of `hf-capacity demo`: ~1000 steps, 2-3 minutes on a 2-core CPU, ending with ~95% of the facts
learned (at 150 exposures the same model has learned under half: knowledge needs many exposures)."""


# --------------------------------------------------------------------------------------- arguments
def _add_training_args(p: argparse.ArgumentParser, defaults) -> None:
    """The CapacityTrainingConfig flags, with ``defaults`` (a CapacityTrainingConfig) as their defaults."""
    p.add_argument("--model", default=defaults.model,
                   help="gpt2-<layers>-<heads>, llama-<l>-<h> or memory-llama-<l>-<h>")
    add_count(p, "--head-dim", default=defaults.head_dim, help="width of each attention head")
    p.add_argument("--mlp-type", default=None, help="gpt2: standard|gated|quarter|none; llama: gated|standard")
    add_count(p, "--num-experts", minimum=0, default=0, help="gpt2: MoE experts per layer (0 = dense)")
    add_count(p, "--exposures", default=defaults.exposures, help="times every person's biography is seen")
    add_count(p, "--context-length", default=defaults.context_length, help="tokens per training window")
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay")
    add_count(p, "--batch-size", default=defaults.batch_size, help="windows per step")
    add_count(p, "--warmup-steps", minimum=0, default=defaults.warmup_steps,
              help="learning-rate warm-up (at most a tenth of the steps)")
    add_count(p, "--max-steps", default=None, help="override the steps computed from --exposures")
    add_count(p, "--vocab-size", default=defaults.vocab_size, help="BPE vocabulary trained on the population")
    p.add_argument("--fit-vocabulary", action="store_true",
                   help="keep only the tokens the renderings use plus the 256 bytes (same tokens and P, a smaller "
                   "head, faster steps; opt-in: it learned less in a 2026-12-02 check, see the README)")
    p.add_argument("--junk-fraction", type=float, default=0.0, help="fraction of windows from junk people")
    add_count(p, "--junk-N", default=100_000_000, help="junk people N' (of the data's format)")
    p.add_argument("--domain-token", action="store_true", help="start useful biographies with a domain token")
    add_count(p, "--eval-steps", default=defaults.eval_steps,
              help="measure knowledge every this many steps (unset: every tenth of the steps, ~10 points)")
    add_count(p, "--eval-max-people", default=None, help="evaluate a subsample (default: everybody)")
    p.add_argument("--quantized", nargs="*", default=[], choices=QUANTIZED_CHOICES,
                   help="schemes measured at the end: bitsandbytes int8/nf4/fp4, "
                   "GPTQ gptq-int4/gptq-int8 (the paper's)")
    p.add_argument("--bf16", action="store_true", help="train in bfloat16 mixed precision")
    p.add_argument("--torch-compile", action="store_true", help="compile the model with torch.compile")
    p.add_argument("--fused-loss", action="store_true",
                   help="gpt2: compute the head and cross-entropy chunk by chunk, gradients in the same pass "
                        "(same loss, no tokens × vocabulary logits; see benchmarks/RESULTS.md)")
    p.add_argument("--streaming", action="store_true", help="generate training windows on the fly")
    p.add_argument("--report-to", nargs="*", default=[], help="Trainer report_to backends (e.g. tensorboard)")
    p.add_argument("--push-to-hub", action="store_true", help="push the model, its card and results to the Hub")
    p.add_argument("--hub-model-id", default=None, help="the Hub repository (default: the output folder's name)")
    add_count(p, "--save-steps", default=defaults.save_steps,
              help="checkpoint every this many steps; the same command run again resumes from the newest")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore checkpoints already in the output folder and start from step 0")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in the output folder, finished or not, and start a new one "
                        "(default: a folder holding another run or a finished one is refused)")
    p.add_argument("--output", "-o", default=defaults.output_dir, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.add_argument_group(
        "adapters", "teach new people to a trained model (peft): --init-from RUN [--lora-r R]. The new population "
        "has the base run's format (its data flags are taken from the base) and the people after the base's; "
        "P is then the trainable adapter parameters, the bits are net of what the base already scores on the new "
        "people (bits_max without the base's bioD diversity sets), and the base population's bits are measured "
        "before and after")
    a.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="start from this model folder "
                   "(a `hf-capacity train` run, or any causal LM with its tokenizer)")
    add_count(a, "--lora-r", minimum=0, default=0, help="LoRA rank (0 with --init-from: full fine-tuning)")
    a.add_argument("--lora-alpha", type=float, default=None,
                   help="LoRA alpha (default: equal to --lora-r, a scale of 1)")
    a.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout")
    a.add_argument("--lora-target-modules", "--lora-targets", nargs="+", default=["all-linear"], metavar="MODULE",
                   help="peft target_modules: all-linear, or module names (gpt2: c_attn c_proj c_fc)")
    a.add_argument("--load-in-4bit", action="store_true",
                   help="QLoRA: load the frozen base in 4-bit NF4 through bitsandbytes (needs --lora-r)")
    add_count(a, "--name-offset", minimum=0, default=None,
              help="index of the first new person in the name permutation (default: right after the base's people)")


def _training_config(args):
    from ..training import CapacityTrainingConfig

    return CapacityTrainingConfig(
        output_dir=args.output,
        dataset=args.dataset,
        n_people=args.N,
        biod={"n_attributes": args.K, "chunks_per_value": args.C, "diversity": args.D, "chunk_length": args.L,
              "alphabet": args.T},
        junk_fraction=args.junk_fraction,
        junk_n_people=args.junk_N,
        domain_token=args.domain_token,
        vocab_size=args.vocab_size,
        fit_vocabulary=args.fit_vocabulary,
        model=args.model,
        head_dim=args.head_dim,
        mlp_type=args.mlp_type,
        num_experts=args.num_experts,
        exposures=args.exposures,
        context_length=args.context_length,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        warmup_steps=args.warmup_steps,
        max_steps=args.max_steps,
        eval_steps=args.eval_steps,
        eval_max_people=args.eval_max_people,
        quantized=tuple(args.quantized),
        bf16=args.bf16,
        torch_compile=args.torch_compile,
        fused_loss=args.fused_loss,
        seed=args.seed,
        streaming=args.streaming,
        report_to=args.report_to,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        progress=not args.quiet,
        save_steps=args.save_steps,
        resume=not args.no_resume,
        overwrite_output_dir=args.overwrite,
        init_from=args.init_from,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_target_modules=list(args.lora_target_modules),
        load_in_4bit=args.load_in_4bit,
        name_offset=args.name_offset,
    )


def cmd_train(args) -> None:
    from ..training import check_output_dir, train_capacity

    config = _training_config(args)  # validated on construction, before any data is built
    checkpoint = check_output_dir(config)  # refuses a folder holding a finished run or another run
    if checkpoint:
        print(f"resuming from {checkpoint} (--no-resume starts from step 0)", flush=True)
    report, _ = train_capacity(config)
    print(report.table())
    results = json.loads((Path(config.output_dir) / "results.json").read_text())
    base = results.get("base_population")
    if base:
        _print_base_population(base)
    saved = "peft adapter" if results.get("adapter", {}).get("library") == "peft" else "model"
    print(f"\nwrote {config.output_dir}: {saved}, tokenizer, knowledge_data.json, results.json, knowledge_curve.png, "
          "README.md")


def _print_base_population(base: dict) -> None:
    """One line on an adapter run's base population: its bits before and after, and what was forgotten."""
    print(f"  base population (N={base['n_people']:,})  {base['bits_before']:,.0f} bits before, "
          f"{base['bits_after']:,.0f} after: {base['bits_forgotten']:,.0f} forgotten")


def _check_same_tokenizer(model_dir: Path, data, data_dir: str) -> None:
    """Refuse ``eval --data`` whose tokenizer is not the one the model folder was saved with: its token ids would
    mean other text to the model, and the report would be nonsense."""
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return  # a model saved without its tokenizer: nothing to compare
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(model_dir)
    if own.get_vocab() != data.tokenizer.get_vocab():
        raise CLIError(f"{data_dir} is rendered with another tokenizer than the one saved in {model_dir} "
                       f"({len(data.tokenizer):,} tokens against {len(own):,}, or other token ids), so the model "
                       "would read other text than its people's: pass data made with the model's tokenizer")


def cmd_demo(args) -> None:
    """The README's main command: a small bioS run that a laptop CPU finishes in a few minutes."""
    from ..training import check_output_dir, train_capacity

    config = _training_config(args)  # validated on construction, before any data is built
    checkpoint = check_output_dir(config)
    print(f"hf-capacity demo: bioS(N={config.n_people}) × {config.exposures} exposures, model {config.model} "
          f"(head dim {config.head_dim}), on {'GPU' if _cuda() else 'CPU'}; output in {config.output_dir}"
          + (f"; resuming from {checkpoint}" if checkpoint else "") + "\n")
    report, trainer = train_capacity(config)
    print()
    print(report.table())
    print(f"\n{trainer.state.global_step} steps. Wrote {config.output_dir}/: results.json, knowledge_curve.png, "
          "README.md (model card), the model and its tokenizer.")
    print(f"Re-measure it with: hf-capacity eval {config.output_dir}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_eval(args) -> None:
    from .. import models  # noqa: F401 - registers the model families
    from ..data import KnowledgeData
    from ..evaluation import evaluate_knowledge
    from ..models.registration import load_causal_lm

    path = Path(args.model_dir)
    is_adapter = (path / "adapter_config.json").is_file()
    if not (path / "config.json").is_file() and not is_adapter:
        raise CLIError(f"{path} is not a saved model folder (no config.json): "
                       "pass the output dir of `hf-capacity train`")
    if is_adapter and args.quantized:
        raise CLIError(f"{path} holds a peft adapter: --quantized measures full models only")
    results = path / "results.json"
    from_base = is_adapter or (results.is_file() and bool(json.loads(results.read_text()).get("adapter")))
    if args.base and not from_base:
        raise CLIError(f"{path} was not trained from a base model "
                       "(no adapter_config.json, no adapter in results.json): "
                       "--base is for adapter and fine-tuning runs")
    data = KnowledgeData.load(args.data or path)
    if args.data:
        _check_same_tokenizer(path, data, args.data)
    eval_kwargs = {"max_people": args.max_people, "renderings": args.renderings, "batch_size": args.batch_size}
    if from_base:  # bits net of the base's on these people, and the base population re-measured (forgetting)
        from ..adapters import evaluate_adapter_run

        report = evaluate_adapter_run(path, data, base=args.base, code=args.code, progress=not args.json,
                                      **eval_kwargs)
    else:
        try:
            model = load_causal_lm(path, code=args.code)
        except ValueError as err:
            raise CLIError(f"{err} (--code installed)") from err
        report = evaluate_knowledge(model, data, progress=not args.json, **eval_kwargs)
    if args.quantized:
        from ..quantization import quantized_capacity

        results = quantized_capacity(path, data, tuple(args.quantized), full_precision=report, code=args.code,
                                     max_people=args.max_people, batch_size=args.batch_size, progress=False)
        report.extra["quantized"] = {
            s: {"bits": q.report.bits.total, "bits_per_param": q.bits_per_param,
                "ratio_to_full_precision": q.ratio_to_full_precision} for s, q in results.items()
        }
    from ..report import NO_RATIO, json_safe

    if args.json:
        print(json.dumps(json_safe(report.to_dict()), default=float))
        return
    print(report.table())
    base = report.extra.get("base_population")
    if base:
        _print_base_population(base)
    for scheme, q in report.extra.get("quantized", {}).items():
        ratio = q["ratio_to_full_precision"]
        print(f"  {scheme:<6} bits/param {q['bits_per_param']:.4f}  ratio to full precision "
              + (f"{ratio:.3f}" if math.isfinite(ratio) else NO_RATIO))


# ------------------------------------------------------------------------------------------------ parsers
def add_commands(subparsers) -> None:
    """Add `train`, `demo` and `eval` to `hf-capacity`'s subparsers."""
    from ..training import CapacityTrainingConfig

    t = add_command(subparsers, "train", help="train a model on synthetic knowledge with the capacity callbacks")
    add_population_args(t)
    _add_training_args(t, CapacityTrainingConfig())
    t.set_defaults(func=cmd_train)

    demo_defaults = CapacityTrainingConfig(
        output_dir="hf_capacity_demo", n_people=DEMO["N"], model=DEMO["model"], head_dim=DEMO["head_dim"],
        exposures=DEMO["exposures"], context_length=DEMO["context_length"], learning_rate=DEMO["lr"],
        batch_size=DEMO["batch_size"], warmup_steps=DEMO["warmup_steps"], vocab_size=DEMO["vocab_size"],
        eval_steps=DEMO["eval_steps"], weight_decay=DEMO["weight_decay"],
    )
    d = add_command(subparsers, "demo",
                    help="the laptop demo: generate bioS, train a tiny CapacityGPT2, report (minutes)")
    add_population_args(d)
    d.set_defaults(N=DEMO["N"])
    _add_training_args(d, demo_defaults)
    d.set_defaults(func=cmd_demo)

    e = add_command(subparsers, "eval", help="measure the knowledge a trained model stores (bits, bits/param)")
    e.add_argument("model_dir",
                   help="a folder written by `hf-capacity train` (model or peft adapter + knowledge_data.json)")
    e.add_argument("--data", default=None,
                   help="the data folder, if not the model folder (its tokenizer must be the model's)")
    e.add_argument("--base", default=None, metavar="MODEL_DIR",
                   help="an adapter or fine-tuning run's base model folder, if not where the run records it "
                        "(e.g. after moving the base)")
    add_count(e, "--max-people", default=None, help="evaluate a subsample (adds a 95%% CI)")
    add_count(e, "--renderings", default=1, help="evaluation renderings averaged per person")
    add_count(e, "--batch-size", default=64, help="biographies per forward pass")
    e.add_argument("--quantized", nargs="*", default=[], choices=QUANTIZED_CHOICES,
                   help="also measure after quantization with these schemes")
    e.add_argument("--code", choices=["installed", "folder"], default="installed",
                   help="whose model code runs the evaluation: the installed hf-capacity classes, or the modeling "
                        "files saved in the folder (what a Hub user runs with trust_remote_code=True)")
    e.add_argument("--json", action="store_true", help="print the report as one JSON object")
    e.set_defaults(func=cmd_eval)
