"""Quantized capacity: GPTQ (the paper's method) next to bitsandbytes, from the math of one layer to a trained run."""

import json

import numpy as np
import pytest
import torch

from hf_capacity.data import BioDPopulation, KnowledgeData
from hf_capacity.quantization import (
    calibration_batches,
    check_schemes,
    gptq_quantize_model,
    gptq_quantize_weight,
    quantized_capacity,
    round_to_nearest_weight,
)
from hf_capacity.training import CapacityTrainingConfig, train_capacity


def correlated_inputs(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs with a few dominant directions, like a trained model's activations."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) * torch.logspace(0, -2, width)[:, None]
    return torch.randn(n, width, generator=g) @ mixing


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_gives_a_lower_layer_output_error_than_round_to_nearest(bits):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(48, 64, generator=g) / 8
    x = correlated_inputs(2048, 64)
    hessian = 2 * x.T.double() @ x.double() / x.shape[0]
    gptq = gptq_quantize_weight(weight, hessian, bits)
    rtn = round_to_nearest_weight(weight, bits)
    error = {name: ((x @ weight.T - x @ q.T) ** 2).mean().item() for name, q in (("gptq", gptq), ("rtn", rtn))}
    assert error["gptq"] < 0.7 * error["rtn"], error
    # every row of every 128-column group holds at most 2^bits levels of one symmetric grid
    for row in gptq:
        assert len(torch.unique(row)) <= 2**bits


def test_gptq_groups_have_their_own_scales():
    weight = torch.cat([torch.full((2, 4), 0.01), torch.full((2, 4), 10.0)], dim=1)
    weight[:, 0] = 0.02
    q = round_to_nearest_weight(weight, 4, group_size=4)
    assert torch.allclose(q[:, :4], weight[:, :4], atol=0.002)  # a shared scale would zero the small group


def test_check_schemes_names_every_choice():
    assert check_schemes(["int8", "gptq-int4"]) == ("int8", "gptq-int4")
    with pytest.raises(ValueError, match="gptq-int4"):
        check_schemes(["int4"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny bioD run that stores something, trained once for the module."""
    out = tmp_path_factory.mktemp("gptq") / "run"
    config = CapacityTrainingConfig(
        output_dir=str(out), dataset="bioD", n_people=60, model="gpt2-1-2", head_dim=16, context_length=128,
        biod={"n_attributes": 2, "chunks_per_value": 2, "diversity": 20, "chunk_length": 1, "alphabet": 20},
        batch_size=4, learning_rate=1e-2, warmup_steps=10, exposures=60, progress=False,
        quantized=("int8", "gptq-int8", "gptq-int4"))
    report, _ = train_capacity(config)
    return out, report


def test_a_trained_run_reports_gptq_bits_next_to_bitsandbytes(trained_run):
    out, report = trained_run
    results = json.loads((out / "results.json").read_text())
    assert report.bits.total > 0.2 * report.bits_max.total  # it learned something to lose
    q = results["quantized"]
    assert set(q) == {"int8", "gptq-int8", "gptq-int4"}
    assert q["gptq-int8"]["ratio_to_full_precision"] == pytest.approx(1.0, abs=0.03)
    assert 0 <= q["gptq-int4"]["bits"] <= report.bits.total * 1.02
    card = (out / "README.md").read_text()
    assert "gptq-int4" in card


def test_gptq_quantizes_every_block_linear_and_leaves_the_embedding(trained_run):
    out, _ = trained_run
    data = KnowledgeData.load(out)
    from hf_capacity.models.registration import load_causal_lm

    model = load_causal_lm(out).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gptq_quantize_model(model, calibration_batches(data, context_length=128), bits=4)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head}
    assert changed == {f"{n}.weight" for n in linear}
    for name in changed:  # 4-bit: at most 16 levels a row (one group: the rows are narrower than 128)
        weight = dict(model.named_parameters())[name]
        assert max(len(torch.unique(row)) for row in weight) <= 16


def test_quantized_capacity_of_a_folder_does_not_change_it(trained_run):
    out, report = trained_run
    data = KnowledgeData.load(out)
    weights = (out / "model.safetensors").read_bytes()
    results = quantized_capacity(out, data, ("gptq-int8",), full_precision=report, progress=False)
    assert results["gptq-int8"].report.num_params == report.num_params
    assert (out / "model.safetensors").read_bytes() == weights


def test_calibration_text_is_a_thousand_training_biographies():
    data = KnowledgeData.create(BioDPopulation(1500, n_attributes=1, chunks_per_value=4, diversity=50, chunk_length=1,
                                               alphabet=50), vocab_size=600)
    batches = calibration_batches(data, context_length=256)
    tokens = torch.cat([b.reshape(-1) for b in batches])
    rendered = data.renderer.render(np.arange(1000), 0).tokens
    assert tokens.tolist() == rendered.tolist()
