"""Finding a run's newest complete ``checkpoint-<step>`` folder: where a run resumes from, and the last finite
checkpoint a divergence message names; and telling whether a folder's recorded settings are this run's
(``setting_differences``). Plain logic, importable from anywhere without a circle."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def last_checkpoint(output_dir: str | os.PathLike | None, before_step: int | None = None) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (None if there is none); with
    ``before_step``, the newest saved before that step.

    A checkpoint counts once its ``trainer_state.json`` is written: the Trainer writes it after the weights and
    the optimizer state, so a run killed while saving leaves a folder without it, which is skipped."""
    if not output_dir or not Path(output_dir).is_dir():
        return None
    steps = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            if before_step is None or int(suffix) < before_step:
                steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def setting_differences(recorded: Mapping, current: Mapping, defaults: Mapping, names: Iterable[str],
                        ignored: Iterable[str] = ()) -> list[str]:
    """The settings ``names`` (outside ``ignored``) in which ``current`` (a config's ``to_dict()``) differs from a
    run folder's ``recorded`` one, as "name old → new"; a setting the record lacks counts as its value in
    ``defaults``. Both sides are compared as JSON gives them back (tuples as lists), as the record was written."""
    now, default = json.loads(json.dumps(dict(current))), json.loads(json.dumps(dict(defaults)))
    skip = set(ignored)
    before = {name: recorded.get(name, default[name]) for name in names}
    return [f"{name} {old} → {now[name]}" for name, old in before.items() if name not in skip and old != now[name]]
