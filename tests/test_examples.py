"""The example scripts run as a user would run them: as subprocesses, with the tiniest settings."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--model", "gpt2-1-1", "--head-dim", "16", "--vocab-size", "300", "--context-length", "64",
        "--batch-size", "2"]


def run_script(command: list[str], tmp_path: Path, timeout: int, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_with_trainer_prints_the_knowledge_report(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(EXAMPLES / "train_with_trainer.py"), "--N", "8", "--max-steps", "4",
               *TINY, "--output-dir", str(out)]
    result = run_script(command, tmp_path, timeout=120)
    assert "Knowledge report: bioS(N=8), evaluated on 8 people" in result.stdout
    assert "bits per parameter R(F)" in result.stdout
    results = json.loads((out / "results.json").read_text())  # written by the report callback
    assert results["n_people"] == 8 and results["bits_max"] > 0


@pytest.mark.slow
def test_accelerate_example_on_two_cpu_processes_matches_one_process(tmp_path):
    n_people = 21  # odd: the ranks get 11 and 10 people
    report_file = tmp_path / "check.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(EXAMPLES / "accelerate_multi_process.py"), "--N", str(n_people), "--max-steps", "4", *TINY,
        "--output-dir", str(tmp_path / "run"), "--check-single-process", "--report-file", str(report_file),
    ]
    result = run_script(command, tmp_path, timeout=300, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    assert result.stdout.count("Knowledge report:") == 1  # only rank 0 prints
    (line,) = report_file.read_text().splitlines()  # only rank 0 writes
    check = json.loads(line)
    assert check["num_processes"] == 2
    assert sorted(check["people_per_rank"]) == [10, 11]  # really sharded
    assert [r["rank"] for r in check["per_rank"]] == [0, 1]
    assert check["sharded"]["n_evaluated"] == check["single_process"]["n_evaluated"] == n_people
    for key in ("p1", "p2", "bits"):
        assert check["sharded"][key] == pytest.approx(check["single_process"][key], rel=1e-6, abs=1e-9)
        assert check["callback"][key] == pytest.approx(check["single_process"][key], rel=1e-6, abs=1e-9)
    assert check["match"] is True


def test_the_slurm_array_task_plans_its_shard_through_accelerate_launch(tmp_path):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "output_dir": str(tmp_path / "sweep"),
        "base": {"n_people": 8, "model": "gpt2-1-1", "head_dim": 16, "context_length": 64, "vocab_size": 300,
                 "exposures": 1, "batch_size": 2},
        "grid": {"seed": [0, 1, 2, 3]},
    }))
    result = run_script(["bash", str(EXAMPLES / "slurm" / "sweep.sbatch"), str(config)], tmp_path, timeout=300,
                        SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", HF_CAPACITY_DRY_RUN="1")
    assert "(shard 1/2: 2 of 4)" in result.stdout
    assert "dry run: 2 runs" in result.stdout and "nothing was trained" in result.stdout
    assert not (tmp_path / "sweep").exists()
    missing = subprocess.run(["bash", str(EXAMPLES / "slurm" / "sweep.sbatch"), str(config)], cwd=tmp_path,
                             capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                   if not k.startswith("SLURM_")})
    assert missing.returncode != 0 and "job array" in missing.stderr


@pytest.mark.parametrize("recipe, sweep", [("calibrate.sh", "gpu_calibration"),
                                           ("capacity_law_point.sh", "gpu_capacity_law_bios")])
def test_the_gpu_recipes_refuse_to_run_without_a_gpu(tmp_path, recipe, sweep):
    result = subprocess.run(["bash", str(EXAMPLES / "gpu" / recipe)], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert result.returncode != 0 and "no CUDA device" in result.stderr
    assert not (EXAMPLES.parent / "sweeps" / sweep).exists()


def test_the_gpu_capacity_law_point_is_a_valid_sweep(capsys):
    from hf_capacity.cli import main as cli

    cli(["sweep", str(EXAMPLES / "sweeps" / "gpu_capacity_law_bios.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert "dry run: 1 runs" in out or "dry run: 1 run " in out


def test_the_junk_study_is_a_valid_sweep_with_one_p_with_and_without_junk(capsys):
    import re

    from hf_capacity.cli import main as cli

    cli(["sweep", str(EXAMPLES / "sweeps" / "cpu_junk.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert "dry run: 3 runs" in out
    params = re.findall(r"P = ([\d,]+)", out)
    assert len(params) == 3 and params[0] == params[1]  # junk adds no parameters; the domain token adds one row
