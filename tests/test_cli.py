"""The `hf-capacity` command line: budget, data generate, data inspect, train's checks, help, and clear errors."""

import argparse
import json
import re

import datasets
import pytest

from hf_capacity.cli import build_parser, main
from hf_capacity.data import KnowledgeData


def test_budget_json_for_bios(capsys):
    assert main(["budget", "--dataset", "bioS", "--N", "1000000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bits_per_person"] == pytest.approx(54.9, abs=0.05)
    assert report["bits_max"] == pytest.approx(54.9e6, rel=1e-3)
    assert report["params_at_2_bits"] == pytest.approx(report["bits_max"] / 2, abs=1)
    assert report["params_at_1_bit"] == pytest.approx(report["bits_max"], abs=1)


def test_budget_table_for_biod(capsys):
    assert main(["budget", "--dataset", "bioD", "--N", "1000", "--K", "4", "--C", "2", "--D", "100", "--L", "3", "--T", "20"]) == 0
    out = capsys.readouterr().out
    assert "diversity bits" in out and "2,529" in out and "72,967" in out


def test_budget_rejects_impossible_data(capsys):
    assert main(["budget", "--dataset", "bioD", "--D", "1000", "--L", "2", "--T", "20"]) == 2
    assert "D <= T^L" in capsys.readouterr().err


def test_data_generate_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "bios"
    assert main(["data", "generate", "--N", "50", "--exposures", "2", "--context-length", "128", "--vocab-size", "512", "-o", str(out), "--quiet"]) == 0
    assert "bits_max" in capsys.readouterr().out.replace("total (bits_max)", "bits_max")
    train = datasets.load_from_disk(str(out / "train"))
    assert len(train[0]["input_ids"]) == 128
    people = datasets.load_from_disk(str(out / "people"))
    data = KnowledgeData.load(out)
    assert people[0]["name"] == data.population.person(0)["name"]


def test_data_inspect_marks_spans(capsys):
    assert main(["data", "inspect", "--N", "10", "--n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "<name>" in out and "<birth_date>" in out and "<working_city>" in out and "<gender>" in out


def test_data_inspect_missing_folder(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "knowledge_data.json" in capsys.readouterr().err


def test_data_inspect_needs_at_least_one_person(capsys):
    assert main(["data", "inspect", "--N", "10", "--n", "0"]) == 2
    assert capsys.readouterr().err.strip() == "hf-capacity: error: --n must be positive, got 0"


def test_counts_accept_scientific_notation_when_whole(capsys):
    assert main(["budget", "--N", "1e6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_people"] == 1_000_000
    assert main(["predict", "--params", "1e6", "--N", "1e5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["capacity"][0]["params"] == 1_000_000


@pytest.mark.parametrize("argv", [["budget", "--N", "1.5"], ["predict", "--params", "1.5"],
                                  ["predict", "--params", "1e6", "--tokens", "2.5e-3"], ["budget", "--N", "lots"]])
def test_counts_reject_fractions_and_words(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expects a whole number, such as 1000 or 1e6" in err


@pytest.mark.parametrize("model", ["gpt2-0-0", "gpt2-2-0", "llama-0-2", "memory-llama-0-1"])
def test_train_refuses_a_model_without_layers_or_heads(model, tmp_path, capsys):
    assert main(["train", "--model", model, "-o", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"error: {model}: a model needs at least 1 layer and 1 head" in err and "hidden_size" not in err
    assert not (tmp_path / "run").exists()


def test_a_diverged_run_is_one_line_and_exit_status_1(tmp_path, capsys):
    argv = ["train", "--dataset", "bioS", "--N", "50", "--model", "gpt2-1-1", "--head-dim", "16", "--exposures",
            "20", "--context-length", "128", "--batch-size", "8", "--lr", "1e3", "--vocab-size", "400",
            "-o", str(tmp_path / "run")]
    assert main(argv) == 1
    last_line = capsys.readouterr().err.rstrip("\n").split("\n")[-1]
    assert re.fullmatch(r"hf-capacity: error: training diverged at step \d+ \(grad norm nan\); "
                        r"lower the learning rate \(now 1000\)", last_line), last_line
    assert (tmp_path / "run" / "diverged.json").is_file()


def _subcommands(parser, prefix=()):
    """(command words, parser) for every leaf subcommand of ``parser``."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix, parser
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from _subcommands(sub, (*prefix, name))


def test_every_subcommand_help_shows_the_defaults(capsys):
    commands = list(_subcommands(build_parser()))
    assert {" ".join(c) for c, _ in commands} >= {"budget", "data generate", "train", "sweep", "fit", "predict"}
    for command, parser in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                assert f"(default: {action.default})" in text, f"{' '.join(command)} {action.option_strings[0]}"


def test_eval_runs_the_installed_code_by_default_and_the_folders_own_code_on_request(tmp_path, capsys, bios_data):
    import hf_capacity.models  # noqa: F401
    from hf_capacity.models.registration import load_causal_lm
    from hf_capacity.training import CapacityTrainingConfig, build_model

    build_model(CapacityTrainingConfig(model="gpt2-1-1", head_dim=16), bios_data.tokenizer).save_pretrained(tmp_path)
    bios_data.save(tmp_path)
    assert type(load_causal_lm(tmp_path)).__module__.startswith("hf_capacity.models")
    assert type(load_causal_lm(tmp_path, code="folder")).__module__.startswith("transformers_modules")
    reports = {}
    for code in ("installed", "folder"):
        assert main(["eval", str(tmp_path), "--code", code, "--max-people", "20", "--json"]) == 0
        reports[code] = json.loads(capsys.readouterr().out)
    assert reports["folder"]["p1"] == pytest.approx(reports["installed"]["p1"], rel=1e-5)
    (tmp_path / "config.json").write_text(json.dumps({**json.loads((tmp_path / "config.json").read_text()),
                                                      "auto_map": {}}))
    assert main(["eval", str(tmp_path), "--code", "folder"]) == 2
    assert "carries no model code of its own" in capsys.readouterr().err


def test_train_on_a_rank_other_than_0_reads_the_results_only_after_rank_0_wrote_them(tmp_path, monkeypatch, capsys):
    # torchrun: rank 0 saves the run and writes results.json; `hf-capacity train` on every rank then reads it.
    # Played here by rank 1 in one process: rank 0 is done writing when the processes meet at the barrier.
    import accelerate
    from transformers import Trainer

    out = tmp_path / "run"
    events = []

    def barrier(accelerator):  # rank 1 waits here until rank 0 gets here too: by then it has written its files
        events.append("barrier")
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"bits_per_param": 0.0}))

    monkeypatch.setattr(accelerate.Accelerator, "wait_for_everyone", barrier)
    monkeypatch.setattr(Trainer, "is_world_process_zero", lambda self: False)  # this process is rank 1
    assert main(["train", "--N", "20", "--model", "gpt2-1-1", "--head-dim", "16", "--exposures", "1",
                 "--context-length", "64", "--batch-size", "4", "--vocab-size", "300", "--max-steps", "2",
                 "-o", str(out), "--quiet"]) == 0
    assert events == ["barrier"] and "wrote" in capsys.readouterr().out
