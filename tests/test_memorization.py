"""Memorization capacity on random data: exact information, memorized bits of a trained model, the plateau fit."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hf_capacity.data.random_sequences import RandomSequences
from hf_capacity.memorization import memorized_bits, relative_memorization
from hf_capacity.memorization_fit import fit_memorization_plateau
from hf_capacity.models.capacity_gpt2 import CapacityGPT2Config, CapacityGPT2ForCausalLM


def test_random_sequences_carry_exactly_n_s_log2_v_bits():
    data = RandomSequences(n_sequences=100, length=32, vocab_size=64, seed=3)
    assert data.entropy_bits == 100 * 32 * 6 and data.bits_per_sequence == 192
    ids = data.input_ids()
    assert ids.shape == (100, 33) and (ids[:, 0] == 64).all() and ids[:, 1:].max() < 64
    assert (RandomSequences(200, 32, 64, seed=3).tokens()[:100] == data.tokens()).all()  # a larger N extends it
    assert not (data.held_out().tokens() == data.tokens()).all(axis=1).any()
    assert data.to_dataset()[0]["input_ids"] == ids[0].tolist()
    with pytest.raises(ValueError, match="vocab_size"):
        RandomSequences(10, 8, 1)


def test_a_trained_model_memorizes_its_set_and_nothing_of_a_held_out_one():
    data = RandomSequences(n_sequences=32, length=16, vocab_size=16, seed=0)
    torch.manual_seed(0)
    config = CapacityGPT2Config(vocab_size=data.model_vocab_size, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=2, max_position_embeddings=32)
    model = CapacityGPT2ForCausalLM(config)
    untrained = memorized_bits(model, data)
    ids = torch.as_tensor(data.input_ids())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):  # full-batch steps over the 32 sequences
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained = memorized_bits(model, data)
    held_out = memorized_bits(model, data.held_out())
    assert untrained.bits_total < 0.02 * data.entropy_bits
    assert trained.bits_total > 0.3 * data.entropy_bits  # 2,048 bits in the set
    assert held_out.bits_total < 0.02 * data.entropy_bits
    assert trained.bits_per_param == pytest.approx(trained.bits_total / sum(p.numel() for p in model.parameters()))
    # against the untrained model as reference, the trained one memorized at least what it did in absolute terms
    text = relative_memorization(model, CapacityGPT2ForCausalLM(config), data.input_ids())
    assert text.bits_total > 0.5 * trained.bits_total


@pytest.mark.parametrize("capacity, k", [(5e4, 3.0), (2e5, 1.5)])
def test_the_plateau_fit_recovers_a_known_capacity(capacity, k):
    data_bits = np.geomspace(capacity / 20, capacity * 20, 12)
    exact = (data_bits ** -k + capacity ** -k) ** (-1 / k)
    covered = 0
    for draw in range(8):  # 2% noise on every point, 8 independent curves
        noisy = exact * (1 + 0.02 * np.random.default_rng(draw).standard_normal(exact.size))
        fit = fit_memorization_plateau(data_bits, noisy, num_params=10_000, n_bootstrap=60, seed=draw)
        assert fit.capacity_bits == pytest.approx(capacity, rel=0.05)
        covered += fit.ci[0] <= capacity <= fit.ci[1]
    assert covered >= 6  # a 95% interval covers the truth most of the time
    assert fit.bits_per_param == pytest.approx(fit.capacity_bits / 10_000)
    assert fit.predict(capacity * 1e3) == pytest.approx(fit.capacity_bits, rel=1e-3)


def test_the_plateau_fit_refuses_a_curve_without_a_plateau():
    data_bits = np.geomspace(1e3, 1e5, 6)
    with pytest.raises(ValueError, match="plateau is beyond the data"):
        fit_memorization_plateau(data_bits, 0.99 * data_bits)
    assert math.isfinite(fit_memorization_plateau(data_bits, np.minimum(data_bits, 2e4), n_bootstrap=0).capacity_bits)


def test_the_plateau_fit_refuses_a_larger_set_that_memorized_much_less():
    """A run far past the corner that had not got going in its budget (0.98 bits/param where smaller sets gave
    3.05) is not a point of a rising-then-flat curve: the fit says which set fell instead of fitting a low plateau."""
    data_bits = np.array([360_448.0, 720_896.0, 1_081_344.0, 1_802_240.0])
    memorized = np.array([355_782.0, 552_289.0, 554_234.0, 176_889.0])
    with pytest.raises(ValueError, match=r"the set of 1,802,240 bits memorized 176,889, 68% less than a smaller set"):
        fit_memorization_plateau(data_bits, memorized)
    memorized[-1] = 0.85 * memorized[-2]  # a fall within MAX_DROP: fitted
    assert 4.5e5 < fit_memorization_plateau(data_bits, memorized, n_bootstrap=0).capacity_bits < 5.6e5


def test_the_memorize_command_reports_memorized_and_held_out_bits(tmp_path, capsys):
    import json

    from hf_capacity.cli import main

    argv = ["memorize", "--N", "32", "--length", "16", "--vocab", "16", "--model", "gpt2-1-2", "--head-dim", "32",
            "--epochs", "120", "--batch-size", "32", "--lr", "3e-3", "--warmup-steps", "5", "--quiet", "--json",
            "-o", str(tmp_path / "mem")]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["data_bits"] == 32 * 16 * 4
    assert result["memorized_bits"] > 0.2 * result["data_bits"] and result["heldout_memorized_bits"] < 50
    saved = json.loads((tmp_path / "mem" / "memorization.json").read_text())
    assert [h["step"] for h in saved["history"]][-1] == 120 and saved["bits_per_param"] > 0
    assert main(["memorize", "--model", "llama-1-1", "-o", str(tmp_path / "x")]) == 2
    assert main(["memorize", "--min-lr-ratio", "1.5", "-o", str(tmp_path / "y")]) == 2  # a floor above the peak
    assert "min_lr_ratio must be in [0, 1]" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_the_study_figure_draws_runs_plateaus_and_the_reference(tmp_path):
    """Two models over a ladder of data sizes, each with its plateau fit and the 3.6 bits/param line."""
    from matplotlib.image import imread

    from hf_capacity.plots import plot_memorization

    rows = []
    for model, params in (("gpt2-1-1", 10_000), ("gpt2-1-2", 40_000)):
        for precision in ("fp32", "bf16"):
            for n in (16, 32, 64, 128, 256, 512):
                data_bits = n * 64 * 9.0
                rows.append({"model": model, "head_dim": 32, "precision": precision, "num_params": params,
                             "data_bits": data_bits, "memorized_bits": float(min(data_bits, 3.0 * params))})
    df = pd.DataFrame(rows)
    fits = {(m, h, p): fit_memorization_plateau(g.data_bits, g.memorized_bits, num_params=int(g.num_params.iloc[0]),
                                                n_bootstrap=20)
            for (m, h, p), g in df.groupby(["model", "head_dim", "precision"])}
    shown = str(fits[("gpt2-1-2", 32, "fp32")])
    assert shown.startswith("plateau 1") and "3.00 bits/param" in shown
    path = plot_memorization(df, tmp_path / "memorization.png", fits=fits)
    assert imread(path).shape[0] > 300
    with pytest.raises(ValueError, match="needs a 'num_params' column"):
        plot_memorization(df.drop(columns="num_params"), tmp_path / "x.png")


def test_a_memorize_run_folder_is_loadable_and_re_measures_to_its_recorded_bits(tmp_path, capsys):
    import json

    from transformers import AutoModelForCausalLM

    from hf_capacity.cli import main

    out = tmp_path / "mem"
    argv = ["memorize", "--N", "24", "--length", "12", "--vocab", "16", "--model", "gpt2-1-2", "--head-dim", "16",
            "--epochs", "60", "--batch-size", "24", "--lr", "5e-3", "--warmup-steps", "3", "--seed", "4", "--quiet",
            "--json", "-o", str(out)]
    assert main(argv) == 0
    recorded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    config = json.loads((out / "memorization_run.json").read_text())
    assert {config[k] for k in ("seed", "batch_size", "learning_rate", "precision")} == {4, 24, 5e-3, "fp32"}
    assert config["warmup_steps_run"] == 3 and config["steps"] == 60
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)  # plain transformers
    assert sum(p.numel() for p in model.parameters()) == recorded["num_params"]
    assert main(["memorize", "--eval", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["memorized_bits"] == pytest.approx(recorded["memorized_bits"], rel=1e-5, abs=1e-3)
    assert again["heldout_memorized_bits"] == pytest.approx(recorded["heldout_memorized_bits"], abs=1e-3)
    assert recorded["memorized_bits"] > 0.1 * recorded["data_bits"]
    assert main(["memorize", "--eval", str(tmp_path)]) == 2  # not a run folder: one line, exit 2


def test_the_stop_rule_reads_the_last_fifth_of_the_curve():
    from hf_capacity.memorization import saturation

    rising = [{"step": s, "memorized_bits": 100.0 * s} for s in range(0, 101, 10)]
    flat = rising[:6] + [{"step": s, "memorized_bits": 500.0 + 0.01 * s} for s in range(60, 101, 10)]
    assert not saturation(rising)["saturated"] and saturation(rising)["from_step"] == 80
    verdict = saturation(flat)
    assert verdict["saturated"] and verdict["relative_rise"] < 0.005 and verdict["to_step"] == 100
    assert not saturation(rising[:1])["saturated"] and saturation([])["relative_rise"] is None


@pytest.mark.parametrize("precision", ["bf16", "bf16-mixed", "bf16-sr"])
def test_bf16_runs_keep_their_weights_and_optimizer_state_as_they_say(tmp_path, precision):
    import json

    from hf_capacity.memorization import MemorizationRunConfig, train_memorization

    config = MemorizationRunConfig(output_dir=str(tmp_path / precision), n_sequences=16, length=8, vocab_size=16,
                                   model="gpt2-1-1", head_dim=16, epochs=40, batch_size=16, learning_rate=1e-2,
                                   warmup_steps=2, precision=precision, until_saturated=True, progress=False)
    result = train_memorization(config)
    saved = json.loads((tmp_path / precision / "config.json").read_text())
    assert saved["dtype"] == ("float32" if precision == "bf16-mixed" else "bfloat16")
    assert result["precision"] == precision and result["steps_trained"] <= 40
    assert result["saturation"]["saturated"] or result["steps_trained"] == 40


def test_until_saturated_stops_at_the_first_measurement_where_the_rule_holds_once_the_schedule_has_annealed(
        tmp_path):
    import torch
    from transformers import get_scheduler

    from hf_capacity.memorization import ANNEALED_LR_FRACTION, MemorizationRunConfig, saturation, train_memorization

    config = MemorizationRunConfig(output_dir=str(tmp_path / "sat"), n_sequences=4, length=8, vocab_size=4,
                                   model="gpt2-1-1", head_dim=16, epochs=150, batch_size=4, learning_rate=3e-2,
                                   warmup_steps=2, eval_steps=5, until_saturated=True, progress=False)
    result = train_memorization(config)
    history = result["history"]
    # the learning rate after each step, from the same schedule the run used
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)
    schedule = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=config.warmup,
                             num_training_steps=config.steps, scheduler_specific_kwargs={"min_lr_rate": 0.1})
    lr = [config.learning_rate * 0]
    for _ in range(config.steps):
        optimizer.step()
        schedule.step()
        lr.append(schedule.get_last_lr()[0])
    flat = [h["step"] for i, h in enumerate(history) if saturation(history[: i + 1])["saturated"]]
    annealed = [step for step in flat if lr[step] <= ANNEALED_LR_FRACTION * config.learning_rate]
    assert result["steps_trained"] == annealed[0] == history[-1]["step"] < config.steps
    assert result["saturation"]["saturated"]


def test_a_flat_curve_stops_a_run_only_once_the_learning_rate_has_annealed():
    from hf_capacity.memorization import stops_here

    flat = [{"step": s, "memorized_bits": 1000.0} for s in range(0, 101, 10)]
    rising = [{"step": s, "memorized_bits": 10.0 * s} for s in range(0, 101, 10)]
    assert not stops_here(flat, learning_rate=0.9e-2, peak_learning_rate=1e-2)  # a plateau at the peak rate
    assert stops_here(flat, learning_rate=0.2e-2, peak_learning_rate=1e-2)  # the same plateau, annealed
    assert not stops_here(rising, learning_rate=0.1e-2, peak_learning_rate=1e-2)  # annealed but still rising


def test_memorize_again_on_its_folder_resumes_a_killed_run_and_refuses_a_finished_or_different_one(
        tmp_path, capsys, monkeypatch):
    import json

    import hf_capacity.memorization as memorization
    from hf_capacity.cli import main

    out = tmp_path / "mem"
    argv = ["memorize", "--N", "8", "--length", "8", "--vocab", "16", "--model", "gpt2-1-1", "--head-dim", "16",
            "--epochs", "10", "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "2", "--eval-steps", "5",
            "--save-steps", "5", "--quiet", "--json", "-o", str(out)]

    def killed(*args, **kwargs):  # the process dies after training, before writing its result
        raise KeyboardInterrupt

    monkeypatch.setattr(memorization, "_result", killed)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    monkeypatch.undo()
    assert (out / "checkpoint-20").is_dir() and not (out / "memorization.json").exists()
    recorded = json.loads((out / "memorization_run.json").read_text())  # written before the first step
    assert recorded["save_steps"] == 5 and recorded["steps"] == 20
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0  # what `hf-capacity status` makes of the killed run
    [killed_run] = json.loads(capsys.readouterr().out)
    assert killed_run["status"] == "incomplete" and killed_run["checkpoint"] == "checkpoint-20"
    assert (killed_run["step"], killed_run["max_steps"], killed_run["exposures"]) == (20, 20, 10)  # epochs

    assert main([*argv[:-2], "--save-steps", "7", "-o", str(out)]) == 0  # how often it saves may change
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"resuming from {out / 'checkpoint-20'}"
    result = json.loads(lines[-1])
    assert result["steps_trained"] == 20 and result["memorized_bits"] > 0
    saved = json.loads((out / "memorization.json").read_text())
    assert [h["step"] for h in saved["history"]] == [5, 10, 15, 20] and not list(out.glob("checkpoint-*"))
    measured_step = round(killed_run["measured_exposures"] * 2)  # 2 steps an epoch
    [entry] = [h for h in saved["history"] if h["step"] == measured_step]
    assert killed_run["measured_bits_per_param"] == pytest.approx(entry["memorized_bits_per_param"])
    assert main(["status", str(tmp_path)]) == 0  # a folder of runs: this one, now done
    assert f"{result['bits_per_param']:.3f} bits/param" in capsys.readouterr().out

    assert main(argv) == 2  # finished: not trained again
    assert f"error: {out} holds a finished run (memorization.json)" in capsys.readouterr().err
    (out / "memorization.json").unlink()
    assert main([*argv[:-2], "--lr", "2e-2", "--seed", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {out} holds another run (seed 0 → 1, learning_rate 0.01 → 0.02;" in err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_memorize_trains_with_the_fused_loss_by_default_and_memorizes_what_the_plain_head_does(
        tmp_path, capsys, precision):
    import json

    from hf_capacity.cli import main

    results = {}
    for flag in ("--fused-loss", "--no-fused-loss"):
        out = tmp_path / flag
        argv = ["memorize", "--N", "24", "--length", "12", "--vocab", "16", "--model", "gpt2-1-1", "--head-dim", "16",
                "--epochs", "40", "--batch-size", "8", "--lr", "5e-3", "--warmup-steps", "3", "--precision",
                precision, "--quiet", "--json", "-o", str(out)]
        assert main(argv + [flag] if flag == "--no-fused-loss" else argv) == 0  # the default: fused
        results[flag] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert json.loads((out / "memorization_run.json").read_text())["fused_loss"] is (flag == "--fused-loss")
    fused, plain = results["--fused-loss"]["memorized_bits"], results["--no-fused-loss"]["memorized_bits"]
    assert plain > 0.1 * results["--no-fused-loss"]["data_bits"], results
    # the same loss and gradients up to float rounding: 120 AdamW steps end within a few percent of each other
    assert fused == pytest.approx(plain, rel=0.03 if precision == "fp32" else 0.1)


@pytest.mark.parametrize("learning_rate", [1e-3, 3e-3, 1e-2])
def test_the_bf16_stalled_share_is_the_share_of_bf16_weights_an_update_of_that_size_leaves_unchanged(learning_rate):
    """Each bf16 weight moved away from zero by ``learning_rate`` (computed exactly, then stored in bf16, as an
    in-place AdamW step on bf16 weights does): the share that comes back unchanged is what the diagnostic says."""
    from hf_capacity.memorization import bf16_stalled_share

    weights = (2 * torch.randn(50_000, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    stepped = (weights.float() + torch.sign(weights.float()) * learning_rate).to(torch.bfloat16)
    unchanged = (stepped == weights).float().mean().item()
    share = bf16_stalled_share([weights], learning_rate)
    assert share == pytest.approx(unchanged, abs=1e-9) and 0.01 < share < 0.99
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)  # a model, or its state dict, reads the same
    assert bf16_stalled_share(model, learning_rate) == bf16_stalled_share(model.state_dict(), learning_rate)
    with pytest.raises(ValueError, match="learning rate > 0"):
        bf16_stalled_share(model, 0.0)
