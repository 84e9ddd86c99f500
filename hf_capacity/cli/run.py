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

from ._common import (
    CLIError,
    add_command,
    add_count,
    add_population_args,
    add_settings_args,
    biod_from_args,
    settings_from_args,
)

DEMO = {
    "N": 100, "model": "gpt2-2-2", "head_dim": 32, "exposures": 300, "context_length": 256, "lr": 5e-3,
    "batch_size": 8, "warmup_steps": 20, "vocab_size": 4096, "eval_steps": 250, "weight_decay": 0.02,
}
"""Defaults of `hf-capacity demo`: ~1000 steps, 2-3 minutes on a 2-core CPU, ending with ~95% of the facts
learned (at 150 exposures the same model has learned under half: knowledge needs many exposures)."""


# --------------------------------------------------------------------------------------- arguments
ADAPTER_HELP = (
    "teach new people to a trained model (peft): --init-from RUN [--lora-r R]. The new population has the base run's "
    "format (its data flags are taken from the base) and the people after the base's; P is then the trainable adapter "
    "parameters, the bits are net of what the base already scores on the new people (bits_max without the base's "
    "bioD diversity sets), and the base population's bits are measured before and after")
"""The description of the adapter flags' help section."""


def _add_training_args(p: argparse.ArgumentParser, defaults) -> None:
    """The CapacityTrainingConfig flags (its fields' metadata, ``add_settings_args``), with ``defaults`` (a
    CapacityTrainingConfig) as their defaults; the population flags come from ``add_population_args``."""
    from ..training import ADAPTERS

    add_settings_args(p, type(defaults), defaults, groups={ADAPTERS: ADAPTER_HELP})


def _training_config(args):
    from ..training import CapacityTrainingConfig

    return settings_from_args(CapacityTrainingConfig, args, biod=biod_from_args(args))


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
    from ..training import QUANTIZED_SCHEMES, CapacityTrainingConfig

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
    e.add_argument("--quantized", nargs="*", default=[], choices=QUANTIZED_SCHEMES,
                   help="also measure after quantization with these schemes")
    e.add_argument("--code", choices=["installed", "folder"], default="installed",
                   help="whose model code runs the evaluation: the installed hf-capacity classes, or the modeling "
                        "files saved in the folder (what a Hub user runs with trust_remote_code=True)")
    e.add_argument("--json", action="store_true", help="print the report as one JSON object")
    e.set_defaults(func=cmd_eval)
