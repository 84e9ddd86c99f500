"""scripts/memorization_study.py: tables kept across machines and Morris et al.'s capacity (max over dataset sizes)."""

import math

import pandas as pd
from test_committed_results import RESULTS, load_script


def row(N, bits_per_param, precision="fp32", saturated=False, epochs=1000):
    return {"model": "gpt2-1-1", "head_dim": 32, "precision": precision, "num_params": 78336, "N": N, "epochs": epochs,
            "memorized_bits": bits_per_param * 78336, "bits_per_param": bits_per_param, "saturated": saturated}


def test_a_run_finished_here_replaces_its_earlier_row_and_the_others_are_kept():
    study = load_script("memorization_study")
    earlier = pd.DataFrame([row(256, 2.27, saturated=True), row(512, 2.89), row(768, 2.70)])
    here = pd.DataFrame([row(768, 3.05, saturated=True), row(512, 2.80, "bf16")], columns=study.COLUMNS)
    merged = study.merge_tables(earlier, here)
    assert list(zip(merged["precision"], merged["N"], merged["bits_per_param"])) == [
        ("bf16", 512, 2.80), ("fp32", 256, 2.27), ("fp32", 512, 2.89), ("fp32", 768, 3.05)]
    # the same data on a longer schedule is another run: both rows stay, shorter budget first
    longer = pd.DataFrame([row(512, 2.99, saturated=True, epochs=7000)], columns=study.COLUMNS)
    both = study.merge_tables(merged, longer)
    assert both[both["N"] == 512]["epochs"].tolist() == [1000, 1000, 7000] and len(both) == 5


def test_capacity_is_the_most_memorized_over_dataset_sizes_with_its_saturation():
    study = load_script("memorization_study")
    table = pd.DataFrame([row(256, 2.27, saturated=True), row(512, 2.89), row(768, 3.05, saturated=True),
                          row(512, 2.60, "bf16")])
    by_precision = {c["precision"]: c for c in study.capacities(table)}
    assert by_precision["fp32"]["capacity_bits_per_param"] == 3.05 and by_precision["fp32"]["at_N"] == 768
    assert by_precision["fp32"]["saturated"] is True and by_precision["fp32"]["runs"] == 3
    assert by_precision["fp32"]["sizes"] == 3 and by_precision["fp32"]["at_epochs"] == 1000
    assert by_precision["bf16"]["saturated"] is False


def test_the_committed_morris_table_merges_with_itself_unchanged():
    study = load_script("memorization_study")
    table = pd.read_csv(RESULTS / "memorization_morris.csv")
    merged = study.merge_tables(table, pd.DataFrame(columns=study.COLUMNS))
    pd.testing.assert_frame_equal(merged, table.sort_values(study.KEY).reset_index(drop=True), check_dtype=False)


def test_curves_are_read_from_finished_run_folders_with_epochs_and_merged_with_an_earlier_table(tmp_path):
    """The committed example run (N = 32, batch 32: one step an epoch) laid out as a study folder."""
    import argparse
    import shutil

    study = load_script("memorization_study")
    run = RESULTS / "memorization_example"
    out = tmp_path / "study"
    shutil.copytree(run, study.run_folder(out, "gpt2-1-1", 16, "fp32", 32))
    study.MODELS["EX"] = ("gpt2-1-1", 16, (32,))
    earlier = tmp_path / "earlier.csv"
    pd.DataFrame([{"model": "gpt2-1-1", "head_dim": 32, "precision": "fp32", "N": 512, "epochs": 1000,
                   "epoch": 1000.0, "step": 8000,
                   "memorized_bits": 226395.7, "bits_per_param": 2.8901}]).to_csv(earlier, index=False)
    args = argparse.Namespace(models=["EX"], precisions=["fp32"], N=None, batch_size=64, with_curves=str(earlier))
    lines = study.curves(args, out)
    mine = lines[lines["N"] == 32]
    recorded = pd.read_json(run / "memorization.json", typ="series")
    assert len(mine) == len(recorded["history"]) and (mine["epoch"] == mine["step"]).all()
    assert mine["bits_per_param"].iloc[-1] == round(recorded["bits_per_param"], 4)
    assert lines[lines["N"] == 512]["bits_per_param"].tolist() == [2.8901]  # the earlier run, kept
    assert study.plot_curves(lines, str(tmp_path / "curves.png")).endswith("curves.png")


def test_the_plateau_is_fitted_over_the_sizes_of_one_budget():
    study = load_script("memorization_study")
    runs = [dict(row(n, b), data_bits=n * 704.0, epochs=1000) for n, b in ((256, 2.27), (512, 2.89), (768, 2.91))]
    alike = pd.DataFrame(runs)
    [fit] = study.summarize(alike)
    assert (fit["precision"], fit["epochs"], fit["sizes"]) == ("fp32", 1000, 3)
    assert fit["fit"].ci is None and "no interval: 3 dataset sizes" in str(fit["fit"])  # 3 points: no bootstrap
    mixed = alike.assign(epochs=[1000, 1000, 3000])
    assert study.summarize(mixed) == []  # two sizes a budget: no curve
    # four sizes at 1,000 epochs and a longer schedule of one of them: the fit takes the four, with an interval
    longer = pd.concat([alike, pd.DataFrame([dict(row(1280, 2.99), data_bits=1280 * 704.0, epochs=1000),
                                             dict(row(768, 3.03), data_bits=768 * 704.0, epochs=5000)])])
    [fit] = study.summarize(longer)
    assert (fit["epochs"], fit["sizes"]) == (1000, 4) and fit["fit"].ci is not None
    assert fit["fit"].data_bits.max() == 1280 * 704.0
    # every set memorized whole: no plateau, said instead of raised
    whole = alike.assign(memorized_bits=alike["data_bits"] * 0.99)
    [fit] = study.summarize(whole)
    assert fit["fit"] is None and "plateau is beyond the data" in fit["error"]


def test_the_training_length_trend_is_the_gain_per_tenfold_budget_and_where_it_reaches_a_target():
    study = load_script("memorization_study")
    table = pd.DataFrame([row(768, 2.9, epochs=1000), row(768, 3.1, epochs=10_000), row(512, 2.89),
                          row(768, 2.7, "bf16", epochs=1000), row(768, 2.7, "bf16", epochs=3000)])
    trend = {t["precision"]: t for t in study.training_length_trend(table, target=3.3)}
    assert trend["fp32"]["budgets"] == [1000, 10_000] and trend["fp32"]["N"] == 768
    assert abs(trend["fp32"]["gain_per_tenfold"] - 0.2) < 1e-9
    assert abs(trend["fp32"]["epochs_for_target"] - 100_000) < 1e-3
    # Morris et al.'s 2,048 × 10⁶ presentations of 768 sequences: ~2.7M epochs, where this line reads 2.9 + 0.2 · 3.43
    assert abs(trend["fp32"]["morris_epochs"] - 2_048e6 / 768) < 1e-6
    assert abs(trend["fp32"]["at_morris_epochs"] - (2.9 + 0.2 * (math.log10(2_048e6 / 768) - 3))) < 1e-9
    assert trend["bf16"]["epochs_for_target"] is None  # flat: no budget reaches it
