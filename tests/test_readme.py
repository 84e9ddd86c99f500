"""The README's "Measure your own model" script runs as written: a stock Llama, its own tokenizer, a mixed corpus."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_measure_your_own_model_script_runs_as_written(tmp_path):
    section = README.read_text().split("## Measure your own model", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "exposures per person: 300 (every person exactly)" in result.stdout
    learned = int(re.search(r"bits learned\s+([\d,]+)", result.stdout).group(1).replace(",", ""))
    assert learned > 0, result.stdout[-2000:]


def test_the_adapter_command_parses_and_builds_its_run(monkeypatch):
    """The README's LoRA command, as written (from the repository root), is a valid adapter run on the committed
    calibration model: its flags parse, the run config validates, and the data is the base's format."""
    import shlex

    from hf_capacity.cli import build_parser
    from hf_capacity.cli.run import _training_config
    from hf_capacity.training import build_data

    section = README.read_text().split("## Teach a trained model new facts", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"```bash\n(.*?)\n", section.replace("\\\n", " "), re.S).group(1)
    argv = shlex.split(command)[1:]
    monkeypatch.chdir(README.parent)
    args = build_parser().parse_args(argv)
    config = _training_config(args)
    assert config.lora_r == 8 and config.dataset == "bioD" and config.biod["diversity"] == 1000
    data = build_data(config)
    assert data.population.name_offset == 1500 and data.population.n_people == 300


def test_the_evaluate_metric_snippet_runs_as_written_on_a_trained_folder(tmp_path):
    """The README's `evaluate` metric example, on a tiny `hf-capacity train` folder: the bits of evaluate_knowledge."""
    from hf_capacity.training import CapacityTrainingConfig, train_capacity

    folder = tmp_path / "runs" / "gpt2-2-2_N2000"
    train_capacity(CapacityTrainingConfig(output_dir=str(folder), n_people=20, model="gpt2-1-1", head_dim=16,
                                          context_length=128, batch_size=4, vocab_size=400, max_steps=2,
                                          warmup_steps=1, exposures=1, progress=False))
    section = README.read_text().split("## The `evaluate` metric", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    measured = re.search(r"([\d,.]+) bits, ([\d.]+) bits/param \(evaluate_knowledge: ([\d,.]+) bits\)", result.stdout)
    assert measured, result.stdout[-2000:]
    assert measured[1] == measured[3]
