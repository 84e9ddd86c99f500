"""The `evaluate` metrics of hf-capacity: ``knowledge_bits`` (bits of knowledge and bits per parameter).

``evaluate.load(METRIC_PATH)`` loads it offline from the installed package; ``load_metric()`` is a shortcut.
``metric_inputs`` turns what ``hf_capacity.evaluation`` measures (``span_losses`` or a ``KnowledgeReport``)
into the metric's exact ``compute()`` arguments; ``num_params_for_metric`` counts P by the paper's rule:

    from hf_capacity.evaluation import span_losses
    from hf_capacity.metrics import load_metric, metric_inputs

    metric = load_metric()
    result = metric.compute(**metric_inputs(span_losses(model, data), data, model=model))
    # result["bits"] == evaluate_knowledge(model, data).bits.total
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


def num_params_for_metric(model, data) -> int:
    """P for the metric's ``num_params``: ``model``'s parameters by the paper's rule (every parameter, embedding
    rows only for the tokens of ``data``'s training text, tied weights once), as ``evaluate_knowledge`` counts."""
    from ..params import count_parameters

    return count_parameters(model, data.used_token_ids()).paper_params


def metric_inputs(source, data=None, *, model=None) -> dict:
    """The ``knowledge_bits`` metric's ``compute()`` keyword arguments for a measurement of ``data``.

    ``source``: a ``SpanLosses`` (``hf_capacity.evaluation.span_losses(model, data)``: per person, per span)
    or a ``KnowledgeReport`` (``evaluate_knowledge(model, data)``). Returned: ``name_loss``, ``value_loss``
    (and bioD's ``first_chunk_loss``) per person, summed exactly as the metric defines them, plus ``family``,
    ``n_people`` (the population's N, also when a subsample was measured), bioD's K, C, D, L, T and, with
    ``model`` (or from a report), ``num_params``. So ``metric.compute(**metric_inputs(...))`` gives the bits of
    ``evaluate_knowledge``.

    The sums, which ``value_loss.sum(1)`` of ``SpanLosses`` gets wrong: bioS counts birth date, birth city,
    university, major and employer plus the first pronoun (gender) and leaves the working city out (it follows
    from the employer); bioD sums every attribute's value and first chunk.

    ``data`` (a ``KnowledgeData``) is required with ``SpanLosses`` and for a bioD report. A report holds only
    the mean losses: its inputs repeat p1 and p2 (p3) for each evaluated person, which gives the same bits, p1,
    p2, p3, but a ``bits_stderr`` of 0 for a subsample; use ``SpanLosses`` for the spread.
    """
    import numpy as np

    from ..data.population import BIOS_ATTRIBUTES, BioDPopulation
    from ..evaluation import BIOS_VALUE_ATTRIBUTES, KnowledgeReport, SpanLosses

    if isinstance(source, KnowledgeReport):
        population = data.population if data is not None else None
        if source.family == "bioD" and population is None:
            raise ValueError("a bioD report needs its data for K, C, D, L, T: metric_inputs(report, data)")
        n = source.n_evaluated
        if source.family == "bioD":
            k = population.n_attributes
            out = {"name_loss": [source.p1] * n, "value_loss": [source.p2 * k] * n,
                   "first_chunk_loss": [source.p3 * k] * n}
        else:
            out = {"name_loss": [source.p1] * n, "value_loss": [source.p2] * n}
        out.update(family=source.family, n_people=source.n_people)
        if model is None:
            out["num_params"] = source.num_params.paper_params
        if population is not None and population.n_people != source.n_people:
            raise ValueError(f"the report is of N={source.n_people} people, the data of N={population.n_people}")
    elif isinstance(source, SpanLosses):
        if data is None:
            raise ValueError("span losses need their data (family, N): metric_inputs(losses, data)")
        population = data.population
        if isinstance(population, BioDPopulation):
            out = {"name_loss": source.name_loss.tolist(), "value_loss": source.value_loss.sum(axis=1).tolist(),
                   "first_chunk_loss": source.first_chunk_loss.sum(axis=1).tolist()}
        else:
            counted = [BIOS_ATTRIBUTES.index(a) for a in BIOS_VALUE_ATTRIBUTES]
            value = source.value_loss[:, counted].sum(axis=1) + source.pronoun_loss
            out = {"name_loss": source.name_loss.tolist(), "value_loss": np.asarray(value).tolist()}
        out.update(family=data.family, n_people=population.n_people)
    else:
        raise TypeError(
            f"metric_inputs takes SpanLosses (hf_capacity.evaluation.span_losses) or a KnowledgeReport "
            f"(evaluate_knowledge), got {type(source).__name__}"
        )
    if isinstance(population, BioDPopulation):
        out.update(n_attributes=population.n_attributes, chunks_per_value=population.chunks_per_value,
                   diversity=population.diversity, chunk_length=population.chunk_length, alphabet=population.alphabet)
    if model is not None:
        if data is None:
            raise ValueError("counting the model's parameters needs the data (its used tokens): pass data")
        out["num_params"] = num_params_for_metric(model, data)
    return out


__all__ = ["METRIC_PATH", "load_metric", "metric_inputs", "num_params_for_metric"]
