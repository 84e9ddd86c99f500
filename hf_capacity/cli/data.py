"""`hf-capacity data generate` and `hf-capacity data inspect`: write synthetic knowledge data to a folder, or show
renderings with their name and value spans marked.

    hf-capacity data generate --dataset bioS --N 1000 --exposures 100 -o data/bios_1k
    hf-capacity data inspect data/bios_1k --n 3
"""

from __future__ import annotations

import sys

from ._common import add_command, add_count, add_population_args, population
from .planning import budget_report, print_budget


def cmd_data_generate(args) -> None:
    from ..data import JunkConfig, KnowledgeData

    junk = JunkConfig(args.junk_fraction, args.junk_N) if args.junk_fraction > 0 else None
    data = KnowledgeData.create(
        population(args),
        simple=args.dataset == "bioS-simple",
        domain_token=args.domain_token,
        junk=junk,
        vocab_size=args.vocab_size,
        fit_vocabulary=args.fit_vocabulary,
    )
    out = data.save(args.output)
    stream = data.stream(args.exposures, args.context_length, block_diagonal=args.block_diagonal)
    stream.to_dataset(progress=not args.quiet).save_to_disk(str(out / "train"))
    if data.population.n_people <= 2_000_000 and data.family != "bioD":
        data.population.to_dataset().save_to_disk(str(out / "people"))
    print(f"wrote {out}: knowledge_data.json, tokenizer, train/ "
          f"({args.exposures} exposures, context {args.context_length})")
    report = budget_report(args)
    print_budget(report)
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

    from ..data import KnowledgeData
    from ..data.population import BIOS_ATTRIBUTES

    if args.path:
        data = KnowledgeData.load(args.path)
    else:
        data = KnowledgeData.create(population(args), simple=args.dataset == "bioS-simple", vocab_size=1024)
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


def add_commands(subparsers) -> None:
    """Add `data generate` and `data inspect` to `hf-capacity`'s subparsers."""
    data = add_command(subparsers, "data", help="generate or inspect synthetic knowledge data").add_subparsers(
        dest="data_command", required=True
    )
    g = add_command(data, "generate", help="write a population, its tokenizer and a packed training set")
    add_population_args(g)
    add_count(g, "--exposures", default=100, help="exposures of every person")
    add_count(g, "--context-length", default=512, help="tokens per training window")
    add_count(g, "--vocab-size", default=4096, help="BPE vocabulary trained on the population")
    g.add_argument("--fit-vocabulary", action="store_true",
                   help="keep only the tokens the renderings use plus the 256 bytes (same tokens and P, a smaller "
                   "head, faster steps; opt-in: it learned less in a 2026-12-02 check, see the README)")
    g.add_argument("--block-diagonal", action="store_true", help="add position_ids: no attention across biographies")
    g.add_argument("--junk-fraction", type=float, default=0.0, help="fraction of windows from junk people")
    add_count(g, "--junk-N", default=100_000_000, help="junk people N' (of the data's format)")
    g.add_argument("--domain-token", action="store_true", help="start useful biographies with a domain token")
    g.add_argument("--output", "-o", required=True, help="output folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_data_generate)

    i = add_command(data, "inspect", help="show renderings with their name and value spans marked")
    i.add_argument("path", nargs="?", help="a folder written by `data generate` (default: a fresh population)")
    add_population_args(i)
    add_count(i, "--n", default=3, help="people to show")
    add_count(i, "--exposures", minimum=0, nargs="+", default=[0], help="exposure indices to render")
    i.add_argument("--no-color", action="store_true", help="mark spans as [text]<label> even on a terminal")
    i.set_defaults(func=cmd_data_inspect)
