"""What the `hf-capacity` command groups share: the user-facing error, the help layout, whole-number options, the
flags of a settings dataclass (``hf_capacity.schema``) and the population flags."""

from __future__ import annotations

import argparse
import math
from decimal import Decimal, InvalidOperation
from typing import Callable, Mapping


class CLIError(Exception):
    """A user-facing error: printed as one line; exit status ``exit_code`` (2: fix the input, 1: a run failed)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a multi-line message has its lines joined)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def is_divergence(err: BaseException | None) -> bool:
    """Whether ``err`` is ``hf_capacity.callbacks.TrainingDivergedError``: a run stopped on a non-finite loss."""
    if err is None:
        return False
    from ..callbacks import TrainingDivergedError

    return isinstance(err, TrainingDivergedError)


# --------------------------------------------------------------------------------------------------- help
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with "(default: ...)" after every option that has one (not after off-by-default flags or
    unset options, whose help says what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def add_command(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows the defaults and its one-line ``help`` as description (unless given
    one), and that takes no abbreviated option (``--data`` is not ``--dataset``)."""
    kwargs.setdefault("description", kwargs.get("help"))
    return subparsers.add_parser(name, formatter_class=HelpFormatter, allow_abbrev=False, **kwargs)


# ---------------------------------------------------------------------------------------------- counts
def count(flag: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type`` for a whole-number option: "1000", "1_000", "1e6" and "2.5e3" all read as integers.

    "1.5", "abc" or a value under ``minimum`` raise ``CLIError`` naming ``flag``; argparse lets that error through
    (it only rewrites ArgumentTypeError, TypeError and ValueError), and ``main`` prints it as one line.
    """

    def parse(text: str) -> int:
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value != value.to_integral_value():
            raise CLIError(f"{flag} expects a whole number, such as 1000 or 1e6; got {text!r}")
        number = int(value)
        if number < minimum:
            raise CLIError(f"{flag} must be positive, got {text}" if minimum == 1 else
                           f"{flag} must be >= {minimum}, got {text}")
        return number

    parse.__name__ = "count"
    return parse


def add_count(parser: argparse.ArgumentParser, flag: str, *, minimum: int = 1, **kwargs) -> None:
    """``parser.add_argument(flag, type=count(flag, minimum), **kwargs)``: every count-like option goes through it."""
    parser.add_argument(flag, type=count(flag, minimum), **kwargs)


# ------------------------------------------------------------------------------------------------ settings
def add_settings_args(parser: argparse.ArgumentParser, config_class, defaults, *,
                      groups: Mapping[str, str] | None = None) -> None:
    """A flag for every setting of the dataclass ``config_class`` that the command line spells (``hf_capacity.schema``:
    its help, spelling, type and group from the field's metadata), with ``defaults``' values (an instance) as
    defaults. The population settings are left to ``add_population_args``; ``groups``: the description of each
    help section a setting names."""
    from ..schema import settings

    sections: dict[str, argparse._ArgumentGroup] = {}
    for s in settings(config_class).values():
        if s.metadata.get("cli", True) is not True:
            continue
        group = s.metadata.get("group")
        if group and group not in sections:
            sections[group] = parser.add_argument_group(group, (groups or {}).get(group))
        target = sections[group] if group else parser
        kwargs = {key: s.metadata[key] for key in ("choices", "nargs", "metavar") if key in s.metadata}
        default = getattr(defaults, s.name)
        if s.kind is bool:  # a switch: on, or off for a negated one (--quiet: progress False)
            target.add_argument(*s.flags, action="store_true", default=not default if s.metadata.get("negated")
                                else default, help=s.help)
            continue
        if s.kind is int:
            kwargs["type"] = count(s.flags[0], s.metadata.get("minimum", 1))
        elif s.kind is float:
            kwargs["type"] = float
        elif s.kind is list:
            kwargs.setdefault("nargs", "+")
            default = list(default)
        target.add_argument(*s.flags, default=default, help=s.help, **kwargs)


def settings_from_args(config_class, args, **values):
    """``config_class`` made from parsed ``args`` (the flags of ``add_settings_args`` and ``add_population_args``);
    ``values`` for the settings they do not spell (e.g. the bioD shape, from ``biod_from_args``)."""
    from ..schema import settings

    for s in settings(config_class).values():
        if s.name in values or s.metadata.get("cli", True) is False:
            continue
        value = getattr(args, s.dest)
        values[s.name] = (not value) if s.metadata.get("negated") else value
    return config_class(**values)


# ------------------------------------------------------------------------------------------ populations
BIOD_FLAGS = (
    ("--K", "n_attributes", 4, "bioD: attributes per person"),
    ("--C", "chunks_per_value", 2, "bioD: chunks per value"),
    ("--D", "diversity", 100, "bioD: distinct chunks per attribute"),
    ("--L", "chunk_length", 2, "bioD: tokens per chunk"),
    ("--T", "alphabet", 20, "bioD: alphabet size (tokens)"),
)
"""The bioD shape flags: flag, BioDPopulation field, default, help."""
DEFAULT_DATASET = "bioS"


def add_population_args(p: argparse.ArgumentParser, with_seed: bool = True) -> None:
    """--dataset, --N and the bioD shape --K --C --D --L --T (and --seed).

    --dataset and the shape flags are parsed as None when not given, so that ``resolve_population_args`` (which the
    `hf-capacity` parser calls once it has parsed) can tell a flag given from its default: it fills them in, from an
    adapter run's base run where there is one, and refuses shape flags given for bioS data."""
    p.add_argument("--dataset", choices=["bioS", "bioS-simple", "bioD"], default=None,
                   help=f"data family (default: {DEFAULT_DATASET}; with --init-from, the base run's)")
    add_count(p, "--N", default=1000, help="number of people")
    for flag, _, default, text in BIOD_FLAGS:
        add_count(p, flag, default=None, help=f"{text} (default: {default})")
    if with_seed:
        add_count(p, "--seed", minimum=0, default=0,
                  help="population and rendering seed (an adapter run's people are its base run's seed's: there it "
                       "seeds the adapter's initialisation and the batch order)")
    p.set_defaults(resolve_population=True)


def resolve_population_args(args) -> None:
    """Fill in --dataset and the bioD shape flags left unset (None): from the base run of ``--init-from`` (an
    hf-capacity run) where there is one, else the defaults. Shape flags given for bioS data raise CLIError; a given
    value that differs from the base run's is left for the run config to refuse."""
    from ..adapters import base_data_format

    family, population = base_data_format(getattr(args, "init_from", None))  # an hf-capacity base run's format
    given = [flag for flag, *_ in BIOD_FLAGS if getattr(args, flag.lstrip("-")) is not None]
    if args.dataset is None:
        args.dataset = family or DEFAULT_DATASET
    if given and args.dataset != "bioD":
        raise CLIError(f"{' '.join(given)} describe{'s' if len(given) == 1 else ''} bioD data, but the data set is "
                       f"{args.dataset}: add --dataset bioD, or leave {'it' if len(given) == 1 else 'them'} out")
    shape = population if args.dataset == "bioD" else {}  # bioD data of the base's: its shape
    for flag, field, default, _ in BIOD_FLAGS:
        name = flag.lstrip("-")
        if getattr(args, name) is None:
            setattr(args, name, shape.get(field, default))


def biod_from_args(args) -> dict:
    """The bioD shape the --K --C --D --L --T flags give, as ``CapacityTrainingConfig.biod``."""
    return {field: getattr(args, flag.lstrip("-")) for flag, field, _, _ in BIOD_FLAGS}


def population(args):
    """The population the population flags describe."""
    from ..data import BioDPopulation, BioSPopulation

    if args.dataset == "bioD":
        return BioDPopulation(args.N, args.K, args.C, args.D, args.L, args.T, seed=args.seed)
    return BioSPopulation(args.N, seed=args.seed)


def format_ci(low, high) -> str:
    """A 95% interval as "[low, high]", or "n/a"."""
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a"
    return f"[{low:.3f}, {high:.3f}]"
