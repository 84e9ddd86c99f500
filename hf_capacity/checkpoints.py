"""Finding a run's newest complete ``checkpoint-<step>`` folder: where a run resumes from, and the last finite
checkpoint a divergence message names. Plain file-system logic, importable from anywhere without a circle."""

from __future__ import annotations

import os
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
