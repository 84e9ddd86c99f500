"""knowledge_bits: an `evaluate` metric turning per-person span losses on bioS/bioD into bits of knowledge.

Loaded with ``evaluate.load("<this folder>")``. evaluate copies this file into its modules cache and imports
it from there, so it imports the installed ``hf_capacity`` package (absolutely, one import a line: evaluate's
loader reads import lines to find dependencies) and reuses the formulas of ``hf_capacity.bits``.
"""

import math
import operator

import datasets
import evaluate
import numpy as np

from hf_capacity import bits

_DESCRIPTION = """\
Bits of knowledge a language model stores about a synthetic population (bioS or bioD), from its losses on
the population's facts: Definitions 4.1 (bioD) and 4.3 (bioS) of Allen-Zhu & Li, "Physics of Language Models:
Part 3.3, Knowledge Capacity Scaling Laws" (arXiv 2404.05405), plus Theorem 3.2's rigorous lower bound.
Divide by the model's parameter count (pass `num_params`) to get the capacity ratio in bits per parameter.

One example = one person. Losses are natural-log cross-entropies in nats, summed over the tokens of the span
(not averaged); template words are never counted.
"""

_KWARGS_DESCRIPTION = """
Inputs (one entry per person):
    name_loss (`list` of `float`): summed loss in nats on the person's full-name tokens (at the start of the
        paragraph). p1 = mean over people.
    value_loss (`list` of `float`): summed loss in nats on the person's value tokens.
        bioS: birth date, birth city, university, major, employer and the first pronoun token (gender);
        working city excluded. p2 = mean over people.
        bioD: the sum over the person's K attributes; p2 = mean(value_loss) / K, the mean over
        (person, attribute) pairs.
    first_chunk_loss (`list` of `float`, bioD only): summed loss in nats on the first chunk of each value,
        summed over the person's K attributes; p3 = mean(first_chunk_loss) / K.

Settings (keyword arguments of `compute()`, or of `evaluate.load()` as defaults; `compute()` wins):
    family (`str`): "bioS" ("bioS-simple" is the same formula) or "bioD"; required (`evaluate.load(path, "bioD")`
        sets it through the config name) unless the inputs say bioD (first_chunk_loss, K, C, D, L, T). Plain
        name and value losses fit both, and bioD losses read as bioS give other bits, so they are refused.
    n_people (`int`): population size N. Defaults to the number of people given; may be larger when a
        subsample was evaluated (bits are then extrapolated from the sample means), never smaller.
    num_params (`int`): the model's parameter count P (see `hf_capacity.params.count_parameters`); adds
        `bits_per_param` and `bits_max_per_param`.
    n_attributes, chunks_per_value, diversity, chunk_length, alphabet (`int`): bioD's K, C, D, L, T; required
        for bioD, rejected for bioS.
    clip (`bool`): clip each term at 0 bits (a model worse than uniform guessing knows nothing). Default True.
    seed, name_offset: ignored, so that `**population.to_config()` can be passed as is.

Returns:
    bits (`float`): knowledge bits learned, the paper's definition (name + value + diversity bits).
    bits_max (`float`): bits of a perfect model (p1 = ln N, p2 = p3 = 0).
    bits_per_param, bits_max_per_param (`float`, only with `num_params`): the capacity ratios R(F), R_max.
    bits_per_person (`float`): bits / N.
    bits_lower_bound (`float`): Theorem 3.2's lower bound (N0 - N names, T^L - D chunks); <= bits.
    bits_stderr (`float`): standard error of the (unclipped) bits from sampling people; 0 when all N people
        were evaluated, nan when a single person stands for N > 1.
    name_bits, value_bits, diversity_bits (`float`): the three terms of bits (diversity_bits is 0 for bioS).
    p1, p2 (`float`): nats; p3 (`float`, bioD only): nats.
    n_people (`int`): N used in the formulas. n_evaluated (`int`): people given.

Examples:
    >>> import evaluate
    >>> from hf_capacity.metrics import METRIC_PATH
    >>> metric = evaluate.load(METRIC_PATH)
    >>> import math
    >>> r = metric.compute(name_loss=[math.log(2)] * 2, value_loss=[0.0] * 2, family="bioS", num_params=100)
    >>> round(r["bits"], 2), round(r["bits_per_param"], 4)
    (147.69, 1.4769)
"""

_CITATION = """\
@article{allenzhu2024physics33,
  title   = {Physics of Language Models: Part 3.3, Knowledge Capacity Scaling Laws},
  author  = {Allen-Zhu, Zeyuan and Li, Yuanzhi},
  journal = {arXiv preprint arXiv:2404.05405},
  year    = {2024}
}
"""

FAMILIES = {"bioS": "bioS", "bioS-simple": "bioS", "bioD": "bioD"}
BIOD_PARAMETERS = ("n_attributes", "chunks_per_value", "diversity", "chunk_length", "alphabet")
SETTINGS = ("family", "n_people", "num_params", *BIOD_PARAMETERS, "clip")
# keyword arguments that evaluate.load passes on to evaluate.EvaluationModule.__init__
MODULE_KWARGS = (
    "config_name",
    "keep_in_memory",
    "cache_dir",
    "num_process",
    "process_id",
    "seed",
    "experiment_id",
    "hash",
    "max_concurrent_cache_files",
    "timeout",
)


def _family(value):
    if value not in FAMILIES:
        raise ValueError(f"unknown family {value!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[value]


def _integer(name, value):
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _losses(name, values):
    """Per-person losses as a float64 array; a missing entry (None) becomes nan."""
    array = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)
    bad = np.flatnonzero(~np.isnan(array) & ~(np.isfinite(array) & (array >= 0)))
    if bad.size:
        raise ValueError(
            f"{name} must hold finite losses >= 0 (nats summed over the span), got {float(array[bad[0]])} "
            f"for person {bad[0]} ({bad.size} bad entries)"
        )
    return array


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KnowledgeBits(evaluate.Metric):
    """Knowledge bits and capacity ratio from per-person name/value losses (Allen-Zhu & Li 2024)."""

    def __init__(
        self,
        *,
        family=None,
        n_people=None,
        num_params=None,
        n_attributes=None,
        chunks_per_value=None,
        diversity=None,
        chunk_length=None,
        alphabet=None,
        clip=True,
        **module_kwargs,
    ):
        unknown = sorted(set(module_kwargs) - set(MODULE_KWARGS))
        if unknown:
            raise TypeError(f"knowledge_bits got unknown settings {unknown}; known settings: {list(SETTINGS)}")
        config_name = module_kwargs.get("config_name")
        if config_name not in (None, "default"):  # evaluate.load(path, "bioD"): the config name is the family
            if family is not None and _family(family) != _family(config_name):
                raise ValueError(f"config_name={config_name!r} contradicts family={family!r}")
            family = config_name
        # load-time settings: defaults for compute(), validated now so a typo fails at load
        self._defaults = self._settings(
            {
                "family": family,
                "n_people": n_people,
                "num_params": num_params,
                "n_attributes": n_attributes,
                "chunks_per_value": chunks_per_value,
                "diversity": diversity,
                "chunk_length": chunk_length,
                "alphabet": alphabet,
                "clip": clip,
            },
            base=dict.fromkeys(SETTINGS),
        )
        super().__init__(**module_kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "name_loss": datasets.Value("float64"),
                    "value_loss": datasets.Value("float64"),
                    "first_chunk_loss": datasets.Value("float64"),
                }
            ),
            homepage="https://arxiv.org/abs/2404.05405",
            reference_urls=["https://arxiv.org/abs/2404.05405"],
        )

    def add_batch(self, *, name_loss=None, value_loss=None, first_chunk_loss=None, **kwargs):
        """Add a batch of people: ``name_loss``, ``value_loss`` and, for bioD, ``first_chunk_loss``."""
        if first_chunk_loss is None and name_loss is not None:
            first_chunk_loss = [None] * len(name_loss)  # bioS: the column holds nulls
        super().add_batch(name_loss=name_loss, value_loss=value_loss, first_chunk_loss=first_chunk_loss, **kwargs)

    def add(self, *, name_loss=None, value_loss=None, first_chunk_loss=None, **kwargs):
        """Add one person: ``name_loss``, ``value_loss`` and, for bioD, ``first_chunk_loss``."""
        super().add(name_loss=name_loss, value_loss=value_loss, first_chunk_loss=first_chunk_loss, **kwargs)

    def _settings(self, overrides, base=None):
        """``base`` (the load-time defaults) updated with the non-None ``overrides``, validated."""
        settings = dict(self._defaults if base is None else base)
        settings.update({key: value for key, value in overrides.items() if value is not None})
        if settings["family"] is not None:
            settings["family"] = _family(settings["family"])
        for key in ("n_people", "num_params", *BIOD_PARAMETERS):
            if settings[key] is not None:
                settings[key] = _integer(key, settings[key])
        return settings

    def _compute(
        self,
        name_loss,
        value_loss,
        first_chunk_loss,
        family=None,
        n_people=None,
        num_params=None,
        n_attributes=None,
        chunks_per_value=None,
        diversity=None,
        chunk_length=None,
        alphabet=None,
        clip=None,
        seed=None,
        name_offset=None,
    ):
        s = self._settings(
            {
                "family": family,
                "n_people": n_people,
                "num_params": num_params,
                "n_attributes": n_attributes,
                "chunks_per_value": chunks_per_value,
                "diversity": diversity,
                "chunk_length": chunk_length,
                "alphabet": alphabet,
                "clip": clip,
            }
        )
        name = _losses("name_loss", name_loss)
        value = _losses("value_loss", value_loss)
        first = _losses("first_chunk_loss", first_chunk_loss)
        family = s["family"]
        if family is None:  # read from the inputs only where they say it: bioD's own inputs
            if any(s[k] is not None for k in BIOD_PARAMETERS) or (first.size and not np.isnan(first).all()):
                family = "bioD"
            else:
                raise ValueError(
                    "family is missing: pass family='bioS' or family='bioD' to compute() or evaluate.load() "
                    "(name and value losses alone fit both; metric_inputs(losses, data) sets it from the data)"
                )
        n = name.size
        if n == 0:
            raise ValueError("no people to evaluate: add name_loss and value_loss for at least one person")
        for label, array in (("name_loss", name), ("value_loss", value)):
            if np.isnan(array).any():
                raise ValueError(f"{label} is missing (None or nan) for {int(np.isnan(array).sum())} of {n} people")
        N = n if s["n_people"] is None else s["n_people"]
        if N < n:
            raise ValueError(
                f"n_people={N} is smaller than the {n} people given; n_people is the population size N "
                f"(leave it unset to use the number of people given)"
            )
        p1 = float(name.mean())

        if family == "bioS":
            given = [k for k in BIOD_PARAMETERS if s[k] is not None]
            if given:
                raise ValueError(f"{given} only apply to family='bioD' (this metric computes bioS)")
            if not np.isnan(first).all():
                raise ValueError(
                    "first_chunk_loss only applies to family='bioD'; pass family='bioD' and its parameters"
                )
            p2 = float(value.mean())
            p3 = None
            learned = bits.bios_bits(N, p1, p2, clip=s["clip"])
            best = bits.bios_bits_max(N)
            bound = bits.bios_bits_lower_bound(N, p1, p2, clip=s["clip"])
            per_person = name + value  # bits = const - N/ln2 * mean(per_person)
        else:
            missing = [k for k in BIOD_PARAMETERS if s[k] is None]
            if missing:
                raise ValueError(
                    f"bioD needs {list(BIOD_PARAMETERS)} (K, C, D, L, T); missing {missing}: pass them to "
                    f"compute() or evaluate.load()"
                )
            if np.isnan(first).any():
                raise ValueError(
                    f"bioD needs first_chunk_loss for every person; missing for {int(np.isnan(first).sum())} of {n}"
                )
            shape = bits.BioDShape(N, *(s[k] for k in BIOD_PARAMETERS))
            K = shape.n_attributes
            p2 = float(value.mean()) / K
            p3 = float(first.mean()) / K
            learned = bits.biod_bits(shape, p1, p2, p3, clip=s["clip"])
            best = bits.biod_bits_max(shape)
            bound = bits.biod_bits_lower_bound(shape, p1, p2, p3, clip=s["clip"])
            per_person = name + value + first * (shape.diversity / N)

        if n == N:
            stderr = 0.0
        elif n < 2:
            stderr = math.nan
        else:
            stderr = N * bits.LOG2_E * float(per_person.std(ddof=1)) / math.sqrt(n) * math.sqrt(1 - n / N)

        result = {"bits": learned.total, "bits_max": best.total}
        if s["num_params"] is not None:
            result["bits_per_param"] = bits.capacity_ratio(learned.total, s["num_params"])
            result["bits_max_per_param"] = bits.capacity_ratio(best.total, s["num_params"])
        result.update(
            bits_per_person=learned.per_person(N),
            bits_lower_bound=bound.total,
            bits_stderr=stderr,
            name_bits=learned.name_bits,
            value_bits=learned.value_bits,
            diversity_bits=learned.diversity_bits,
            p1=p1,
            p2=p2,
        )
        if p3 is not None:
            result["p3"] = p3
        result.update(n_people=N, n_evaluated=n)
        return result
