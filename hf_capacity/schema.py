"""A settings dataclass read as a schema: each field's value type, default, help text and command-line spelling.

The fields of a settings dataclass (``training.CapacityTrainingConfig``) carry their help in
``field(metadata={"help": ...})``, as transformers' ``TrainingArguments`` do; ``settings(cls)`` reads them with their
resolved types, so that the CLI flags (``cli._common.add_settings_args``) and the sweep files' validation
(``sweep.config``) come from that one declaration. Metadata keys besides ``help``, all optional:

    flag      the option's spelling when it is not ``--field-name`` (``"--N"``, ``"--lr"``)
    aliases   further spellings (``["-o"]``), as in ``HfArgumentParser``
    negated   the flag turns the (True by default) setting off (``--quiet`` for ``progress``)
    minimum   the smallest whole number an int option takes (default 1)
    choices, nargs, metavar   passed on to argparse
    group     the help section the option is listed in
    cli       False: no flag (a nested mapping, or a value the command line cannot spell); "population": the flag is
              one of the population flags every data command shares (``cli._common.add_population_args``)
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Mapping

KINDS = (bool, int, float, str, list, dict)


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass: ``kind`` (bool, int, float, str, list or dict; a tuple reads as a list),
    whether None is allowed, its default, help and the rest of its metadata."""

    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    metadata: Mapping[str, Any]

    @property
    def flags(self) -> list[str]:
        """The option's spellings: ``metadata["flag"]`` (default ``--field-name``), then the aliases."""
        return [self.metadata.get("flag", "--" + self.name.replace("_", "-")), *self.metadata.get("aliases", ())]

    @property
    def dest(self) -> str:
        """Where argparse puts the option's value (derived from its first spelling, as argparse does)."""
        return self.flags[0].lstrip("-").replace("-", "_")

    def coerce(self, value: Any, label: str, error: type[Exception] = ValueError) -> Any:
        """``value`` (read from YAML or JSON) as this setting's kind, or ``error`` naming ``label``: YAML reads
        ``1e-3`` as a string and ``1.0e+6`` as a float; a whole float is an int; a string is a one-item list; null
        is None where the setting allows it, an empty list for a list."""
        return coerce(value, self.kind, label, error, optional=self.optional)


def coerce(value: Any, kind: type, label: str, error: type[Exception] = ValueError, *, optional: bool = False) -> Any:
    """``value`` as ``kind`` (one of ``KINDS``), None only where ``optional``; see ``Setting.coerce``."""
    if value is None:
        if optional:
            return None
        if kind is list:
            return []
        raise error(f"{label}: null is not allowed (expected {kind.__name__})")
    if kind is bool:
        if not isinstance(value, bool):
            raise error(f"{label}: expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise error(f"{label}: expected a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, numbers.Real):  # numpy numbers too
            raise error(f"{label}: expected a number, got {value!r}")
        if kind is float:
            return float(number)
        if float(number) != int(number):
            raise error(f"{label}: expected an integer, got {value!r}")
        return int(number)
    if kind is str:
        if not isinstance(value, str):
            raise error(f"{label}: expected a string, got {value!r}")
        return value
    if kind is list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)):
            raise error(f"{label}: expected a list, got {value!r}")
        return list(value)
    if not isinstance(value, Mapping):
        raise error(f"{label}: expected a mapping, got {value!r}")
    return dict(value)


def _kind(annotation) -> tuple[type, bool]:
    """(kind, optional) of a resolved field annotation such as ``int``, ``str | None`` or ``tuple[str, ...]``."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        (annotation,) = [a for a in args if a is not type(None)]
    base = typing.get_origin(annotation) or annotation
    base = list if base is tuple else base
    if base not in KINDS:
        raise TypeError(f"a setting must be one of {', '.join(k.__name__ for k in KINDS)} (or None), got {annotation}")
    return base, optional


def settings(cls) -> dict[str, Setting]:
    """Every field of the settings dataclass ``cls``, in order, as a ``Setting``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind, optional = _kind(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = Setting(f.name, kind, optional, default, f.metadata.get("help", ""), dict(f.metadata))
    return out
