"""The `evaluate` metrics of hf-capacity: ``knowledge_bits`` (bits of knowledge and bits per parameter).

``evaluate.load(METRIC_PATH)`` loads it offline from the installed package; ``load_metric()`` is a shortcut.
"""

from __future__ import annotations

from pathlib import Path

METRIC_PATH = str(Path(__file__).resolve().parent / "knowledge_bits")
"""Absolute path of the ``knowledge_bits`` metric folder (script + card), for ``evaluate.load``."""


def load_metric(**config_kwargs):
    """``evaluate.load(METRIC_PATH, **config_kwargs)``: the knowledge_bits metric, loaded offline.

    ``config_kwargs`` are ``evaluate.load`` arguments (``config_name="bioD"``, ``cache_dir``,
    ``keep_in_memory``, ``experiment_id``, ...) and metric settings used as defaults for ``compute()``
    (``family``, ``n_people``, ``num_params``, bioD's ``n_attributes``, ``chunks_per_value``, ``diversity``,
    ``chunk_length``, ``alphabet``, ``clip``).
    """
    import evaluate  # imported here: importing evaluate takes seconds, and most users of the package never need it

    return evaluate.load(METRIC_PATH, **config_kwargs)


__all__ = ["METRIC_PATH", "load_metric"]
