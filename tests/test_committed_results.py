"""The committed calibration run re-measures to what its results say (and to the headline ≥ 1.8 bits/param)."""

import json
from pathlib import Path

import pytest

from hf_capacity.cli import main

RUN = Path(__file__).resolve().parent.parent / "docs" / "results" / "calibration_1000"


@pytest.mark.parametrize("code", ["installed", "folder"])
def test_the_1000_exposure_run_stores_about_2_bits_per_parameter(code, capsys):
    assert main(["eval", str(RUN), "--code", code, "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    recorded = json.loads((RUN / "results.json").read_text())
    assert measured["bits"] == pytest.approx(recorded["bits"], rel=1e-6)
    assert measured["num_params"] == recorded["num_params"]
    assert measured["bits_per_param"] >= 1.8 and measured["bits_max"] / measured["num_params"] >= 2.5
