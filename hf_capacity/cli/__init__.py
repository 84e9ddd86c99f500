"""The `hf-capacity` command line: a thin layer over the package's modules, one module per command group.

    planning.py   budget, predict        what a data set holds; what a capacity ratio and a loss law predict
    data.py       data generate/inspect  synthetic knowledge data on disk, renderings with their spans
    run.py        train, demo, eval      one capacity run; the laptop demo; re-measuring a saved model
    sweeps.py     sweep, fit, plot       grids of runs, and the laws and figures fitted to them
    memorize.py   memorize               memorization capacity on uniform random sequences
    _common.py    the error type, help layout, whole-number options and population flags they share

Errors the user can fix print as one line, ``hf-capacity: error: ...``, with exit status 2; a run that diverged
(``callbacks.TrainingDivergedError``) prints its message the same way with exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import data, memorize, planning, run, sweeps
from ._common import (
    CLIError,
    HelpFormatter,
    is_divergence,
    one_line,
    resolve_population_args,
)

__all__ = ["CLIError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with the population flags of a command that has them resolved once parsed
    (``_common.resolve_population_args``), so that every caller of ``parse_args`` gets them filled in."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extra = super().parse_known_args(args, namespace)
        if getattr(parsed, "resolve_population", False):
            parsed.resolve_population = False
            resolve_population_args(parsed)
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    """The `hf-capacity` parser: every command group's subcommands."""
    parser = _Parser(
        prog="hf-capacity", description="Knowledge capacity of language models on the Hugging Face stack.",
        formatter_class=HelpFormatter, allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (planning, data, run, sweeps, memorize):
        group.add_commands(sub)
    return parser


def _fail(err: BaseException, status: int) -> int:
    print(f"hf-capacity: error: {one_line(err)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run `hf-capacity` with ``argv`` (default: the process's arguments); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)  # whole-number options raise CLIError while parsing
        args.func(args)
    except CLIError as err:
        return _fail(err, err.exit_code)
    except (ValueError, FileNotFoundError) as err:
        return _fail(err, 2)
    except RuntimeError as err:
        if not is_divergence(err):
            raise
        sys.stderr.write("\n")  # the Trainer's progress bar is left open mid-line when training stops
        return _fail(err, 1)
    return 0
