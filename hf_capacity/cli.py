"""The `hf-capacity` command line: a thin layer over the package's modules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bits import BioDShape, biod_bits_max, bios_bits_max, params_for_bits


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
    """One rendering with its spans marked: [name]{...} for names, [attribute]{...} for values."""
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
        out.append(f"\033[1;32m{text}\033[0m\033[2m<{label}>\033[0m" if color else f"[{text.strip()}]<{label}>")
        if text.startswith(" "):
            out[-1] = " " + out[-1].lstrip(" ") if not color else out[-1]
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
    g.add_argument("--vocab-size", type=int, default=2048)
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
