"""Knowledge evaluation: span losses, bits, exact-match accuracy, subsampling and model/data mismatches."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from hf_capacity.bits import (
    KnowledgeBits,
    bios_bits_max,
    log2_bios_name_space,
    log2_bios_value_space,
)
from hf_capacity.data.render import evaluation_exposure
from hf_capacity.evaluation import PriorKnowledge, evaluate_knowledge, span_losses


class Oracle(nn.Module):
    """A 'model' that peeks at the next token: every prediction is right with probability ~1."""

    def __init__(self, vocab_size: int, confidence: float = 40.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 4)
        self.confidence = confidence
        self.config = SimpleNamespace(position_embedding_type="rotary")

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.embed.num_embeddings)
        logits[:, :-1].scatter_(-1, input_ids[:, 1:, None], self.confidence)
        return SimpleNamespace(logits=logits)


def tiny_gpt2(vocab_size: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=256,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def test_a_model_that_knows_everything_stores_all_value_bits(bios_data):
    report = evaluate_knowledge(Oracle(len(bios_data.tokenizer)), bios_data, progress=False)
    n = bios_data.population.n_people
    assert report.p2 == pytest.approx(0.0, abs=1e-6)
    assert report.bits.value_bits == pytest.approx(n * log2_bios_value_space(), rel=1e-6)
    # it even knows the names (p1 ≈ 0), which a real model cannot: more than bits_max's name term
    assert report.bits.name_bits == pytest.approx(n * log2_bios_name_space(), rel=1e-6)
    assert all(r["accuracy"] == 1.0 for r in report.per_attribute.values())
    assert report.n_evaluated == n and report.bits_ci95 is None


def test_span_losses_match_a_hand_computation(bios_data):
    model = tiny_gpt2(len(bios_data.tokenizer)).eval()
    batch = bios_data.renderer.render(np.array([4]), evaluation_exposure())
    ids = torch.tensor(batch.biography(0))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)

    def by_hand(start, length):
        return -sum(logp[t - 1, ids[0, t]].item() for t in range(start, start + length))

    losses = span_losses(model, bios_data, np.array([4]), progress=False)
    assert losses.name_loss[0] == pytest.approx(by_hand(*batch.name[0]), rel=1e-5)
    assert losses.pronoun_loss[0] == pytest.approx(by_hand(*batch.pronoun[0]), rel=1e-5)
    for a in range(6):
        assert losses.value_loss[0, a] == pytest.approx(by_hand(*batch.values[0, a]), rel=1e-5)


def test_batching_and_padding_do_not_change_the_numbers(bios_data):
    model = tiny_gpt2(len(bios_data.tokenizer))
    one = span_losses(model, bios_data, np.arange(12), batch_size=12, progress=False)
    many = span_losses(model, bios_data, np.arange(12), batch_size=5, progress=False)
    np.testing.assert_allclose(one.value_loss, many.value_loss, rtol=1e-4)
    np.testing.assert_allclose(one.name_loss, many.name_loss, rtol=1e-4)


def test_untrained_model_knows_nothing_and_report_is_complete(bios_data):
    report = evaluate_knowledge(tiny_gpt2(len(bios_data.tokenizer)), bios_data, progress=False)
    assert report.bits.total == 0.0  # worse than guessing: clipped to zero
    assert report.bits_max.total == pytest.approx(bios_bits_max(300).total)
    d = report.to_dict()
    for key in ("bits", "bits_max", "bits_per_param", "num_params", "p1", "p2", "per_attribute"):
        assert key in d
    assert d["num_params"] < d["num_params_total"]  # unused embedding rows are not counted
    assert "bits per parameter" in report.table()


def test_subsample_gives_a_confidence_interval(bios_data):
    oracle = Oracle(len(bios_data.tokenizer), confidence=3.0)  # imperfect: losses vary across people
    full = evaluate_knowledge(oracle, bios_data, progress=False)
    part = evaluate_knowledge(oracle, bios_data, max_people=100, progress=False)
    assert part.n_evaluated == 100 and part.bits_ci95 is not None
    low, high = part.bits_ci95
    assert 0 <= low <= part.bits.total < high <= part.bits_max.total  # bits cannot be negative
    assert low <= full.bits.total < high


def test_several_renderings_average_the_losses(bios_data):
    oracle = Oracle(len(bios_data.tokenizer), confidence=3.0)
    two = span_losses(oracle, bios_data, np.arange(5), renderings=2, progress=False)
    assert two.value_loss.shape == (5, 6)
    assert math.isfinite(two.name_loss.sum())


def test_biod_report_has_three_terms(biod_data):
    report = evaluate_knowledge(Oracle(len(biod_data.tokenizer)), biod_data, progress=False)
    assert report.p3 == pytest.approx(0.0, abs=1e-6)
    assert report.bits.value_bits == pytest.approx(biod_data.bits_max().value_bits, rel=1e-6)
    assert report.bits.diversity_bits == pytest.approx(biod_data.bits_max().diversity_bits, rel=1e-6)
    assert set(report.per_attribute) == {"ID 1", "ID 2", "ID 3", "ID 4"}


def test_a_report_net_of_prior_knowledge_counts_only_what_was_added(biod_data):
    """An adapter run's report: what its base knew of the people (here 10 name, 20 value and 5 diversity bits) is
    taken off, and with the base's diversity sets shared that term leaves bits_max too."""
    measured = evaluate_knowledge(Oracle(len(biod_data.tokenizer)), biod_data, progress=False)
    whole = biod_data.bits_max()
    prior = PriorKnowledge(KnowledgeBits(10.0, 20.0, 5.0), KnowledgeBits(10.0, 20.0, 5.0), shared_diversity=True)
    report = prior.apply(measured)
    assert report.bits.name_bits == pytest.approx(measured.bits.name_bits - 10.0)
    assert report.bits.value_bits == pytest.approx(whole.value_bits - 20.0, rel=1e-6)
    assert report.bits.diversity_bits == 0
    assert report.bits_max.total == pytest.approx(whole.total - whole.diversity_bits)
    d = report.to_dict()
    assert d["bits_at_start"] == 35.0 and d["bits_measured"] == pytest.approx(measured.bits.total)
    assert d["bits_max_shared_with_base"] == pytest.approx(whole.diversity_bits)
    assert d["bits_per_param"] == pytest.approx(report.bits.total / report.num_params.paper_params)
    assert "net of the base's 35 bits" in report.table()
    kept = PriorKnowledge(KnowledgeBits(10.0, 20.0, 5.0), KnowledgeBits(10.0, 20.0, 5.0)).apply(measured)
    assert kept.bits.diversity_bits == pytest.approx(whole.diversity_bits - 5.0, rel=1e-6)  # a base of other sets
    assert kept.bits_max == whole


def test_model_and_data_that_do_not_belong_together(bios_data):
    with pytest.raises(ValueError, match="do not belong together"):
        evaluate_knowledge(tiny_gpt2(100), bios_data, progress=False)
    short = tiny_gpt2(len(bios_data.tokenizer))
    short.config.n_positions = 20
    with pytest.raises(ValueError, match="positions"):
        evaluate_knowledge(short, bios_data, progress=False)


def test_biod_losses_are_labelled_per_person_and_attribute_beside_uniform_guessing(biod_data):
    from hf_capacity.report import model_card

    report = evaluate_knowledge(Oracle(len(biod_data.tokenizer), confidence=3.0), biod_data, progress=False)
    shape = biod_data.population.shape
    # p2 is a mean over (person, attribute) pairs: uniform guessing costs C·ln D nats on one value
    assert report.p2_uniform == pytest.approx(shape.chunks_per_value * math.log(shape.diversity))
    assert report.p1_uniform == pytest.approx(log2_bios_name_space() * math.log(2))
    assert report.p3_uniform == pytest.approx(shape.chunk_length * math.log(shape.alphabet))
    table = report.table()
    assert "p2 (value loss, nats per person and attribute)" in table and "nats/person" not in table
    assert f"uniform guessing {report.p2_uniform:.4f}" in table
    assert f"uniform guessing {report.p1_uniform:.4f}" in table
    d = report.to_dict()
    assert (d["p1_uniform"], d["p2_uniform"]) == (report.p1_uniform, report.p2_uniform)
    assert d["per_attribute"]["ID 1"]["uniform_loss"] == pytest.approx(report.p2_uniform)
    card = model_card(report, model_name="m").text
    assert f"| p2 (value loss, nats per person and attribute) | {report.p2:.4f} | {report.p2_uniform:.4f} |" in card
    for term in ("name bits", "value bits", "diversity bits"):
        assert f"| {term} |" in card


def test_bios_losses_are_per_person_and_the_card_splits_name_and_value_bits(bios_data):
    from hf_capacity.bits import BIOS_ATTRIBUTE_CHOICES
    from hf_capacity.report import model_card

    report = evaluate_knowledge(Oracle(len(bios_data.tokenizer), confidence=3.0), bios_data, progress=False)
    assert report.p2_uniform == pytest.approx(log2_bios_value_space() * math.log(2))
    assert report.per_attribute["major"]["uniform_loss"] == pytest.approx(math.log(BIOS_ATTRIBUTE_CHOICES["major"]))
    assert "p2 (value loss, nats per person)" in report.table()
    card = model_card(report, model_name="m").text
    assert f"| name bits | {report.bits.name_bits:,.0f} of {report.bits_max.name_bits:,.0f} |" in card
    assert f"| value bits | {report.bits.value_bits:,.0f} of {report.bits_max.value_bits:,.0f} |" in card
    assert "diversity bits" not in card
    assert {"name_bits", "value_bits"} <= set(report.log_metrics())  # so the curve can split them too
