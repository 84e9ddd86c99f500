"""The `hf-capacity` command line: budget, data generate, data inspect, and clear errors."""

import json

import datasets
import pytest

from hf_capacity.cli import main
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
