"""The `hf-capacity` command line: budget, data generate, data inspect, train's checks, help, and clear errors."""

import argparse
import json
import re
import shutil

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
    assert main(["budget", "--dataset", "bioD", "--N", "1000", "--K", "4", "--C", "2", "--D", "100", "--L", "3",
                 "--T", "20"]) == 0
    out = capsys.readouterr().out
    assert "diversity bits" in out and "2,529" in out and "72,967" in out


def test_budget_rejects_impossible_data(capsys):
    assert main(["budget", "--dataset", "bioD", "--D", "1000", "--L", "2", "--T", "20"]) == 2
    assert "D <= T^L" in capsys.readouterr().err


def test_data_generate_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "bios"
    assert main(["data", "generate", "--N", "50", "--exposures", "2", "--context-length", "128",
                 "--vocab-size", "512", "-o", str(out), "--quiet"]) == 0
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


TINY_RUN = ["train", "--dataset", "bioS", "--N", "30", "--model", "gpt2-1-1", "--head-dim", "16", "--exposures", "2",
            "--context-length", "128", "--batch-size", "4", "--vocab-size", "400", "--warmup-steps", "1", "--quiet"]


def test_a_reused_output_folder_resumes_only_the_same_run(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main([*TINY_RUN, "--save-steps", "2", "--max-steps", "4", "-o", str(ck)]) == 0
    capsys.readouterr()
    # another run in the same folder is refused in one line, naming the folder and what differs
    for other in (["--N", "40", "--lr", "5e-3"], ["--head-dim", "32"]):
        assert main([*TINY_RUN, "--save-steps", "2", "--max-steps", "4", *other, "-o", str(ck)]) == 2
        out, err = capsys.readouterr()
        assert "resuming" not in out and err.count("\n") == 1, err
        assert f"error: {ck} holds another run (" in err and "--overwrite" in err
        differs = "n_people 30 → 40, learning_rate 0.001 → 0.005" if "--N" in other else "head_dim 16 → 32"
        assert differs in err, err
    # a finished run is not trained again on top of itself
    assert main([*TINY_RUN, "--save-steps", "2", "--max-steps", "4", "-o", str(ck)]) == 2
    assert f"error: {ck} holds a finished run" in capsys.readouterr().err
    # a run stopped part-way resumes, even when only how it is watched changed (evaluation, logging, quiet)
    (ck / "results.json").unlink()
    shutil.rmtree(ck / "checkpoint-4")
    assert main([*TINY_RUN, "--save-steps", "2", "--max-steps", "4", "--eval-steps", "1", "-o", str(ck)]) == 0
    assert f"resuming from {ck / 'checkpoint-2'}" in capsys.readouterr().out
    # --overwrite replaces the run
    (ck / "stale.txt").write_text("from the previous run")
    assert main([*TINY_RUN, "--N", "40", "--max-steps", "4", "--overwrite", "-o", str(ck)]) == 0
    assert "resuming" not in capsys.readouterr().out and not (ck / "stale.txt").exists()
    assert json.loads((ck / "results.json").read_text())["n_people"] == 40
    assert not list(ck.glob("checkpoint-*"))


def test_status_of_a_train_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY_RUN, "--max-steps", "4", "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    bits = json.loads((run / "results.json").read_text())["bits_per_param"]
    assert "1 run: 1 done" in text and "4 / 4 (100%)" in text and f"{bits:.3f} bits/param" in text


def test_a_run_prints_its_plan_warns_when_it_will_learn_little_and_says_why_it_stored_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY_RUN, "--lr", "1e-6", "--warmup-steps", "100", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    applied = json.loads((run / "training_config.json").read_text())["applied"]
    steps, warmup = applied["max_steps"], applied["warmup_steps"]
    assert warmup == max(steps // 10, 1) < 100  # what really ran is recorded beside what was asked
    results = json.loads((run / "results.json").read_text())
    plan = re.search(r"plan: ([\d,]+) steps × ([\d,]+) tokens = ([\d,]+) tokens, 2 exposures per person; "
                     r"P = ([\d,]+), bits_max = ([\d,]+), R_max = ([\d.]+) bits/param", out)
    assert plan, out
    assert int(plan[1]) == steps and int(plan[2]) == 4 * 128 and int(plan[3].replace(",", "")) == steps * 512
    assert int(plan[4].replace(",", "")) == results["num_params"]
    assert int(plan[5].replace(",", "")) == round(results["bits_max"])
    assert float(plan[6]) == pytest.approx(results["bits_max_per_param"], abs=1e-3)
    assert f"warm-up {warmup} step{'s' if warmup != 1 else ''} (--warmup-steps 100 is capped at a tenth" in out
    assert "warning: 2 exposures per person" in out and f"warning: {steps} optimizer steps" in out
    # nothing learned at a learning rate of 1e-6: the run says so, and why
    assert "stored almost nothing" in out
    assert re.search(r"value loss p2 = [\d.]+ nats per person, not below uniform guessing \(32\.988", out), out


def strict_json(text: str):
    """JSON as the standard defines it: NaN and Infinity are not numbers there."""
    def refuse(constant):
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def test_eval_of_a_subsample_keeps_its_interval_within_the_bits_that_exist_and_prints_no_nan(tmp_path, capsys,
                                                                                              bios_data):
    from hf_capacity.training import CapacityTrainingConfig, build_model

    build_model(CapacityTrainingConfig(model="gpt2-1-1", head_dim=16), bios_data.tokenizer).save_pretrained(tmp_path)
    bios_data.save(tmp_path)  # an untrained model: it stores 0 bits, at full precision and after quantization
    assert main(["eval", str(tmp_path), "--max-people", "50", "--quantized", "int8", "--json"]) == 0
    report = strict_json(capsys.readouterr().out)
    low, high = report["bits_ci95"]
    assert 0 <= low <= report["bits"] <= high <= report["bits_max"]
    assert report["quantized"]["int8"]["ratio_to_full_precision"] is None
    assert main(["eval", str(tmp_path), "--max-people", "50", "--quantized", "int8"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "-" not in out.split("95% CI")[1].split("\n")[0]
    assert "ratio to full precision n/a (the full-precision model stores no bits)" in out


def _parsers(parser, prefix=()):
    """(command words, parser) for ``parser`` and every subcommand under it, groups included."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*prefix, name))


def test_every_command_describes_itself_shows_each_default_once_and_takes_no_abbreviations(capsys):
    for command, parser in _parsers(build_parser()):
        assert parser.allow_abbrev is False, " ".join(command)
        assert parser.description and "\n" not in parser.description, " ".join(command)
        formatter = parser._get_formatter()
        for action in parser._actions:
            assert formatter._get_help_string(action).count("(default:") <= 1, f"{command} {action.option_strings}"
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the laptop demo" in text and text.count("(default: 250)") == 1  # --eval-steps
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", "somewhere"])  # was taken for --dataset
    assert exit_.value.code == 2 and "unrecognized arguments: --data" in capsys.readouterr().err


def test_version(capsys):
    from hf_capacity import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"hf-capacity {__version__}\n"


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


def test_settings_that_would_be_ignored_or_fail_late_are_refused_before_any_folder_is_made(tmp_path, capsys):
    out = tmp_path / "run"
    for flags, message in ((["--K", "3"], "--K describes bioD data, but the data set is bioS"),
                           (["--dataset", "bioS-simple", "--T", "10", "--L", "1"], "--L --T describe bioD data"),
                           (["--lr", "-1"], "learning_rate must be > 0, got -1.0"),
                           (["--weight-decay", "-0.1"], "weight_decay must be >= 0")):
        assert main([*TINY_RUN, *flags, "-o", str(out)]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_eval_refuses_data_rendered_with_another_tokenizer(tmp_path, capsys, bios_data):
    from hf_capacity.data import BioSPopulation
    from hf_capacity.training import CapacityTrainingConfig, build_model

    model = tmp_path / "model"
    build_model(CapacityTrainingConfig(model="gpt2-1-1", head_dim=16), bios_data.tokenizer).save_pretrained(model)
    bios_data.save(model)
    bios_data.save(tmp_path / "same")  # the model's own data, in a folder of its own: measured as usual
    assert main(["eval", str(model), "--data", str(tmp_path / "same"), "--max-people", "5", "--json"]) == 0
    capsys.readouterr()
    other = KnowledgeData.create(BioSPopulation(100, seed=8), vocab_size=1024)
    other.save(tmp_path / "other")  # other people, and a tokenizer trained on them
    assert main(["eval", str(model), "--data", str(tmp_path / "other"), "--json"]) == 2
    assert "another tokenizer" in capsys.readouterr().err


def test_biod_data_and_runs_take_junk_and_the_domain_token(tmp_path, capsys):
    biod = ["--dataset", "bioD", "--N", "20", "--K", "1", "--C", "4", "--D", "8", "--L", "1", "--T", "16",
            "--junk-fraction", "0.5", "--junk-N", "1000", "--domain-token", "--vocab-size", "300"]
    assert main(["data", "generate", *biod, "--exposures", "2", "--context-length", "64", "-o",
                 str(tmp_path / "data"), "--quiet"]) == 0
    assert KnowledgeData.load(tmp_path / "data").junk.n_people == 1000
    assert main(["train", *biod, "--model", "gpt2-1-1", "--head-dim", "16", "--exposures", "1", "--context-length",
                 "64", "--batch-size", "4", "--max-steps", "2", "-o", str(tmp_path / "run"), "--quiet"]) == 0
    assert KnowledgeData.load(tmp_path / "run").junk.fraction == 0.5
