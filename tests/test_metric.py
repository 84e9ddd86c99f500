"""The knowledge_bits `evaluate` metric: offline loading, bioS/bioD bits against hand computation, errors."""

import math
from types import SimpleNamespace

import evaluate
import numpy as np
import pytest
import torch

from hf_capacity import bits
from hf_capacity.data import BioDPopulation
from hf_capacity.evaluation import evaluate_knowledge, span_losses
from hf_capacity.metrics import METRIC_PATH, load_metric, metric_inputs, num_params_for_metric

LN2 = math.log(2)


@pytest.fixture
def metric(tmp_path):
    return load_metric(cache_dir=str(tmp_path), family="bioS")


def test_loads_offline_with_evaluate_and_shortcut(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)  # read at import: any download now raises
    direct = evaluate.load(METRIC_PATH, cache_dir=str(tmp_path))
    shortcut = load_metric(cache_dir=str(tmp_path), experiment_id="shortcut")
    for m in (direct, shortcut):
        assert m.name == "knowledge_bits"
        assert set(m.features) == {"name_loss", "value_loss", "first_chunk_loss"}
        assert "2404.05405" in m.citation
    assert direct.compute(name_loss=[0.0], value_loss=[0.0], family="bioS")["n_people"] == 1


def test_bios_perfect_model_reaches_bits_max(metric):
    n = 10_000
    r = metric.compute(name_loss=[math.log(n)] * n, value_loss=[0.0] * n)
    assert r["bits"] == pytest.approx(r["bits_max"])
    assert r["bits_max"] == pytest.approx(bits.bios_bits_max(n).total)
    assert r["bits_per_person"] == pytest.approx(61.6, abs=0.05)  # spec §3 worked value for N = 10K
    assert r["diversity_bits"] == 0.0 and "p3" not in r and "bits_per_param" not in r


def test_bios_hand_computed(metric):
    r = metric.compute(name_loss=[1.0, 2.0, 3.0], value_loss=[4.0, 5.0, 6.0])  # p1 = 2, p2 = 5
    name_bits = 3 * (math.log2(400 * 400 * 1000) - 2 / LN2)
    value_bits = 3 * (math.log2(2 * 67_200 * 200 * 300 * 100 * 263) - 5 / LN2)
    assert (r["p1"], r["p2"], r["n_people"]) == (2.0, 5.0, 3)
    assert r["name_bits"] == pytest.approx(name_bits)
    assert r["value_bits"] == pytest.approx(value_bits)
    assert r["bits"] == pytest.approx(bits.bios_bits(3, 2.0, 5.0).total)
    assert r["bits_lower_bound"] == pytest.approx(bits.bios_bits_lower_bound(3, 2.0, 5.0).total)
    assert r["bits_lower_bound"] <= r["bits"]


def test_add_batch_twice_equals_one_compute(metric, tmp_path):
    rng = np.random.default_rng(0)
    name, value = rng.uniform(0, 20, 40), rng.uniform(0, 30, 40)
    metric.add_batch(name_loss=name[:25], value_loss=value[:25])
    metric.add_batch(name_loss=name[25:], value_loss=value[25:])
    batched = metric.compute(num_params=12_345)
    once = load_metric(cache_dir=str(tmp_path), experiment_id="once", family="bioS")
    assert batched == pytest.approx(once.compute(name_loss=name, value_loss=value, num_params=12_345))


def test_num_params_and_load_time_defaults(tmp_path):
    metric = load_metric(cache_dir=str(tmp_path), family="bioS", num_params=1_000, n_people=100)
    r = metric.compute(name_loss=[5.0, 7.0], value_loss=[10.0, 20.0])  # a sample of 2 out of N = 100
    assert r["bits_per_param"] == pytest.approx(r["bits"] / 1_000)
    assert r["bits_max_per_param"] == pytest.approx(bits.bios_bits_max(100).total / 1_000)
    assert r["bits"] == pytest.approx(bits.bios_bits(100, 6.0, 15.0).total)  # extrapolated from the sample
    assert (r["n_people"], r["n_evaluated"]) == (100, 2) and r["bits_stderr"] > 0
    r = metric.compute(name_loss=[5.0], value_loss=[10.0], num_params=2_000)  # compute() overrides load()
    assert r["bits_per_param"] == pytest.approx(r["bits"] / 2_000)


def test_biod_divides_value_and_first_chunk_losses_by_k(metric):
    population = BioDPopulation(
        n_people=200, n_attributes=4, chunks_per_value=2, diversity=30, chunk_length=3, alphabet=12
    )
    rng = np.random.default_rng(1)
    name, value, first = rng.uniform(5, 9, 200), rng.uniform(0, 8, 200), rng.uniform(0, 3, 200)
    r = metric.compute(name_loss=name, value_loss=value, first_chunk_loss=first, **population.to_config())
    p1, p2, p3 = name.mean(), value.mean() / 4, first.mean() / 4  # p2, p3: means over (person, attribute)
    assert (r["p1"], r["p2"], r["p3"]) == pytest.approx((p1, p2, p3))
    assert r["bits"] == pytest.approx(bits.biod_bits(population.shape, p1, p2, p3).total)
    assert r["diversity_bits"] == pytest.approx(bits.biod_bits(population.shape, p1, p2, p3).diversity_bits)
    assert r["bits_max"] == pytest.approx(bits.biod_bits_max(population.shape).total)


def test_biod_through_config_name(tmp_path):
    shape = {"n_attributes": 2, "chunks_per_value": 1, "diversity": 4, "chunk_length": 2, "alphabet": 3}
    metric = load_metric(config_name="bioD", cache_dir=str(tmp_path), **shape)
    r = metric.compute(name_loss=[1.0, 2.0], value_loss=[0.5, 0.5], first_chunk_loss=[0.2, 0.4])
    assert r["bits"] == pytest.approx(bits.biod_bits(bits.BioDShape(2, **shape), 1.5, 0.25, 0.15).total)


@pytest.mark.parametrize(
    ("inputs", "settings", "message"),
    [
        ({"name_loss": [1.0, -0.5], "value_loss": [1.0, 1.0]}, {}, "finite losses >= 0"),
        (
            {"name_loss": [1.0], "value_loss": [1.0], "first_chunk_loss": [1.0]},
            {"family": "bioD", "n_attributes": 2, "chunks_per_value": 1, "diversity": 4, "chunk_length": 2},
            "missing \\['alphabet'\\]",
        ),
        ({"name_loss": [1.0, 1.0, 1.0], "value_loss": [1.0, 1.0, 1.0]}, {"n_people": 2}, "smaller than the 3 people"),
        ({"name_loss": [1.0], "value_loss": [1.0]}, {"family": "bioX"}, "unknown family 'bioX'"),
        ({"name_loss": [1.0], "value_loss": [1.0], "first_chunk_loss": [1.0]}, {}, "only applies to family='bioD'"),
    ],
)
def test_errors_say_what_is_wrong(metric, inputs, settings, message):
    with pytest.raises(ValueError, match=message):
        metric.compute(**inputs, **settings)


def test_unknown_family_or_setting_at_load(tmp_path):
    with pytest.raises(ValueError, match="unknown family"):
        load_metric(config_name="bioX", cache_dir=str(tmp_path))
    with pytest.raises(TypeError, match="unknown settings \\['num_param'\\]"):
        load_metric(num_param=10, cache_dir=str(tmp_path))


class PartialOracle(torch.nn.Module):
    """A tiny 'model' that half knows the next token: intermediate losses, so no bits term is clipped to 0."""

    def __init__(self, vocab_size: int, confidence: float = 8.0):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 4)
        self.confidence = confidence
        self.config = SimpleNamespace(position_embedding_type="rotary")

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.embed.num_embeddings)
        logits[:, :-1].scatter_(-1, input_ids[:, 1:, None], self.confidence)
        return SimpleNamespace(logits=logits)


def tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=256))


@pytest.mark.parametrize("data_name", ["bios_data", "biod_data"])
@pytest.mark.parametrize("model_kind", ["partial_oracle", "tiny_gpt2"])
def test_metric_inputs_give_the_bits_of_evaluate_knowledge(metric, request, data_name, model_kind):
    data = request.getfixturevalue(data_name)
    vocab = len(data.tokenizer)
    model = PartialOracle(vocab) if model_kind == "partial_oracle" else tiny_gpt2(vocab)
    report = evaluate_knowledge(model, data, progress=False)
    inputs = metric_inputs(span_losses(model, data, progress=False), data, model=model)
    result = metric.compute(**inputs)
    assert result["bits"] == pytest.approx(report.bits.total, abs=1e-6)
    assert (result["p1"], result["p2"]) == (pytest.approx(report.p1, abs=1e-9), pytest.approx(report.p2, abs=1e-9))
    assert result.get("p3") == (None if report.p3 is None else pytest.approx(report.p3, abs=1e-9))
    assert result["bits_per_param"] == pytest.approx(report.bits_per_param, abs=1e-9)
    assert inputs["num_params"] == num_params_for_metric(model, data) == report.num_params.paper_params
    if model_kind == "partial_oracle":  # a real test of the sums: no term clipped at 0
        assert 0 < result["name_bits"] and 0 < result["value_bits"] and result["bits"] < result["bits_max"]
    # the report itself gives the same bits (its inputs repeat the mean losses)
    from_report = metric.compute(**metric_inputs(report, data))
    assert from_report["bits"] == pytest.approx(report.bits.total, abs=1e-6)
    assert from_report["bits_per_param"] == pytest.approx(report.bits_per_param, abs=1e-9)


def test_the_natural_guess_is_wrong_and_metric_inputs_of_a_subsample_extrapolate(metric, bios_data):
    model = PartialOracle(len(bios_data.tokenizer))
    losses = span_losses(model, bios_data, progress=False)
    guess = metric.compute(name_loss=losses.name_loss, value_loss=losses.value_loss.sum(1))
    assert guess["bits"] != pytest.approx(evaluate_knowledge(model, bios_data, progress=False).bits.total)

    report = evaluate_knowledge(model, bios_data, max_people=50, progress=False)
    people = np.sort(np.random.default_rng(0).choice(bios_data.population.n_people, size=50, replace=False))
    inputs = metric_inputs(span_losses(model, bios_data, people, progress=False), bios_data)
    result = metric.compute(**inputs)
    assert (result["n_people"], result["n_evaluated"]) == (300, 50) and "num_params" not in inputs
    assert result["bits"] == pytest.approx(report.bits.total, abs=1e-6) and result["bits_stderr"] > 0


def test_metric_inputs_say_what_they_need(biod_data):
    with pytest.raises(TypeError, match="SpanLosses"):
        metric_inputs({"name_loss": [1.0]})
    report = evaluate_knowledge(PartialOracle(len(biod_data.tokenizer)), biod_data, max_people=5, progress=False)
    with pytest.raises(ValueError, match="needs its data"):
        metric_inputs(report)


def test_the_family_is_required_unless_the_inputs_say_it(tmp_path):
    """Plain name and value losses fit bioS and bioD alike: a bioD run's losses read as bioS give other bits."""
    metric = load_metric(cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"family is missing.*family='bioS' or family='bioD'.*metric_inputs"):
        metric.compute(name_loss=[1.0, 2.0], value_loss=[0.5, 0.5])
    shape = dict(n_attributes=2, chunks_per_value=1, diversity=4, chunk_length=2, alphabet=3)
    read = metric.compute(name_loss=[1.0, 2.0], value_loss=[0.5, 0.5], first_chunk_loss=[0.2, 0.4], **shape)
    assert read["bits"] == pytest.approx(64.36, abs=0.01)  # first_chunk_loss and K, C, D, L, T only exist in bioD
