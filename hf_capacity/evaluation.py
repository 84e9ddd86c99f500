"""Knowledge evaluation: model + evaluation renderings → per-person span losses → bits, R(F), per attribute.

Protocol (spec §3): one fixed evaluation rendering per person (seeded, never used in training; bioS-simple uses
its only rendering), preceded by EOS as in training; exact over all N people unless a subsample is requested
(then bits carry a 95% confidence interval). Losses are natural-log cross-entropies summed over the tokens of
each span. Exact-match accuracy of a value = every token of its span is the model's argmax given the true
prefix, which is what greedy decoding from the prefix would produce.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .bits import (
    BIOS_ATTRIBUTE_CHOICES,
    LOG2_E,
    KnowledgeBits,
    biod_bits,
    biod_bits_lower_bound,
    biod_uniform_losses_nats,
    bios_bits,
    bios_bits_lower_bound,
    bios_uniform_value_loss_nats,
    bits_gained,
    capacity_ratio,
    uniform_name_loss_nats,
)
from .data.knowledge_data import KnowledgeData
from .data.population import BIOS_ATTRIBUTES, BioDPopulation
from .data.render import RenderedBatch, evaluation_exposure
from .params import ParameterCount, count_parameters

BIOS_VALUE_ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer")
"""bioS attributes whose value tokens count in p2 (plus the first pronoun for gender; working city is excluded)."""


ALMOST_NOTHING = 0.05
"""A report whose model stored under this share of bits_max says why (``KnowledgeReport.diagnosis``)."""


@dataclass
class SpanLosses:
    """Per-person summed losses (nats) and exact matches on every span of the evaluation renderings.

    Arrays are indexed like ``people``; with several renderings, losses are averaged over them and a value is
    correct only if it is correct in every rendering.
    """

    people: np.ndarray
    name_loss: np.ndarray  # (n,)
    value_loss: np.ndarray  # (n, A) per attribute (bioS: the six sentences in canonical order; bioD: K)
    value_correct: np.ndarray  # (n, A) bool
    pronoun_loss: np.ndarray | None = None  # (n,) bioS
    pronoun_correct: np.ndarray | None = None
    first_chunk_loss: np.ndarray | None = None  # (n, K) bioD

    @classmethod
    def concatenate(cls, parts: list[SpanLosses]) -> SpanLosses:
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)

        return cls(**{f: cat(f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PriorKnowledge:
    """What a model knew about a population before a run taught it, so that the run's reports count only what the
    run added. For an adapter run: its base model measured on the new people (the step-0 figure).

    ``bits`` and ``bits_lower_bound``: that measurement, by term. ``shared_diversity``: the population's bioD
    diversity sets are the base's own (an adapter run on its base run's format), so the diversity term is the base's
    knowledge, left out of both the bits and bits_max. ``base_params``: the base model's P, one figure for the whole
    run (on its own population's tokens; every embedding row for a base of unknown training data)."""

    bits: KnowledgeBits
    bits_lower_bound: KnowledgeBits
    shared_diversity: bool = False
    base_params: int | None = None

    @classmethod
    def measured(cls, report: KnowledgeReport, *, shared_diversity: bool = False,
                 base_params: int | None = None) -> PriorKnowledge:
        """The prior knowledge ``report`` measured (the model before training, on the run's people)."""
        return cls(report.bits, report.bits_lower_bound, shared_diversity, base_params)

    def new_bits_max(self, bits_max: KnowledgeBits) -> KnowledgeBits:
        """The part of a population's ``bits_max`` that is new to the model: without the shared diversity term."""
        return dataclasses.replace(bits_max, diversity_bits=0.0) if self.shared_diversity else bits_max

    def apply(self, report: KnowledgeReport) -> KnowledgeReport:
        """``report`` counting the knowledge gained since this prior: bits and lower bound net of the prior's, by
        term (``bits.bits_gained``), bits_max without the shared diversity term; the measured bits kept in
        ``bits_measured``, the base's P as ``num_params.base_paper_params``."""
        keep = not self.shared_diversity
        bits = bits_gained(report.bits, self.bits, keep_diversity=keep)
        lower = bits_gained(report.bits_lower_bound, self.bits_lower_bound, keep_diversity=keep)
        bits_max = self.new_bits_max(report.bits_max)
        ci = report.bits_ci95
        if ci is not None:
            shift = report.bits.total - bits.total
            ci = (ci[0] - shift, min(ci[1] - shift, max(bits_max.total, bits.total)))
        params = report.num_params
        if params.is_adapter and self.base_params is not None:
            params = dataclasses.replace(params, base_paper_params=self.base_params)
        return dataclasses.replace(report, bits=bits, bits_lower_bound=lower, bits_max=bits_max, bits_ci95=ci,
                                   num_params=params, prior=self, bits_measured=report.bits,
                                   bits_max_measured=report.bits_max)


@dataclass
class KnowledgeReport:
    """What a model knows about a population: p1/p2/p3 (nats), bits by term, R(F), per-attribute results.

    p1 is the mean loss on a full name (nats per person); p2 the mean loss on the values, per person for bioS (all
    of a person's counted values) and per (person, attribute) pair for bioD, as is p3 (a value's first chunk).
    ``p1_uniform``, ``p2_uniform``, ``p3_uniform``: the same losses for uniform guessing (a model knowing nothing).
    """

    family: str
    n_people: int
    n_evaluated: int
    p1: float
    p2: float
    p3: float | None
    bits: KnowledgeBits
    bits_max: KnowledgeBits
    bits_lower_bound: KnowledgeBits
    num_params: ParameterCount
    per_attribute: dict[str, dict[str, float]]
    bits_ci95: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)
    p1_uniform: float | None = None
    p2_uniform: float | None = None
    p3_uniform: float | None = None
    prior: PriorKnowledge | None = None
    """Set when the bits are net of what the model knew before the run (``PriorKnowledge.apply``: adapter runs)."""
    bits_measured: KnowledgeBits | None = None
    """With ``prior``: the bits the model holds on these people, before the prior's are taken off."""
    bits_max_measured: KnowledgeBits | None = None
    """With ``prior``: the population's whole bits_max, the shared diversity term included."""

    @property
    def value_loss_unit(self) -> str:
        """What p2 (and p3) are averaged over: "nats per person" (bioS) or "nats per person and attribute" (bioD)."""
        return "nats per person and attribute" if self.family == "bioD" else "nats per person"

    @property
    def bits_per_param(self) -> float:
        """R(F) = bits / P, P by the paper's rule (used embedding rows only, tied once)."""
        return capacity_ratio(self.bits.total, self.num_params.paper_params)

    @property
    def bits_max_per_param(self) -> float:
        return capacity_ratio(self.bits_max.total, self.num_params.paper_params)

    @property
    def fraction_learned(self) -> float:
        return self.bits.total / self.bits_max.total

    def diagnosis(self) -> str | None:
        """Why the model stored almost nothing (under ``ALMOST_NOTHING`` of bits_max): its value loss against
        uniform guessing; None when it stored more."""
        if self.fraction_learned >= ALMOST_NOTHING or self.p2_uniform is None:
            return None
        level = "not below" if self.p2 >= self.p2_uniform else "barely below"
        return (f"stored almost nothing ({100 * self.fraction_learned:.1f}% of bits_max): value loss p2 = "
                f"{self.p2:.4f} {self.value_loss_unit}, {level} uniform guessing ({self.p2_uniform:.4f}), so the "
                "model has not learned the values yet; train for more exposures or steps, "
                "or at a higher learning rate")

    def to_dict(self) -> dict:
        """Flat JSON-ready dict, the keys of ``results.json``: bits, bits_max, name_bits, value_bits, diversity_bits
        (bits, base 2, totals over the population); bits_per_param (R = bits / P); num_params (P, the paper's count);
        p1 (name loss, nats per person), p2 (value loss: nats per person for bioS, per person and attribute for
        bioD), p3 (bioD first-chunk loss, nats per person and attribute), each with its ``*_uniform`` for uniform
        guessing; per_attribute: loss (nats), uniform_loss (nats; null where not defined) and exact-match accuracy."""
        out = {
            "family": self.family,
            "n_people": self.n_people,
            "n_evaluated": self.n_evaluated,
            "p1": self.p1,
            "p2": self.p2,
            "p3": self.p3,
            "p1_uniform": self.p1_uniform,
            "p2_uniform": self.p2_uniform,
            "p3_uniform": self.p3_uniform,
            "bits": self.bits.total,
            "bits_max": self.bits_max.total,
            "bits_lower_bound": self.bits_lower_bound.total,
            "bits_per_person": self.bits.total / self.n_people,
            "fraction_learned": self.fraction_learned,
            "bits_per_param": self.bits_per_param,
            "bits_max_per_param": self.bits_max_per_param,
            "num_params": self.num_params.paper_params,
            "num_params_total": self.num_params.total,
            "num_params_non_embedding": self.num_params.non_embedding,
            "num_params_active_per_token": self.num_params.active_per_token,
            "bits_per_active_param": capacity_ratio(self.bits.total, max(self.num_params.active_per_token, 1)),
            "name_bits": self.bits.name_bits,
            "value_bits": self.bits.value_bits,
            "diversity_bits": self.bits.diversity_bits,
            "per_attribute": self.per_attribute,
            "params": self.num_params.to_dict(),
            **self.extra,
        }
        if self.num_params.is_adapter:  # num_params / bits_per_param count the trainable adapter parameters
            out["num_params_base"] = self.num_params.base_paper_params
        if self.prior is not None:  # bits are net of the base's: say what was measured and what was taken off
            out["bits_at_start"] = self.prior.bits.total
            out["bits_measured"] = self.bits_measured.total
            out["bits_max_shared_with_base"] = self.bits_max_measured.total - self.bits_max.total
        if self.bits_ci95 is not None:
            out["bits_ci95"] = list(self.bits_ci95)
        return out

    def log_metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalars for Trainer logs / report_to backends (``knowledge_bits``, ``bits_per_param``, accuracies)."""
        m = {
            f"{prefix}knowledge_bits": self.bits.total,
            f"{prefix}bits_per_param": self.bits_per_param,
            f"{prefix}fraction_learned": self.fraction_learned,
            f"{prefix}p1_name_loss": self.p1,
            f"{prefix}p2_value_loss": self.p2,
            f"{prefix}name_bits": self.bits.name_bits,
            f"{prefix}value_bits": self.bits.value_bits,
        }
        if self.family == "bioD":
            m[f"{prefix}diversity_bits"] = self.bits.diversity_bits
        for attribute, r in self.per_attribute.items():
            m[f"{prefix}accuracy_{attribute.replace(' ', '_')}"] = r["accuracy"]
        return m

    def table(self) -> str:
        """A readable summary."""
        p = self.num_params
        losses = [("p1 (name loss, nats per person)", self.p1, self.p1_uniform),
                  (f"p2 (value loss, {self.value_loss_unit})", self.p2, self.p2_uniform)]
        if self.p3 is not None:
            losses.append((f"p3 (first-chunk loss, {self.value_loss_unit})", self.p3, self.p3_uniform))
        width = max(33, *(len(label) + 3 for label, _, _ in losses))
        lines = [f"Knowledge report: {self.family}(N={self.n_people:,}), evaluated on {self.n_evaluated:,} people"]
        for label, value, uniform in losses:
            lines.append(f"  {label:<{width - 3}}{value:12.4f}"
                         + (f"   (uniform guessing {uniform:.4f})" if uniform is not None else ""))
        lines += [
            f"  bits learned                     {self.bits.total:14,.0f}   of {self.bits_max.total:,.0f} "
            f"({100 * self.fraction_learned:.1f}%)",
            f"    name / value / diversity       {self.bits.name_bits:,.0f} / {self.bits.value_bits:,.0f} / "
            f"{self.bits.diversity_bits:,.0f}",
            f"  Theorem 3.2 lower bound          {self.bits_lower_bound.total:14,.0f}",
        ]
        if self.prior is not None:
            shared = self.bits_max_measured.total - self.bits_max.total
            lines.append(f"    net of the base's {self.prior.bits.total:,.0f} bits on these people before training "
                         f"(measured {self.bits_measured.total:,.0f})"
                         + (f"; bits_max leaves out the {shared:,.0f} diversity bits of the base's sets"
                            if shared else ""))
        if self.bits_ci95 is not None:
            lines.append(f"  95% CI (subsample)               [{self.bits_ci95[0]:,.0f}, {self.bits_ci95[1]:,.0f}]")
        if p.is_adapter:
            params = (f"  trainable adapter parameters P   {p.paper_params:14,}   (the frozen base model's P "
                      f"{p.base_paper_params:,}; total {p.total:,})")
        else:
            params = (f"  parameters P (paper's rule)      {p.paper_params:14,}   (total {p.total:,}; non-embedding "
                      f"{p.non_embedding:,}; active/token {p.active_per_token:,})")
        lines += [
            params,
            f"  bits per parameter R(F)          {self.bits_per_param:14.4f}   (R_max {self.bits_max_per_param:.4f})",
            "  per attribute                    loss (nats)   uniform   exact match",
        ]
        for attribute, r in self.per_attribute.items():
            uniform = f"{r['uniform_loss']:9.4f}" if r.get("uniform_loss") is not None else f"{'—':>9}"
            lines.append(f"    {attribute:<30}{r['loss']:12.4f} {uniform}   {100 * r['accuracy']:9.1f}%")
        if self.diagnosis():
            lines.append(f"  {self.diagnosis()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# ------------------------------------------------------------------------------------------- forward
def _batch_tensors(batch: RenderedBatch, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = batch.lengths
    width = int(lengths.max())
    ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = batch.biography(b)
        mask[b, :n] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


@torch.no_grad()
def _token_losses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Loss (nats) and argmax-correctness of every token given its prefix; position 0 gets 0 / True."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    target = input_ids[:, 1:]
    pred = logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(
        pred.float().reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none"
    ).view_as(target)
    wrong = (pred.argmax(-1) != target).to(torch.int64)
    zero = torch.zeros_like(loss[:, :1])
    loss = torch.cat([zero, loss], dim=1).double().cpu().numpy()
    wrong = torch.cat([zero.to(torch.int64), wrong], dim=1).cpu().numpy()
    return loss, wrong


def _span_sum(cumulative: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Sum of per-token values over spans (start, length); ``cumulative`` has a leading zero column."""
    rows = np.arange(cumulative.shape[0]).reshape((-1,) + (1,) * (spans.ndim - 2))
    start, length = spans[..., 0], spans[..., 1]
    return cumulative[rows, start + length] - cumulative[rows, start]


def span_losses(
    model,
    data: KnowledgeData,
    people: np.ndarray | None = None,
    *,
    renderings: int = 1,
    batch_size: int = 64,
    progress: bool = True,
) -> SpanLosses:
    """Per-person summed losses on every name/value span of the evaluation renderings (one forward per text)."""
    from tqdm.auto import tqdm

    if renderings < 1:
        raise ValueError(f"renderings must be >= 1, got {renderings}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pop = data.population
    people = np.arange(pop.n_people) if people is None else np.asarray(people, dtype=np.int64)
    device = next(model.parameters()).device
    pad_id = data.pad_token_id
    max_positions = _learned_positions(model)
    was_training = model.training
    model.eval()
    parts: list[SpanLosses] = []
    total = len(people) * renderings
    with tqdm(total=total, desc="knowledge eval", unit="bio", disable=not progress, leave=False) as bar:
        for start in range(0, len(people), batch_size):
            chunk = people[start : start + batch_size]
            per_rendering = []
            for r in range(renderings):
                batch = data.renderer.render(chunk, evaluation_exposure(r))
                if max_positions is not None and batch.lengths.max() > max_positions:
                    raise ValueError(
                        f"a biography of {batch.lengths.max()} tokens exceeds the model's {max_positions} positions"
                    )
                loss, wrong = _token_losses(model, *_batch_tensors(batch, pad_id, device))
                closs = np.concatenate([np.zeros((len(chunk), 1)), np.cumsum(loss, axis=1)], axis=1)
                cwrong = np.concatenate([np.zeros((len(chunk), 1), np.int64), np.cumsum(wrong, axis=1)], axis=1)
                item = SpanLosses(
                    people=chunk,
                    name_loss=_span_sum(closs, batch.name[:, None, :])[:, 0],
                    value_loss=_span_sum(closs, batch.values),
                    value_correct=_span_sum(cwrong, batch.values) == 0,
                )
                if batch.pronoun is not None:
                    item.pronoun_loss = _span_sum(closs, batch.pronoun[:, None, :])[:, 0]
                    item.pronoun_correct = _span_sum(cwrong, batch.pronoun[:, None, :])[:, 0] == 0
                if batch.first_chunk is not None:
                    item.first_chunk_loss = _span_sum(closs, batch.first_chunk)
                per_rendering.append(item)
                bar.update(len(chunk))
            parts.append(_average_renderings(per_rendering))
    model.train(was_training)
    return SpanLosses.concatenate(parts)


def _learned_positions(model) -> int | None:
    """The position limit of models with learned position embeddings (None for rotary models)."""
    config = getattr(model, "config", None)
    if getattr(config, "position_embedding_type", "learned") == "rotary" or getattr(config, "rope_parameters", None):
        return None
    return getattr(config, "n_positions", None) or None


def _average_renderings(items: list[SpanLosses]) -> SpanLosses:
    if len(items) == 1:
        return items[0]

    def mean(name):
        values = [getattr(i, name) for i in items]
        return None if values[0] is None else np.mean(values, axis=0)

    def every(name):
        values = [getattr(i, name) for i in items]
        return None if values[0] is None else np.all(values, axis=0)

    return SpanLosses(
        people=items[0].people,
        name_loss=mean("name_loss"),
        value_loss=mean("value_loss"),
        value_correct=every("value_correct"),
        pronoun_loss=mean("pronoun_loss"),
        pronoun_correct=every("pronoun_correct"),
        first_chunk_loss=mean("first_chunk_loss"),
    )


# -------------------------------------------------------------------------------------------- report
def knowledge_report(
    losses: SpanLosses, data: KnowledgeData, num_params: ParameterCount, extra: dict | None = None
) -> KnowledgeReport:
    """Turn per-person span losses into bits, R(F) and per-attribute results (pure bookkeeping)."""
    pop = data.population
    n, n_eval = pop.n_people, len(losses.people)
    p1 = float(losses.name_loss.mean())
    p1_uniform = uniform_name_loss_nats()
    if isinstance(pop, BioDPopulation):
        labels = [f"ID {k + 1}" for k in range(pop.n_attributes)]
        p2_uniform, p3_uniform = biod_uniform_losses_nats(pop.shape)
        uniform = dict.fromkeys(labels, p2_uniform)
        person_value = losses.value_loss.mean(axis=1)  # mean over attributes → p2 is a mean over pairs
        p2 = float(person_value.mean())
        p3 = float(losses.first_chunk_loss.mean())
        bits = biod_bits(pop.shape, p1, p2, p3)
        lower = biod_bits_lower_bound(pop.shape, p1, p2, p3)
        per_person_bits = -(losses.name_loss + pop.n_attributes * person_value) * LOG2_E
    else:
        labels = list(BIOS_ATTRIBUTES)
        p2_uniform, p3_uniform = bios_uniform_value_loss_nats(), None
        uniform = {a: math.log(c) for a, c in BIOS_ATTRIBUTE_CHOICES.items()}  # working city: 0 bits, no entry
        counted = [BIOS_ATTRIBUTES.index(a) for a in BIOS_VALUE_ATTRIBUTES]
        person_value = losses.value_loss[:, counted].sum(axis=1) + losses.pronoun_loss
        p2, p3 = float(person_value.mean()), None
        bits = bios_bits(n, p1, p2)
        lower = bios_bits_lower_bound(n, p1, p2)
        per_person_bits = -(losses.name_loss + person_value) * LOG2_E
    per_attribute = {
        label: {"loss": float(losses.value_loss[:, k].mean()), "uniform_loss": uniform.get(label),
                "accuracy": float(losses.value_correct[:, k].mean())}
        for k, label in enumerate(labels)
    }
    if losses.pronoun_loss is not None:
        per_attribute["gender"] = {
            "loss": float(losses.pronoun_loss.mean()),
            "uniform_loss": uniform["gender"],
            "accuracy": float(losses.pronoun_correct.mean()),
        }
    ci, bits_max = None, data.bits_max()
    if n_eval < n:  # bits are linear in the mean per-person loss: a normal CI on the subsample mean, kept within
        half = 1.96 * n * float(np.std(per_person_bits, ddof=1)) / math.sqrt(n_eval) if n_eval > 1 else math.inf
        ci = (max(bits.total - half, 0.0), min(bits.total + half, max(bits_max.total, bits.total)))  # [0, bits_max]
    return KnowledgeReport(
        family=data.family,
        n_people=n,
        n_evaluated=n_eval,
        p1=p1,
        p2=p2,
        p3=p3,
        bits=bits,
        bits_max=bits_max,
        bits_lower_bound=lower,
        num_params=num_params,
        per_attribute=per_attribute,
        bits_ci95=ci,
        extra=dict(extra or {}),
        p1_uniform=p1_uniform,
        p2_uniform=p2_uniform,
        p3_uniform=p3_uniform,
    )


def evaluate_knowledge(
    model,
    data: KnowledgeData,
    *,
    max_people: int | None = None,
    renderings: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    distributed: bool | None = None,
) -> KnowledgeReport:
    """Measure the knowledge ``model`` stores about ``data``'s population.

    Exact over all people by default; ``max_people`` evaluates a seeded random subsample (the report then
    carries a 95% confidence interval, kept within [0, bits_max]: bits cannot be negative). Under
    ``accelerate``/DDP (``distributed=None``: auto), people are sharded across processes and the per-person results
    gathered, so every rank gets the same report.
    """
    if len(data.tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise ValueError(
            f"tokenizer has {len(data.tokenizer)} tokens but the model's embedding has "
            f"{model.get_input_embeddings().weight.shape[0]} rows: model and data do not belong together"
        )
    pop = data.population
    people = np.arange(pop.n_people)
    if max_people is not None:
        if max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {max_people}")
        if max_people < pop.n_people:
            people = np.sort(np.random.default_rng(seed).choice(pop.n_people, size=max_people, replace=False))
    state = _partial_state() if distributed is not False else None
    if state is not None and state.num_processes > 1:
        from accelerate.utils import gather_object

        with state.split_between_processes(people.tolist()) as mine:
            # fewer people than processes leaves some ranks without any: they still join the gather
            local = [] if len(mine) == 0 else [asdict(span_losses(
                model, data, np.asarray(mine, dtype=np.int64), renderings=renderings, batch_size=batch_size,
                progress=progress and state.is_main_process,
            ))]
        gathered = gather_object(local)  # every rank's shard, in rank order (= the order of `people`)
        losses = SpanLosses.concatenate([SpanLosses(**g) for g in gathered])
    else:
        losses = span_losses(model, data, people, renderings=renderings, batch_size=batch_size, progress=progress)
    params = count_parameters(model, data.used_token_ids())
    return knowledge_report(losses, data, params, extra={"renderings": renderings})


def _partial_state():
    try:
        from accelerate import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return None
    return PartialState() if PartialState._shared_state else None
