"""Sweeps: a YAML grid of tiny runs → run folders → results.csv; resuming, failures, validation, fit and plot."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import hf_capacity.sweep.runner as sweep_module
from hf_capacity.callbacks import TrainingDivergedError
from hf_capacity.cli import CLIError, build_parser, main
from hf_capacity.sweep import (
    SweepConfigError,
    SweepRunFailed,
    architecture_label,
    load_sweep,
    parse_shard,
    rebuild_table,
    run_sweep,
    sweep_progress,
)
from hf_capacity.training import build_data, steps_for_exposures

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "n_people": 8, "model": "gpt2-1-1", "head_dim": 16, "context_length": 128, "batch_size": 4, "vocab_size": 400,
    "max_steps": 4, "exposures": 1, "progress": False, "warmup_steps": 1, "logging_steps": 2, "eval_steps": 2,
}


def tiny_config(output_dir, **extra) -> dict:
    return {"name": "tiny", "output_dir": str(output_dir), "base": dict(TINY), **extra}


def cli(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


def no_training(config, *args, **kwargs):
    raise AssertionError(f"trained {config.output_dir}, which should have been skipped")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Two really tiny runs (seed 0 and 1), trained once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    table = run_sweep(tiny_config(out, grid={"seed": [0, 1]}), log=lambda line: None)
    return out, table


@pytest.fixture
def sweep_copy(tiny_sweep, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_sweep[0], out)
    return out


def test_sweep_writes_one_row_per_run(tiny_sweep):
    out, table = tiny_sweep
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 2 and (out / "results.parquet").is_file()
    assert list(csv["status"]) == ["done", "done"] and list(csv["seed"]) == [0, 1]
    assert (csv["bits_max"] > 0).all() and (csv["num_params"] > 0).all()
    assert (csv["num_params_total"] >= csv["num_params"]).all()
    assert (csv["steps"] == 4).all() and (csv["tokens"] == 4 * 4 * 128).all() and csv["train_loss_final"].gt(0).all()
    for run_id in csv["run_id"]:
        folder = out / "runs" / run_id
        assert (folder / "results.json").is_file() and (folder / "DONE").is_file()
        assert run_id.startswith("gpt2-1-1_N8_E1_seed")
    # ids are deterministic, and the table can be rebuilt from the folders alone
    assert [r.run_id for r in load_sweep(tiny_config(out, grid={"seed": [0, 1]})).plan()] == list(csv["run_id"])
    rebuilt = rebuild_table(out, write=False)
    assert list(rebuilt["run_id"]) == list(csv["run_id"])
    assert rebuilt["bits_max"].tolist() == pytest.approx(csv["bits_max"].tolist())


def test_rerun_skips_finished_runs(sweep_copy, monkeypatch):
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    lines = []
    table = run_sweep(tiny_config(sweep_copy, grid={"seed": [0, 1]}), log=lines.append)
    assert list(table["status"]) == ["done", "done"]
    assert sum("skipped (done)" in line for line in lines) == 2


def test_crashed_run_is_cleaned_and_rerun(sweep_copy, monkeypatch):
    first = sorted((sweep_copy / "runs").iterdir())[0]
    (first / "DONE").unlink()  # as if the process died after results.json
    (first / "stale.bin").write_text("left over by the crash")
    real = sweep_module.train_capacity
    seen = []

    def checked(config, *args, **kwargs):
        seen.append(config.output_dir)
        assert not (first / "stale.bin").exists(), "the crashed run's folder was not cleaned"
        return real(config, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "train_capacity", checked)
    table = run_sweep(tiny_config(sweep_copy, grid={"seed": [0, 1]}), log=lambda line: None)
    assert seen == [str(first)]
    assert list(table["status"]) == ["done", "done"] and (first / "DONE").is_file()


def test_an_unfinished_run_with_a_checkpoint_resumes_from_it(tmp_path):
    config = tiny_config(tmp_path / "ckpt", base={**TINY, "save_steps": 2})
    run_sweep(config, log=lambda line: None)
    folder = next((tmp_path / "ckpt" / "runs").iterdir())
    finished = json.loads((folder / "results.json").read_text())
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # as if the process had been killed after its step-2 checkpoint
    shutil.rmtree(folder / "checkpoint-4")
    for name in ("DONE", "results.json", "model.safetensors"):
        (folder / name).unlink()
    listing = run_sweep(config, dry_run=True, log=lambda line: None)
    assert list(listing["status"]) == ["incomplete (resume from checkpoint-2)"]
    lines = []
    table = run_sweep(config, log=lines.append)
    assert any("resuming from checkpoint-2" in line for line in lines)
    resumed = json.loads((folder / "results.json").read_text())
    assert list(table["status"]) == ["done"]
    assert (resumed["p1"], resumed["p2"], resumed["history"]) == (finished["p1"], finished["p2"], finished["history"])


def test_status_shows_how_far_each_run_has_got(tmp_path, capsys):
    out = tmp_path / "status"
    base = {**{k: v for k, v in TINY.items() if k != "max_steps"}, "exposures": 2, "save_steps": 2}
    run_sweep(tiny_config(out, base=base, grid={"seed": [0, 1, 2]}), max_runs=2, log=lambda line: None)  # 2 pending
    done, stopped = sorted((out / "runs").iterdir())
    steps = json.loads((stopped / "training_config.json").read_text())["applied"]["max_steps"]
    history = json.loads((stopped / "results.json").read_text())["history"]
    # seed 1 as if killed after its first checkpoint, before its log said more
    first = min(int(p.name.split("-")[1]) for p in stopped.glob("checkpoint-*"))
    for checkpoint in stopped.glob("checkpoint-*"):
        if checkpoint.name != f"checkpoint-{first}":
            shutil.rmtree(checkpoint)
    for name in ("DONE", "results.json", "model.safetensors", "train_log.txt"):
        (stopped / name).unlink()
    table = sweep_progress(out)
    assert list(table["status"]) == ["done", "incomplete", "pending"]
    row, measured = table.iloc[1], next(h for h in history if h["step"] == first)
    assert (row["step"], row["max_steps"], row["checkpoint"]) == (first, steps, f"checkpoint-{first}")
    assert row["exposures"] == pytest.approx(2 * first / steps)  # one pass over 2 exposures
    assert row["measured_bits_per_param"] == pytest.approx(measured["bits_per_param"])
    assert row["measured_exposures"] == pytest.approx(measured["exposures"], abs=1e-4)  # as on its knowledge curve
    # what the Trainer printed since the checkpoint: the run got that far, and measured this there
    (stopped / "train_log.txt").write_text(
        "{'knowledge_bits': '12.5', 'bits_per_param': '0.5', 'fraction_learned': '0.25', 'epoch': '0.7'}\n"
        "{'loss': '5.1', 'grad_norm': '1.2', 'epoch': '0.75'}\n")
    row = sweep_progress(out).iloc[1]
    assert row["step"] == round(0.75 * steps)
    assert (row["measured_bits_per_param"], row["measured_fraction_learned"]) == (0.5, 0.25)
    assert row["measured_exposures"] == pytest.approx(1.4)
    cli(["status", str(out)])
    text = capsys.readouterr().out
    assert "3 runs: 1 done, 1 incomplete, 0 failed, 1 pending" in text
    assert f"{round(0.75 * steps)} / {steps} (75%)" in text and "1.5 / 2" in text
    assert f"{table.iloc[0]['bits_per_param']:.3f} bits/param" in text
    cli(["status", str(done), "--json"])  # one run folder
    [record] = json.loads(capsys.readouterr().out)
    assert record["status"] == "done" and record["trained"] == 1.0
    assert record["bits_per_param"] == pytest.approx(json.loads((done / "results.json").read_text())["bits_per_param"])
    with pytest.raises(CLIError, match="neither a sweep folder"):
        cli(["status", str(tmp_path)])


def test_failed_run_is_recorded_and_the_sweep_goes_on(sweep_copy, capsys):
    runs = sorted((sweep_copy / "runs").iterdir())
    shutil.rmtree(runs[1])  # seed 1 must train again, after the failing run
    config = tiny_config(sweep_copy, runs=[{"model": "gpt3-1-1"}, {"seed": 0}, {"seed": 1}])
    path = sweep_copy / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(CLIError, match="1 of 3 runs failed"):
        cli(["sweep", str(path)])
    table = pd.read_csv(sweep_copy / "results.csv")
    assert list(table["status"]) == ["failed", "done", "done"]
    assert "unknown model 'gpt3-1-1'" in table.loc[0, "error"]
    assert "failed: ValueError" in capsys.readouterr().out


def test_fail_fast_stops_at_the_first_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    config = tiny_config(tmp_path / "ff", runs=[{"model": "gpt3-1-1"}, {"seed": 0}])
    with pytest.raises(SweepRunFailed, match="gpt3-1-1"):
        run_sweep(config, fail_fast=True, log=lambda line: None)
    table = pd.read_csv(tmp_path / "ff" / "results.csv")
    assert list(table["status"]) == ["failed", "pending"]


def test_unknown_fields_are_named(tmp_path):
    with pytest.raises(SweepConfigError, match=r"base: unknown field\(s\) 'n_peple'.*did you mean 'n_people'"):
        load_sweep({"base": {"n_peple": 10}})
    with pytest.raises(SweepConfigError, match="'lerning_rate'.*Valid fields: .*learning_rate"):
        load_sweep({"grid": {"lerning_rate": [1e-3]}})
    with pytest.raises(SweepConfigError, match="biod.*'diversty'"):
        load_sweep({"base": {"biod": {"diversty": 10}}})
    with pytest.raises(SweepConfigError, match="training fields go under base"):
        load_sweep({"n_people": 10})
    with pytest.raises(SweepConfigError, match="grid.seed must be a non-empty list"):
        load_sweep({"grid": {"seed": 0}})
    with pytest.raises(SweepConfigError, match="top-level `output_dir:`"):
        load_sweep({"base": {"output_dir": "x"}})
    with pytest.raises(SweepConfigError, match="expected a number"):
        load_sweep({"base": {"learning_rate": "fast"}})


def test_grid_blocks_rules_and_nested_fields():
    sweep = load_sweep({
        "output_dir": "unused",
        "base": {"dataset": "bioD", "biod": {"diversity": 50}, "learning_rate": "1e-3"},  # YAML reads 1e-3 as text
        "grid": [{"n_people": [10_000, 1_000_000], "model": ["gpt2-1-1"]},
                 {"n_people": [100], "biod.alphabet": [8, 16]}],
        "rules": [{"when": {"n_people": [1_000_000]}, "set": {"learning_rate": 5e-4, "weight_decay": 0.01}}],
    })
    runs = sweep.plan()
    assert len(runs) == 4
    lr = {r.config["n_people"]: r.config["learning_rate"] for r in runs}
    assert lr == {10_000: 1e-3, 1_000_000: 5e-4, 100: 1e-3}
    assert runs[2].config["biod"] == {**runs[0].config["biod"], "alphabet": 8, "diversity": 50}
    assert runs[0].run_id.startswith("gpt2-1-1_bioD-K4C2D50L2T20_N10K_E100_seed0_")
    assert runs[1].run_id.split("_")[2] == "N1M"
    assert len({r.run_id for r in runs}) == 4


def test_dry_run_lists_runs_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    config = tiny_config(tmp_path / "dry", grid={"seed": [0, 1, 2, 3, 4]})
    config["base"].pop("max_steps")  # estimated from the data: ceil(E·N·tokens per bio / context / batch)
    path = tmp_path / "dry.yaml"
    path.write_text(yaml.safe_dump(config))
    cli(["sweep", str(path), "--dry-run", "--shard", "1/2"])
    out = capsys.readouterr().out
    assert "nothing was trained" in out and out.count("would run") == 2 and "seed1" in out and "seed3" in out
    assert not (tmp_path / "dry").exists()
    listing = run_sweep(config, dry_run=True, log=lambda line: None)
    assert list(listing["index"]) == [0, 1, 2, 3, 4]
    run = load_sweep(config).plan()[0].training_config()
    assert (listing["estimated_steps"] == steps_for_exposures(run, build_data(run))).all()
    assert parse_shard("1/2") == (1, 2)
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("2/2")


INVALID_RUNS = [  # each accepted by CapacityTrainingConfig, each refused by train_capacity before its first step
    ({"model": "gpt2-0-0"}, "gpt2-0-0: a model needs at least 1 layer and 1 head"),
    ({"vocab_size": 100}, "vocab_size must be >= 300"),
    ({"context_length": 4}, "context_length must be >= 8"),
    ({"eval_steps": 0}, "eval_steps must be >= 1"),
    ({"quantized": ["int4"]}, "unknown quantization scheme 'int4'"),
]


@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory):
    """A sweep of INVALID_RUNS, run for real: every run failed."""
    out = tmp_path_factory.mktemp("sweep") / "failed"
    table = run_sweep(tiny_config(out, runs=[run for run, _ in INVALID_RUNS]), log=lambda line: None)
    return out, table


def test_dry_run_rejects_every_run_the_real_run_rejects(failed_sweep, tmp_path, capsys):
    _, real = failed_sweep
    config = tiny_config(tmp_path / "dry", runs=[{"seed": 0}] + [run for run, _ in INVALID_RUNS])
    listing = run_sweep(config, dry_run=True, log=lambda line: None)
    assert list(listing["status"]) == ["would run"] + ["invalid"] * len(INVALID_RUNS)
    assert list(real["status"]) == ["failed"] * len(INVALID_RUNS)
    for (_, reason), dry_error, real_error in zip(INVALID_RUNS, listing["error"][1:], real["error"]):
        assert reason in dry_error and reason in real_error
    path = tmp_path / "dry.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: 5 of 6 runs would fail before training (gpt2-0-0_" in err
    assert "a model needs at least 1 layer and 1 head" in err and not (tmp_path / "dry").exists()


@pytest.mark.parametrize("command", ["fit", "plot"])
def test_fit_and_plot_say_when_no_run_finished(failed_sweep, command, capsys):
    out, table = failed_sweep
    for source in (out, out / "results.csv"):
        assert main([command, str(source)]) == 2
        err = capsys.readouterr().err
        first = out / "runs" / table["run_id"][0] / "error.json"
        assert err.startswith(f"hf-capacity: error: no finished run in {source}; 5 failed, see {first} (ValueError: ")
        assert err.count("\n") == 1


def test_a_diverged_sweep_run_exits_with_status_1(tmp_path, monkeypatch, capsys):
    def diverging(config, *args, **kwargs):
        raise TrainingDivergedError("the loss became nan at step 3", step=3)

    monkeypatch.setattr(sweep_module, "train_capacity", diverging)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "diverged")))
    assert main(["sweep", str(path), "--fail-fast"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed (TrainingDivergedError: the loss became nan at step 3)" in err
    assert main(["sweep", str(path)]) == 1
    assert "1 of 1 runs failed" in capsys.readouterr().err


def synthetic_results(path, n_runs=12, ratio=2.0):
    """A results.csv shaped like a capacity sweep at R* = ratio: bits = min(bits_max, R*·P)."""
    params = np.geomspace(1e5, 1e8, n_runs)
    n_people = np.where(np.arange(n_runs) % 2 == 0, 100_000, 1_000_000)
    bits_max = np.where(n_people == 100_000, 5.82e6, 5.49e7)
    tokens = n_people * 100 * 84.0
    non_embedding = params * 0.8
    loss = 1.8 + 400 / non_embedding**0.34 + 2000 / tokens**0.28
    table = pd.DataFrame({
        "run_id": [f"run{i}" for i in range(n_runs)], "status": "done", "model": "gpt2-4-4", "mlp_type": "",
        "num_experts": 0, "exposures": 100, "n_people": n_people, "num_params": params,
        "bits": np.minimum(bits_max, ratio * params),
        "bits_max": bits_max, "bits_per_param_nf4": np.minimum(bits_max / params, 0.7),
        "num_params_non_embedding": non_embedding, "tokens": tokens, "train_loss_final": loss,
    })
    table.loc[n_runs] = {**table.iloc[0].to_dict(), "run_id": "broken", "status": "failed", "bits": np.nan}
    table.to_csv(path, index=False)
    return table


def test_fit_recovers_two_bits_per_param(tmp_path, capsys):
    synthetic_results(tmp_path / "results.csv")
    cli(["fit", str(tmp_path / "results.csv"), "--json", "--n-bootstrap", "200"])
    result = json.loads(capsys.readouterr().out)
    groups = {row["precision"]: row for row in result["capacity"]}
    assert groups["fp32"]["architecture"] == "gpt2" and groups["fp32"]["exposures"] == 100
    assert groups["fp32"]["ratio_bits_per_param"] == pytest.approx(2.0, rel=1e-6)
    assert groups["fp32"]["ci_low"] <= 2.0 <= groups["fp32"]["ci_high"]
    assert groups["nf4"]["ratio_bits_per_param"] == pytest.approx(0.7, rel=1e-6)
    assert result["n_runs"] == 12 and result["loss_law"]["alpha"] > 0

    cli(["fit", str(tmp_path / "results.csv"), "--by", "architecture", "--n-bootstrap", "50", "--no-loss-fit"])
    out = capsys.readouterr().out
    assert "gpt2" in out and "2.000" in out and "loss-law fit not requested" in out
    with pytest.raises(CLIError, match="cannot group by"):
        cli(["fit", str(tmp_path / "results.csv"), "--by", "optimizer"])


def test_fit_says_when_loss_data_are_insufficient(tmp_path, capsys):
    synthetic_results(tmp_path / "results.csv", n_runs=4)
    cli(["fit", str(tmp_path / "results.csv"), "--n-bootstrap", "50"])
    assert "needs >= 5 finished runs" in capsys.readouterr().out


def test_fit_refuses_a_loss_law_the_runs_do_not_determine(tmp_path, capsys):
    table = synthetic_results(tmp_path / "results.csv")
    # losses that do not fall with size or data: any "law" fitted to them is noise
    table["train_loss_final"] = 2.0 + 0.01 * np.random.default_rng(0).standard_normal(len(table))
    table.to_csv(tmp_path / "results.csv", index=False)
    cli(["fit", str(tmp_path / "results.csv"), "--n-bootstrap", "50"])
    out = capsys.readouterr().out
    assert "Loss law (" not in out
    assert "not identifiable" in out


def test_plot_writes_pngs(tmp_path, capsys):
    synthetic_results(tmp_path / "results.csv")
    cli(["plot", str(tmp_path / "results.csv"), "--out", str(tmp_path / "figs")])
    paths = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[-1] for p in paths}
    assert names == {"capacity.png", "capacity_ratio.png", "capacity_ratio_precision.png"}
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_predict_caps_the_capacity_law_at_the_data(capsys):
    cli(["predict", "--params", "1e6", "4e6", "--N", "100000", "--json"])
    result = json.loads(capsys.readouterr().out)
    bits_max = result["bits_max"]  # bioS(100K): 58.2 bits a person
    assert bits_max == pytest.approx(5.8235e6, rel=1e-4)
    assert result["ratio_bits_per_param"] == 2.0 and "paper" in result["ratio_source"]
    small, large = result["capacity"]
    assert small["bits"] == 2e6 and large["bits"] == pytest.approx(bits_max)
    assert result["params_to_store_all"] == math.ceil(bits_max / 2)
    assert "loss_law" not in result


def test_predict_loss_with_the_published_law(capsys):
    cli(["predict", "--params", "70e9", "--tokens", "1.4e12", "--compute", "5.88e23", "--ratio", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["capacity"] == [{"params": 70e9, "bits": 70e9}]
    assert result["loss"][0]["loss_nats"] == pytest.approx(1.9367, abs=1e-4)  # Hoffmann et al. at Chinchilla
    optimal = result["compute_optimal"][0]
    assert 6 * optimal["params"] * optimal["tokens"] == pytest.approx(5.88e23)
    assert optimal["loss_nats"] <= result["loss"][0]["loss_nats"]


def test_predict_from_a_sweep_fit(tmp_path, capsys):
    synthetic_results(tmp_path / "results.csv", ratio=1.5)
    cli(["predict", "--fit", str(tmp_path / "results.csv"), "--group", "precision=fp32", "--params", "1e6",
         "--tokens", "1e9", "--n-bootstrap", "20"])
    out = capsys.readouterr().out
    assert "R = 1.500 bits/param" in out and "precision=fp32" in out
    assert "1,500,000" in out and "fitted to" in out
    with pytest.raises(CLIError, match="matches several groups; choose one of: .*precision=nf4"):
        cli(["predict", "--fit", str(tmp_path / "results.csv"), "--params", "1e6", "--n-bootstrap", "20"])
    with pytest.raises(CLIError, match="matches no group"):
        cli(["predict", "--fit", str(tmp_path / "results.csv"), "--group", "precision=int2", "--params", "1e6"])


@pytest.mark.parametrize("argv, message", [
    ([], "give --params"),
    (["--tokens", "1e9"], "--tokens needs --params"),
    (["--params", "-5"], "--params must be positive"),
    (["--params", "1e6", "--ratio", "0"], "--ratio must be a positive"),
])
def test_predict_rejects_bad_input(argv, message):
    with pytest.raises(CLIError, match=message):
        cli(["predict", *argv])


def test_knowledge_curves_are_kept_and_plotted(tiny_sweep, tmp_path, capsys):
    out, table = tiny_sweep
    curve = json.loads(table["knowledge_curve"].iloc[0])  # [[exposures, bits], ...] at steps 0, 2 and 4
    assert len(curve) == 3 and curve[0] == [0.0, 0.0] and 0 < curve[1][0] < curve[2][0]
    assert curve[2][0] == pytest.approx(table["exposures_trained"].iloc[0], rel=1e-3)
    cli(["plot", str(out), "--out", str(tmp_path / "figs")])
    paths = capsys.readouterr().out.split()
    assert str(tmp_path / "figs" / "knowledge_curves.png") in paths


def test_architecture_labels():
    assert architecture_label("gpt2-4-4") == "gpt2"
    assert architecture_label("gpt2-4-4", "quarter") == "gpt2-quarter"
    assert architecture_label("gpt2-4-4", None, 32) == "gpt2-moe32"
    assert architecture_label("llama-2-2", "gated") == "llama"
    assert architecture_label("llama-2-2", "standard") == "llama-standard"


def test_precision_table_has_a_row_per_run_and_precision(tmp_path):
    from hf_capacity.sweep import precision_table

    table = run_sweep(tiny_config(tmp_path / "q", base={**TINY, "quantized": ["int8"]}), log=lambda line: None)
    rows = precision_table(table)
    assert list(rows["precision"]) == ["fp32", "int8"]
    assert rows["P"].nunique() == 1 and (rows["mlp_type"] == "standard").all() and (rows["exposures"] == 1).all()
    assert rows["R_max"].iloc[0] == pytest.approx(table["bits_max"].iloc[0] / table["num_params"].iloc[0])
    assert rows["bits_per_param"].tolist() == pytest.approx((rows["bits"] / rows["P"]).tolist())


def test_capacity_law_table_and_figure_of_a_sweep(tmp_path, tiny_sweep):
    from hf_capacity.plots import plot_capacity_law
    from hf_capacity.sweep import capacity_law_table

    _, table = tiny_sweep
    rows = capacity_law_table(table)
    run = table.iloc[0]
    assert len(rows) == len(table) and rows["P"].iloc[0] == run["num_params"]
    assert rows["layers"].iloc[0] == int(run["model"].split("-")[1])
    assert rows["width"].iloc[0] == int(run["model"].split("-")[2]) * run["head_dim"]
    assert rows["non_embedding_share"].iloc[0] == pytest.approx(run["num_params_non_embedding"] / run["num_params"])
    assert rows["R_max"].iloc[0] == pytest.approx(run["bits_max"] / run["num_params"])
    assert set(rows["vocabulary"]) == {"whole"}  # fit_vocabulary is opt-in
    rows = rows.assign(bits=rows["bits"].clip(lower=1.0))  # a one-step tiny run may store nothing
    png = plot_capacity_law(rows, tmp_path / "law.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_capacity_law_is_fitted_on_capacity_limited_whole_vocabulary_rows_only():
    """A fitted-vocabulary row trained while that was the default shares its run id with today's whole-vocabulary
    run of the same settings: the table keeps both, the law's points are the whole-vocabulary one; a run that
    learned most of its data is kept out of the fit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("capacity_law_table", ROOT / "scripts" / "capacity_law_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = {"dataset": "bioD", "exposures": 1000, "context_length": 256, "precision": "fp32", "P": 43_152,
           "run_id": "gpt2-1-1_same", "fraction_learned": 0.33}
    table = pd.DataFrame([{**row, "vocabulary": "fitted", "bits": 81_578.0},
                          {**row, "vocabulary": "whole", "bits": 90_000.0},
                          # a run that learned 88% of its data is a lower bound on its capacity, not a point of the law
                          {**row, "vocabulary": "whole", "bits": 462_304.0, "P": 184_608, "fraction_learned": 0.88}])
    assert script.ladder_points(table)["bits"].tolist() == [90_000.0]


def test_fit_on_few_runs_says_so_and_flags_runs_that_look_undertrained(tmp_path, capsys):
    # two short runs of 20 exposures: each stored a few thousand bits of its 5.8 million
    pd.DataFrame({
        "run_id": ["a", "b"], "status": "done", "model": "gpt2-2-2", "mlp_type": "", "num_experts": 0,
        "exposures": 20, "n_people": 100_000, "num_params": [100_000, 200_000], "bits": [5_200.0, 8_000.0],
        "bits_max": 5.82e6,
    }).to_csv(tmp_path / "results.csv", index=False)
    cli(["fit", str(tmp_path / "results.csv"), "--n-bootstrap", "50", "--no-loss-fit"])
    out = capsys.readouterr().out
    assert "over 2 finished runs" in out
    assert "warning: only 2 runs" in out and "5 or more" in out
    assert "2 of 2 runs look undertrained" in out
    cli(["fit", str(tmp_path / "results.csv"), "--n-bootstrap", "50", "--no-loss-fit", "--json"])
    row = json.loads(capsys.readouterr().out)["capacity"][0]
    assert row["n_undertrained"] == 2 and "undertrained" in row["note"]
    # a sweep of many well-trained runs carries neither warning
    synthetic_results(tmp_path / "many.csv")
    cli(["fit", str(tmp_path / "many.csv"), "--n-bootstrap", "50", "--no-loss-fit"])
    out = capsys.readouterr().out
    assert "warning" not in out and "look undertrained" not in out


def test_dry_run_shows_each_runs_parameters_and_ceiling(tiny_sweep, tmp_path, capsys):
    _, trained = tiny_sweep
    lines = []
    listing = run_sweep(tiny_config(tmp_path / "one"), dry_run=True, log=lines.append)  # seed 0 alone
    row, seed0 = listing.iloc[0], trained[trained["seed"] == 0].iloc[0]
    assert row["num_params"] == seed0["num_params"] and row["bits_max"] == pytest.approx(seed0["bits_max"])
    assert row["R_max"] == pytest.approx(seed0["bits_max"] / seed0["num_params"])
    assert f"P = {seed0['num_params']:,}, R_max = {row['R_max']:.3f} bits/param" in lines[1]
    assert lines[0] == "sweep 'tiny': 1 run" and lines[-1].startswith("dry run: 1 run in ")


def test_the_dry_runs_p_and_ceiling_are_the_real_runs_for_thousands_of_people(tmp_path):
    """The tokenizer is trained on all N people and P counts the embedding rows their biographies use, so the dry
    run measures both on the run's own data: a 1,000-person sample of bioD(3,000) counted too few rows (R_max too
    high). The real run (two steps) records the same P and bits_max as its dry run printed."""
    config = tiny_config(tmp_path / "big", base={**TINY, "n_people": 3000, "dataset": "bioD", "max_steps": 2,
                                                 "eval_steps": None, "eval_max_people": 64})
    lines = []
    listing = run_sweep(config, dry_run=True, log=lines.append)
    trained = run_sweep(config, log=lambda line: None)
    planned, ran = listing.iloc[0], trained.iloc[0]
    assert ran["status"] == "done" and planned["num_params"] == ran["num_params"]
    assert planned["bits_max"] == pytest.approx(ran["bits_max"])
    assert f"P = {ran['num_params']:,}, R_max = {planned['R_max']:.3f} bits/param" in lines[1]


def test_the_dry_run_sizes_each_run_for_an_r_max(tmp_path):
    """``--r-max 3``: each run's line also gives the N at which its R_max reaches 3 bits/param, and the listing has
    it as columns; the sized population really has that R_max."""
    from hf_capacity.preflight import population_size

    config = tiny_config(tmp_path / "sized", grid={"head_dim": [8, 16]})
    lines = []
    listing = run_sweep(config, dry_run=True, log=lines.append, r_max=3.0)
    assert list(listing["head_dim"]) == [8, 16]
    sizes = list(listing["n_people_for_r_max"])
    assert sizes[0] < sizes[1]  # the wider model needs more people
    plan = load_sweep(config).plan()
    for line, run in zip(lines[1:3], listing.itertuples()):
        assert f"at N = {run.n_people_for_r_max:,} (P = {run.num_params_for_r_max:,})" in line
        sized = population_size(dataclasses.replace(plan[run.index].training_config(),
                                                    n_people=run.n_people_for_r_max))
        assert sized.r_max >= 3.0 and sized.num_params == run.num_params_for_r_max


def test_r_max_sizes_a_dry_run_only(tmp_path):
    with pytest.raises(ValueError, match="dry_run=True"):
        run_sweep(tiny_config(tmp_path / "x"), r_max=3.0)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "x")))
    with pytest.raises(CLIError, match="--r-max sizes the runs of a dry run: add --dry-run"):
        cli(["sweep", str(path), "--r-max", "3"])
    assert not (tmp_path / "x").exists()


def test_a_grid_of_numpy_numbers_is_a_grid_of_numbers():
    import numpy as np

    sweep = load_sweep({"output_dir": "unused", "grid": {"n_people": list(np.array([100, 200])),
                                                         "learning_rate": list(np.array([1e-3], dtype=np.float32))}})
    configs = [run.training_config() for run in sweep.plan()]
    assert [c.n_people for c in configs] == [100, 200] and all(type(c.n_people) is int for c in configs)
    assert configs[0].learning_rate == pytest.approx(1e-3)


def test_a_finished_run_recorded_with_other_settings_is_stale_not_done(sweep_copy, monkeypatch):
    """A default changed since a run finished: same run id (only non-defaults are hashed), other settings."""
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    config = tiny_config(sweep_copy, grid={"seed": [0, 1]})
    first = sorted((sweep_copy / "runs").iterdir())[0]
    recorded = json.loads((first / "training_config.json").read_text())
    (first / "training_config.json").write_text(json.dumps({**recorded, "learning_rate": 0.002}))
    lines = []
    table = run_sweep(config, log=lines.append)
    assert list(table["status"]) == ["failed", "done"]
    error = table.loc[0, "error"]
    assert str(first) in error and "learning_rate 0.002 → 0.001" in error and "delete" in error
    assert "\n" not in error and any(f"failed: {error}" in line for line in lines)
    assert (first / "DONE").is_file() and not (first / "error.json").exists()  # left as it was
    listing = run_sweep(config, dry_run=True, log=lambda line: None)
    assert list(listing["status"]) == ["stale", "done (skip)"] and listing.loc[0, "error"] == error
    assert list(rebuild_table(sweep_copy, write=False)["status"]) == ["failed", "done"]


def test_fit_on_a_sweep_whose_only_run_is_stale_says_why_not_an_error_file_it_lacks(sweep_copy, monkeypatch, capsys):
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    first, second = sorted((sweep_copy / "runs").iterdir())
    shutil.rmtree(second)
    recorded = json.loads((first / "training_config.json").read_text())
    (first / "training_config.json").write_text(json.dumps({**recorded, "learning_rate": 0.002}))
    run_sweep(tiny_config(sweep_copy, grid={"seed": [0]}), log=lambda line: None)
    assert main(["fit", str(sweep_copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-capacity: error: no finished run in {sweep_copy}; 1 failed: stale: {first} holds")
    assert "learning_rate 0.002 → 0.001" in err and "error.json" not in err and err.count("\n") == 1


def test_an_unfinished_run_recorded_with_other_settings_is_not_resumed(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "train_capacity", no_training)
    config = tiny_config(tmp_path / "old")
    run = load_sweep(config).plan()[0]
    (run.output_dir / "checkpoint-2").mkdir(parents=True)
    (run.output_dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (run.output_dir / "training_config.json").write_text(json.dumps({**run.config, "weight_decay": 0.1}))
    table = run_sweep(config, log=lambda line: None)
    assert list(table["status"]) == ["failed"] and "weight_decay 0.1 → 0.02" in table.loc[0, "error"]
    assert (run.output_dir / "checkpoint-2").is_dir()


def test_dry_run_samples_data_per_base_seed_and_offset():
    from hf_capacity.training import CapacityTrainingConfig

    base = CapacityTrainingConfig(init_from="runs/a")
    for other in ({"init_from": "runs/b"}, {"seed": 1}, {"name_offset": 5}, {"dataset": "bioD"}):
        assert sweep_module._data_key(base) != sweep_module._data_key(dataclasses.replace(base, **other)), other
    assert sweep_module._data_key(base) == sweep_module._data_key(dataclasses.replace(base, learning_rate=0.5))
