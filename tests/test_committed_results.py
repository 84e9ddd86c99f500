"""The committed calibration run re-measures to what its results say (and to the headline ≥ 1.8 bits/param)."""

import json
import re
from pathlib import Path

import pytest

from hf_capacity.cli import main

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "docs" / "results" / "calibration_1000"


@pytest.mark.parametrize("code", ["installed", "folder"])
def test_the_1000_exposure_run_stores_about_2_bits_per_parameter(code, capsys):
    assert main(["eval", str(RUN), "--code", code, "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    recorded = json.loads((RUN / "results.json").read_text())
    assert measured["bits"] == pytest.approx(recorded["bits"], rel=1e-6)
    assert measured["num_params"] == recorded["num_params"]
    assert measured["bits_per_param"] >= 1.8 and measured["bits_max"] / measured["num_params"] >= 2.5


RESULTS = RUN.parent
README = RESULTS.parent.parent / "README.md"
STUDIES = RESULTS.parent / "studies"


def test_the_memorization_study_plateaus_are_the_fits_of_the_committed_table():
    """Each plateau in the memorization study's table is what fit_memorization_plateau gives on the CSV."""
    import pandas as pd

    from hf_capacity.memorization_fit import fit_memorization_plateau

    table = pd.read_csv(RESULTS / "memorization_cpu.csv")
    study = (STUDIES / "memorization_cpu.md").read_text()
    assert (table["heldout_memorized_bits"] == 0).all() and len(table) == 32
    for (model, head_dim, precision), runs in table.groupby(["model", "head_dim", "precision"]):
        fit = fit_memorization_plateau(runs["data_bits"], runs["memorized_bits"],
                                       num_params=int(runs["num_params"].iloc[0]))
        low, high = (c / fit.num_params for c in fit.ci)
        row = next(line for line in study.splitlines() if line.startswith(f"| {model}, head dim {head_dim} |"))
        cells = [c.strip() for c in row.split("|")]
        cell = cells[5] if precision == "fp32" else cells[6]
        assert cell == f"**{fit.bits_per_param:.2f}** ({low:.2f}-{high:.2f})", (model, head_dim, precision)


def test_the_adapter_study_table_is_the_committed_csv():
    """Each row of the adapter study's table is a row of docs/results/adapters_cpu.csv (bits, P, ratio)."""
    import pandas as pd

    table = pd.read_csv(RESULTS / "adapters_cpu.csv")
    section = (STUDIES / "adapters_cpu.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith(("| LoRA", "| QLoRA", "| full"))]
    assert len(rows) == len(table) == 12
    cells = {(c := [x.strip() for x in line.split("|")])[1]: c for line in rows}
    for run in table.itertuples():
        label = ("full fine-tuning" if run.method == "full"
                 else f"{'QLoRA' if run.method == 'qlora' else 'LoRA'} r={run.lora_r}")
        if run.learning_rate != 0.01:
            label += f", lr {run.learning_rate:.0e}".replace("e-0", "e-")
        c = cells[label]
        assert c[2] == f"{run.P:,}" and c[4] == f"{run.bits:,.0f}" and c[5] == f"**{run.bits_per_param:.2f}**", label
        assert c[6] == f"{run.base_bits_before:,.0f} → {run.base_bits_after:,.0f}", label
    assert (table.loc[table.method == "lora", "P"] == 512 * table.loc[table.method == "lora", "lora_r"]).all()


def test_the_committed_memorization_run_re_measures_to_its_recorded_bits():
    from hf_capacity.memorization import remeasure_memorization

    result = remeasure_memorization(ROOT / "docs" / "results" / "memorization_example")
    assert result["memorized_bits"] == pytest.approx(result["recorded"]["memorized_bits"], rel=1e-5)
    assert result["heldout_memorized_bits"] == pytest.approx(result["recorded"]["heldout_memorized_bits"], abs=1e-6)
    assert result["memorized_bits"] > 0.5 * result["data_bits"]


def test_the_quantization_study_table_is_the_committed_csv():
    """Each row of the quantization study's table is a row of docs/results/quantization.csv."""
    import pandas as pd

    table = pd.read_csv(RESULTS / "quantization.csv")
    section = (STUDIES / "quantization.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith(("| bitsandbytes", "| GPTQ", "| **GPTQ", "| round to nearest"))]
    assert len(rows) == 8
    for label, bits, group, per_param, ratio in rows:
        label = label.replace("**", "")
        methods = {"round to nearest, int4": "round to nearest", "GPTQ int4": "GPTQ", "GPTQ int8": "GPTQ"}
        method = methods.get(label, label)
        found = table[(table["method"] == method) & (table["bits"] == int(bits)) & (table["group_size"] == int(group))]
        assert len(found) == 1, label
        run = found.iloc[0]
        assert per_param.replace("**", "") == (f"{run.bits_per_param:.3f}" if run.bits_per_param else "0"), label
        assert ratio == (f"{run.ratio_to_unquantized:.3f}" if run.ratio_to_unquantized else "0"), label


def test_the_quantization_ladder_rows_are_the_committed_csv():
    """The quantization study's ladder table is docs/results/quantization_ladder.csv, one row per model; int8 keeps
    the knowledge of every model and GPTQ keeps more than round to nearest on the same 4-bit grid."""
    import pandas as pd

    script = load_script("quantization_study")
    table = pd.read_csv(RESULTS / "quantization_ladder.csv")
    section = (STUDIES / "quantization.md").read_text().split("## Across the capacity-law ladder", 1)[1]
    shown = [line for line in section.splitlines() if line.startswith("| GPT2-")]
    assert shown == script.wide_rows(table) and len(shown) == table["run"].nunique() == 5
    int8 = table[table["bits"] == 8]
    assert (int8["ratio_to_unquantized"] > 0.98).all()
    four = table[(table["bits"] == 4) & (table["group_size"] == 128)].pivot(index="run", columns="method",
                                                                            values="knowledge_bits")
    assert (four["GPTQ"] >= four["round to nearest"]).all()


def test_the_morris_shape_memorization_rows_are_the_committed_csv():
    """docs/studies/memorization_morris.md shows docs/results/memorization_morris.csv row for row (by model,
    precision, N and epoch budget) and each model's capacity as the CSV's maximum over N; every run's held-out set
    reads 0 bits and no run memorized more than its data holds."""
    import pandas as pd

    table = pd.read_csv(RESULTS / "memorization_morris.csv").sort_values(["model", "head_dim", "precision", "N",
                                                                           "epochs"])
    page = (STUDIES / "memorization_morris.md").read_text()
    runs_section = page.split("## Runs", 1)[1].split("\n## ", 1)[0]
    shown = [[c.strip() for c in line.split("|")[1:-1]] for line in runs_section.splitlines()
             if line.startswith("| ") and "**" in line]
    assert len(shown) == len(table) >= 2
    lines = [line for line in runs_section.splitlines() if line.startswith("| ") and "**" in line]
    assert lines == load_script("memorization_study").markdown_rows(table)  # the script writes these rows
    for cells, run in zip(shown, table.itertuples()):
        assert cells[0] == f"{run.model} width {run.head_dim * int(run.model.split('-')[2])}", cells
        assert (cells[1], cells[2]) == (run.precision, f"{run.N:,}"), cells
        assert cells[5].endswith(f" of {run.epochs:,}"), cells
        assert cells[7] == f"{run.memorized_bits:,.0f}" and cells[8] == f"**{run.bits_per_param:.3f}**", cells
        assert cells[9].startswith("yes" if run.saturated else "no"), cells
    capacity_section = page.split("## Capacity", 1)[1].split("\n## ", 1)[0]
    for (model, head_dim, precision), runs in table.groupby(["model", "head_dim", "precision"]):
        best = runs.loc[runs["bits_per_param"].idxmax()]
        label = f"| {model} width {head_dim * int(model.split('-')[2])} | {precision} |"
        row = next(line for line in capacity_section.splitlines() if line.startswith(label))
        assert f"**{best.bits_per_param:.3f}**" in row and f"| {best.N:,} |" in row, row
    assert (table["heldout_memorized_bits"] == 0).all() and (table["memorized_bits"] <= table["data_bits"]).all()
    assert (table["vocab"] == 2048).all() and (table["length"] == 64).all()  # Morris et al.'s data shape


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_capacity_law_study_rows_are_the_committed_table():
    """The capacity-law study's table is docs/results/capacity_law.csv, row for row (and the figure exists); the
    front page keeps the section, with the figure and a link to the study."""
    import pandas as pd

    script = load_script("capacity_law_table")
    table = pd.read_csv(RESULTS / "capacity_law.csv")
    section = (STUDIES / "capacity_law.md").read_text()
    shown = [line for line in section.splitlines() if line.startswith("| bio")]
    assert shown == script.markdown_rows(table) and len(shown) >= 1
    points = script.ladder_points(table)
    # the law's points: capacity-limited, < 80% learned
    assert (points["R_max"] > 1.25 * points["bits_per_param"]).all()
    # the slope over the one-layer shapes alone, as the page states it
    shallow = script.one_layer_slope(table)
    assert (f"one-layer log-log slope is **{shallow.slope:.2f}, 95% interval [{shallow.ci_low:.2f}, "
            f"{shallow.ci_high:.2f}]**") in " ".join(section.split())
    assert (ROOT / "docs" / "figures" / "capacity_law.png").is_file()
    front = README.read_text().split("## The capacity law across model sizes\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/figures/capacity_law.png)" in front and "(docs/studies/capacity_law.md)" in front
    # the headline (its bold figures) quotes the law's points: size by size, smallest P first, each size's seeds
    # in order (a size's seeds differ a little in P: their tokenizers are trained on other people)
    headline = " ".join(re.findall(r"\*\*(.*?)\*\*", front, flags=re.S))
    points = points.assign(size_p=points.groupby(["model", "width"])["P"].transform("mean"))
    expected = points.sort_values(["size_p", "seed"])["bits_per_param"]
    assert re.findall(r"\b\d\.\d{3}\b", headline) == [f"{r:.3f}" for r in expected]


def test_the_findings_study_rows_are_the_committed_table():
    """docs/studies/findings_at_capacity.md shows docs/results/findings_at_capacity.csv row for row, one table per
    finding; the MoE and dense arms ran on the same data for the same exposures."""
    import pandas as pd

    script = load_script("findings_table")
    table = pd.read_csv(RESULTS / "findings_at_capacity.csv")
    page = (STUDIES / "findings_at_capacity.md").read_text()
    for finding, heading in (("moe", "## Mixture of experts"), ("mlp", "## Gated against standard MLP"),
                             ("junk", "## Junk data and the domain token")):
        section = page.split(heading, 1)[1].split("\n## ", 1)[0]
        shown = [line for line in section.splitlines() if line.startswith("| ") and "**" in line]
        expected = script.markdown_rows(table, finding) + (script.summary_rows(table) if finding == "mlp" else [])
        assert shown == expected and shown
    best = script.best_rate_seeds(table)
    assert (best["seeds"] == 3).all() and len(best) == 4  # each MLP arm: three seeds at its best seed-0 rate
    junk = table[table["finding"] == "junk"]  # one useful population and exposure count in every junk arm
    assert junk["N"].nunique() == junk["exposures"].nunique() == 1 and len(junk) == 3
    moe = table[table["finding"] == "moe"]
    assert moe["N"].nunique() == 1 and set(moe["arm"]) >= {"dense", "32 experts, top-1"}
