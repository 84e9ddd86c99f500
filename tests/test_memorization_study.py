"""scripts/memorization_study.py: tables kept across machines and Morris et al.'s capacity (max over dataset sizes)."""

import pandas as pd
from test_committed_results import RESULTS, load_script


def row(N, bits_per_param, precision="fp32", saturated=False):
    return {"model": "gpt2-1-1", "head_dim": 32, "precision": precision, "num_params": 78336, "N": N,
            "memorized_bits": bits_per_param * 78336, "bits_per_param": bits_per_param, "saturated": saturated}


def test_a_run_finished_here_replaces_its_earlier_row_and_the_others_are_kept():
    study = load_script("memorization_study")
    earlier = pd.DataFrame([row(256, 2.27, saturated=True), row(512, 2.89), row(768, 2.70)])
    here = pd.DataFrame([row(768, 3.05, saturated=True), row(512, 2.80, "bf16")], columns=study.COLUMNS)
    merged = study.merge_tables(earlier, here)
    assert list(zip(merged["precision"], merged["N"], merged["bits_per_param"])) == [
        ("bf16", 512, 2.80), ("fp32", 256, 2.27), ("fp32", 512, 2.89), ("fp32", 768, 3.05)]


def test_capacity_is_the_most_memorized_over_dataset_sizes_with_its_saturation():
    study = load_script("memorization_study")
    table = pd.DataFrame([row(256, 2.27, saturated=True), row(512, 2.89), row(768, 3.05, saturated=True),
                          row(512, 2.60, "bf16")])
    by_precision = {c["precision"]: c for c in study.capacities(table)}
    assert by_precision["fp32"]["capacity_bits_per_param"] == 3.05 and by_precision["fp32"]["at_N"] == 768
    assert by_precision["fp32"]["saturated"] is True and by_precision["fp32"]["runs"] == 3
    assert by_precision["bf16"]["saturated"] is False


def test_the_committed_morris_table_merges_with_itself_unchanged():
    study = load_script("memorization_study")
    table = pd.read_csv(RESULTS / "memorization_morris.csv")
    merged = study.merge_tables(table, pd.DataFrame(columns=study.COLUMNS))
    pd.testing.assert_frame_equal(merged, table.sort_values(study.KEY).reset_index(drop=True), check_dtype=False)
