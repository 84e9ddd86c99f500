"""The `hf-capacity` command line: a thin layer over the package's modules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bits import BioDShape, biod_bits_max, bios_bits_max, params_for_bits


DEMO = {
    "N": 100, "model": "gpt2-2-2", "head_dim": 32, "exposures": 300, "context_length": 256, "lr": 5e-3,
    "batch_size": 8, "warmup_steps": 20, "vocab_size": 4096, "eval_steps": 250, "weight_decay": 0.02,
}
"""Defaults of `hf-capacity demo`: ~1000 steps, 2-3 minutes on a 2-core CPU, ending with ~95% of the facts
learned (at 150 exposures the same model has learned under half: knowledge needs many exposures)."""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------- arguments
def _add_population_args(p: argparse.ArgumentParser, with_seed: bool = True) -> None:
    p.add_argument("--dataset", choices=["bioS", "bioS-simple", "bioD"], default="bioS", help="data family")
    p.add_argument("--N", type=int, default=1000, help="number of people")
    for flag, default, text in (
        ("--K", 4, "bioD: attributes per person"),
        ("--C", 2, "bioD: chunks per value"),
        ("--D", 100, "bioD: distinct chunks per attribute"),
        ("--L", 2, "bioD: tokens per chunk"),
        ("--T", 20, "bioD: alphabet size (tokens)"),
    ):
        p.add_argument(flag, type=int, default=default, help=text)
    if with_seed:
        p.add_argument("--seed", type=int, default=0, help="population and rendering seed")


def _population(args):
    from .data import BioDPopulation, BioSPopulation

    if args.dataset == "bioD":
        return BioDPopulation(args.N, args.K, args.C, args.D, args.L, args.T, seed=args.seed)
    return BioSPopulation(args.N, seed=args.seed)


# -------------------------------------------------------------------------------------------- budget
def budget_report(args) -> dict:
    """The knowledge in a data set, and the parameters needed to store it at 2 and 1 bits/param."""
    if args.dataset == "bioD":
        bits = biod_bits_max(BioDShape(args.N, args.K, args.C, args.D, args.L, args.T))
    else:
        bits = bios_bits_max(args.N)
    total = bits.total
    return {
        "dataset": args.dataset,
        "n_people": args.N,
        **({"K": args.K, "C": args.C, "D": args.D, "L": args.L, "T": args.T} if args.dataset == "bioD" else {}),
        "name_bits": bits.name_bits,
        "value_bits": bits.value_bits,
        "diversity_bits": bits.diversity_bits,
        "bits_max": total,
        "bits_per_person": total / args.N,
        "params_at_2_bits": params_for_bits(total, 2.0),
        "params_at_1_bit": params_for_bits(total, 1.0),
    }


def _print_budget(report: dict) -> None:
    print(f"{report['dataset']}(N={report['n_people']:,}): knowledge to store")
    rows = [
        ("name bits", report["name_bits"]),
        ("value bits", report["value_bits"]),
        ("diversity bits", report["diversity_bits"]),
        ("total (bits_max)", report["bits_max"]),
    ]
    for label, value in rows:
        print(f"  {label:<28}{value:>18,.0f}")
    print(f"  {'bits per person':<28}{report['bits_per_person']:>18.2f}")
    print(f"  {'params at 2 bits/param':<28}{report['params_at_2_bits']:>18,}   (1000 exposures)")
    print(f"  {'params at 1 bit/param':<28}{report['params_at_1_bit']:>18,}   (100 exposures)")


def cmd_budget(args) -> None:
    report = budget_report(args)
    if args.json:
        print(json.dumps(report))
    else:
        _print_budget(report)


# ---------------------------------------------------------------------------------------------- data
def cmd_data_generate(args) -> None:
    from .data import JunkConfig, KnowledgeData

    junk = JunkConfig(args.junk_fraction, args.junk_N) if args.junk_fraction > 0 else None
    data = KnowledgeData.create(
        _population(args),
        simple=args.dataset == "bioS-simple",
        domain_token=args.domain_token,
        junk=junk,
        vocab_size=args.vocab_size,
    )
    out = data.save(args.output)
    stream = data.stream(args.exposures, args.context_length, block_diagonal=args.block_diagonal)
    stream.to_dataset(progress=not args.quiet).save_to_disk(str(out / "train"))
    if data.population.n_people <= 2_000_000 and data.family != "bioD":
        data.population.to_dataset().save_to_disk(str(out / "people"))
    print(f"wrote {out}: knowledge_data.json, tokenizer, train/ ({args.exposures} exposures, context {args.context_length})")
    report = budget_report(args)
    _print_budget(report)
    print(f"  {'tokens used / vocabulary':<28}{len(data.used_token_ids()):>18,} / {len(data.tokenizer)}")


def _highlight(tokenizer, batch, b: int, labels: list[str], color: bool) -> str:
    """One rendering with every span marked as [text]<label> (in colour on a terminal)."""
    bio = batch.biography(b).tolist()
    spans = [(int(batch.name[b, 0]), int(batch.name[b, 1]), "name")]
    if batch.pronoun is not None:
        spans.append((int(batch.pronoun[b, 0]), int(batch.pronoun[b, 1]), "gender"))
    spans += [(int(s), int(n), labels[k]) for k, (s, n) in enumerate(batch.values[b])]
    spans.sort()
    out, pos = [], 0
    for start, length, label in spans:
        out.append(tokenizer.decode(bio[pos:start]))
        text = tokenizer.decode(bio[start : start + length])
        core = text.lstrip(" ")  # the leading space stays outside the mark
        mark = f"\033[1;32m{core}\033[0m\033[2m<{label}>\033[0m" if color else f"[{core}]<{label}>"
        out.append(text[: len(text) - len(core)] + mark)
        pos = start + length
    out.append(tokenizer.decode(bio[pos:]))
    return "".join(out)


def cmd_data_inspect(args) -> None:
    import numpy as np

    from .data import KnowledgeData
    from .data.population import BIOS_ATTRIBUTES

    if args.path:
        data = KnowledgeData.load(args.path)
    else:
        data = KnowledgeData.create(_population(args), simple=args.dataset == "bioS-simple", vocab_size=1024)
    pop = data.population
    people = np.arange(min(args.n, pop.n_people))
    labels = list(BIOS_ATTRIBUTES) if data.family != "bioD" else [f"ID {k + 1}" for k in range(pop.n_attributes)]
    color = sys.stdout.isatty() and not args.no_color
    for exposure in args.exposures:
        batch = data.renderer.render(people, exposure)
        for b in range(len(people)):
            print(f"person {people[b]} / exposure {exposure} ({batch.lengths[b]} tokens):")
            print("  " + _highlight(data.tokenizer, batch, b, labels, color))
    print(f"{data.family}: {pop.n_people:,} people, vocabulary {len(data.tokenizer)}, "
          f"{data.renderer.mean_tokens_per_biography():.1f} tokens per biography on average")


# --------------------------------------------------------------------------------------- train / eval
def _add_training_args(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--model", default=defaults.model, help="gpt2-<layers>-<heads>, llama-<l>-<h> or memory-llama-<l>-<h>")
    p.add_argument("--head-dim", type=int, default=defaults.head_dim)
    p.add_argument("--mlp-type", default=None, help="gpt2: standard|gated|quarter|none; llama: gated|standard")
    p.add_argument("--num-experts", type=int, default=0, help="gpt2: MoE experts per layer (0 = dense)")
    p.add_argument("--exposures", type=int, default=defaults.exposures)
    p.add_argument("--context-length", type=int, default=defaults.context_length)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--max-steps", type=int, default=None, help="override the steps computed from --exposures")
    p.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    p.add_argument("--junk-fraction", type=float, default=0.0)
    p.add_argument("--junk-N", type=int, default=100_000_000)
    p.add_argument("--domain-token", action="store_true")
    p.add_argument("--eval-steps", type=int, default=defaults.eval_steps)
    p.add_argument("--eval-max-people", type=int, default=None, help="evaluate a subsample (default: everybody)")
    p.add_argument("--quantized", nargs="*", default=[], choices=["int8", "nf4", "fp4"], help="schemes measured at the end")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--streaming", action="store_true", help="generate training windows on the fly")
    p.add_argument("--report-to", nargs="*", default=[], help="Trainer report_to backends (e.g. tensorboard)")
    p.add_argument("--push-to-hub", action="store_true")
    p.add_argument("--hub-model-id", default=None)
    p.add_argument("--output", "-o", default=defaults.output_dir)
    p.add_argument("--quiet", action="store_true")


def _training_config(args):
    from .training import CapacityTrainingConfig

    return CapacityTrainingConfig(
        output_dir=args.output,
        dataset=args.dataset,
        n_people=args.N,
        biod={"n_attributes": args.K, "chunks_per_value": args.C, "diversity": args.D, "chunk_length": args.L, "alphabet": args.T},
        junk_fraction=args.junk_fraction,
        junk_n_people=args.junk_N,
        domain_token=args.domain_token,
        vocab_size=args.vocab_size,
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
        seed=args.seed,
        streaming=args.streaming,
        report_to=args.report_to,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        progress=not args.quiet,
    )


def cmd_train(args) -> None:
    from .training import train_capacity

    config = _training_config(args)
    report, _ = train_capacity(config)
    print(report.table())
    print(f"\nwrote {config.output_dir}: model, tokenizer, knowledge_data.json, results.json, knowledge_curve.png, README.md")


def cmd_demo(args) -> None:
    """The README's main command: a small bioS run that a laptop CPU finishes in a few minutes."""
    from .training import train_capacity

    config = _training_config(args)
    print(f"hf-capacity demo: bioS(N={config.n_people}) × {config.exposures} exposures, model {config.model} "
          f"(head dim {config.head_dim}), on {'GPU' if _cuda() else 'CPU'}; output in {config.output_dir}\n")
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
    from transformers import AutoModelForCausalLM

    from . import models  # noqa: F401 - registers the model families
    from .data import KnowledgeData
    from .evaluation import evaluate_knowledge

    path = Path(args.model_dir)
    if not (path / "config.json").is_file():
        raise CLIError(f"{path} is not a saved model folder (no config.json): pass the output dir of `hf-capacity train`")
    data = KnowledgeData.load(args.data or path)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    report = evaluate_knowledge(
        model, data, max_people=args.max_people, renderings=args.renderings, batch_size=args.batch_size,
        progress=not args.json,
    )
    if args.quantized:
        from .quantization import quantized_capacity

        results = quantized_capacity(path, data, tuple(args.quantized), full_precision=report,
                                     max_people=args.max_people, batch_size=args.batch_size, progress=False)
        report.extra["quantized"] = {
            s: {"bits": q.report.bits.total, "bits_per_param": q.bits_per_param,
                "ratio_to_full_precision": q.ratio_to_full_precision} for s, q in results.items()
        }
    if args.json:
        print(json.dumps(report.to_dict(), default=float))
        return
    print(report.table())
    for scheme, q in report.extra.get("quantized", {}).items():
        print(f"  {scheme:<6} bits/param {q['bits_per_param']:.4f}  ratio to full precision {q['ratio_to_full_precision']:.3f}")


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-capacity", description="Knowledge capacity of language models on the Hugging Face stack."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("budget", help="bits of knowledge in a data set and the parameters needed to store them")
    _add_population_args(p, with_seed=False)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_budget)

    data = sub.add_parser("data", help="generate or inspect synthetic knowledge data").add_subparsers(
        dest="data_command", required=True
    )
    g = data.add_parser("generate", help="write a population, its tokenizer and a packed training set")
    _add_population_args(g)
    g.add_argument("--exposures", type=int, default=100, help="exposures of every person")
    g.add_argument("--context-length", type=int, default=512)
    g.add_argument("--vocab-size", type=int, default=4096)
    g.add_argument("--block-diagonal", action="store_true", help="add position_ids: no attention across biographies")
    g.add_argument("--junk-fraction", type=float, default=0.0, help="fraction of windows from junk bioS(N')")
    g.add_argument("--junk-N", type=int, default=100_000_000, help="junk population size N'")
    g.add_argument("--domain-token", action="store_true", help="start useful biographies with a domain token")
    g.add_argument("--output", "-o", required=True, help="output folder")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_data_generate)

    i = data.add_parser("inspect", help="show renderings with their name and value spans marked")
    i.add_argument("path", nargs="?", help="a folder written by `data generate` (default: a fresh population)")
    _add_population_args(i)
    i.add_argument("--n", type=int, default=3, help="people to show")
    i.add_argument("--exposures", type=int, nargs="+", default=[0], help="exposure indices to render")
    i.add_argument("--no-color", action="store_true")
    i.set_defaults(func=cmd_data_inspect)

    from .training import CapacityTrainingConfig

    t = sub.add_parser("train", help="train a model on synthetic knowledge with the capacity callbacks")
    _add_population_args(t)
    _add_training_args(t, CapacityTrainingConfig())
    t.set_defaults(func=cmd_train)

    demo_defaults = CapacityTrainingConfig(
        output_dir="hf_capacity_demo", n_people=DEMO["N"], model=DEMO["model"], head_dim=DEMO["head_dim"],
        exposures=DEMO["exposures"], context_length=DEMO["context_length"], learning_rate=DEMO["lr"],
        batch_size=DEMO["batch_size"], warmup_steps=DEMO["warmup_steps"], vocab_size=DEMO["vocab_size"],
        eval_steps=DEMO["eval_steps"], weight_decay=DEMO["weight_decay"],
    )
    d = sub.add_parser("demo", help="the laptop demo: generate bioS, train a tiny CapacityGPT2, report (minutes)")
    _add_population_args(d)
    d.set_defaults(N=DEMO["N"])
    _add_training_args(d, demo_defaults)
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("eval", help="measure the knowledge a trained model stores (bits, bits/param)")
    e.add_argument("model_dir", help="a folder written by `hf-capacity train` (model + knowledge_data.json)")
    e.add_argument("--data", default=None, help="the data folder, if not the model folder")
    e.add_argument("--max-people", type=int, default=None, help="evaluate a subsample (adds a 95%% CI)")
    e.add_argument("--renderings", type=int, default=1, help="evaluation renderings averaged per person")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--quantized", nargs="*", default=[], choices=["int8", "nf4", "fp4"])
    e.add_argument("--json", action="store_true", help="print the report as one JSON object")
    e.set_defaults(func=cmd_eval)

    from .cli_sweep import add_sweep_commands

    add_sweep_commands(sub)  # sweep, fit, plot
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"hf-capacity: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
