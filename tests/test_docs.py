"""The front page and the guides run as written (their code blocks, their commands), and every relative link in
README.md and docs/ points to a file that exists."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = ROOT / "docs" / "guides"


def test_measure_your_own_model_script_runs_as_written(tmp_path):
    script = re.search(r"```python\n(.*?)```", (GUIDES / "own_model.md").read_text(), re.S).group(1)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              # one thread: two OpenMP threads on a loaded machine spin-wait
                                              # for each other (this test took 21 s quiet, > 900 s under load)
                                              "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "exposures per person: 300 (every person exactly)" in result.stdout
    learned = int(re.search(r"bits learned\s+([\d,]+)", result.stdout).group(1).replace(",", ""))
    assert learned > 0, result.stdout[-2000:]


def test_the_adapter_command_parses_and_builds_its_run(monkeypatch):
    """The adapters guide's LoRA command, as written (from the repository root), is a valid adapter run on the
    committed calibration model: its flags parse, the run config validates, and the data is the base's format."""
    import shlex

    from hf_capacity.cli import build_parser
    from hf_capacity.cli.run import _training_config
    from hf_capacity.training import build_data

    section = (GUIDES / "adapters.md").read_text()
    command = re.search(r"```bash\n(.*?)\n", section.replace("\\\n", " "), re.S).group(1)
    argv = shlex.split(command)[1:]
    monkeypatch.chdir(ROOT)
    args = build_parser().parse_args(argv)
    config = _training_config(args)
    assert config.lora_r == 8 and config.dataset == "bioD" and config.biod["diversity"] == 1000
    data = build_data(config)
    assert data.population.name_offset == 1500 and data.population.n_people == 300


def test_the_evaluate_metric_snippet_runs_as_written_on_a_trained_folder(tmp_path):
    """The metric guide's `evaluate` example, on a tiny `hf-capacity train` folder: the bits of evaluate_knowledge."""
    from hf_capacity.training import CapacityTrainingConfig, train_capacity

    folder = tmp_path / "runs" / "gpt2-2-2_N2000"
    train_capacity(CapacityTrainingConfig(output_dir=str(folder), n_people=20, model="gpt2-1-1", head_dim=16,
                                          context_length=128, batch_size=4, vocab_size=400, max_steps=2,
                                          warmup_steps=1, exposures=1, progress=False))
    script = re.search(r"```python\n(.*?)```", (GUIDES / "metric.md").read_text(), re.S).group(1)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    measured = re.search(r"([\d,.]+) bits, ([\d.]+) bits/param \(evaluate_knowledge: ([\d,.]+) bits\)", result.stdout)
    assert measured, result.stdout[-2000:]
    assert measured[1] == measured[3]


def test_the_quick_start_runs_as_written_at_a_tiny_size(tmp_path):
    """The front page's Trainer quick start, with the people, exposures and model made tiny (the rest as written):
    it trains, and evaluate() returns the bits per parameter."""
    script = re.search(r"## Quick start.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    tiny_sizes = [("n_people=200", "n_people=8"), ("exposures=10", "exposures=1"), ('"gpt2-2-2"', '"gpt2-1-1"')]
    for written, tiny in tiny_sizes:
        assert written in script, written
        script = script.replace(written, tiny)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                              "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                              "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert float(result.stdout.strip().splitlines()[-1]) >= 0
    assert (tmp_path / "runs" / "quickstart" / "results.json").is_file()


def test_the_data_guide_snippet_runs_at_a_tiny_size():
    """The data guide's Python, with 30 people instead of 10,000 and 2 exposures instead of 100."""
    code = re.search(r"```python\n(.*?)```", (GUIDES / "data.md").read_text(), re.S).group(1)
    for written, tiny in [("n_people=10_000", "n_people=30"), ("exposures=100", "exposures=2")]:
        assert written in code, written
        code = code.replace(written, tiny)
    namespace = {}
    exec(code, namespace)
    assert namespace["train"].num_rows > 0 and namespace["data"].bits_max().total > 0


def test_the_data_guide_junk_snippet_runs_at_a_tiny_size(capsys):
    """The data guide's bioD junk example, with 30 useful people instead of 1500."""
    code = re.findall(r"```python\n(.*?)```", (GUIDES / "data.md").read_text(), re.S)[1]
    assert "n_people=1500" in code
    namespace = {}
    exec(code.replace("n_people=1500", "n_people=30"), namespace)
    data, item = namespace["data"], next(iter(namespace["train"]))
    assert data.junk_renderer.population.name_offset == 30 and len(item["input_ids"]) == 256
    assert namespace["KnowledgeData"](data.population, data.tokenizer, domain_token=True).bits_max() == data.bits_max()


def test_the_data_guide_long_run_snippet_trains_without_labels_in_the_table(tmp_path):
    """The data guide's last Python (a Trainer over a table without labels), at 30 people and 2 exposures: the
    collator gives the Trainer its labels, and it trains."""
    import math

    code = re.findall(r"```python\n(.*?)```", (GUIDES / "data.md").read_text(), re.S)[-1]
    for written, tiny in [("n_people=1500", "n_people=30"), ("exposures=1000", "exposures=2"),
                          ('"runs/long"', repr(str(tmp_path / "long")))]:
        assert written in code, written
        code = code.replace(written, tiny)
    namespace = {}
    exec(code, namespace)
    trainer = namespace["trainer"]
    assert "labels" not in namespace["train"].column_names
    assert "labels" in next(iter(trainer.get_train_dataloader()))
    trainer.args.max_steps, trainer.args.disable_tqdm = 3, True
    assert math.isfinite(trainer.train().training_loss)


def _commands(markdown: str) -> list[str]:
    """The `hf-capacity` command lines in the bash blocks of a markdown text: continuations joined, comments and
    leading environment settings dropped, `a && b` and `a &` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for command in re.split(r"&&|&$", line.split(" #", 1)[0]):
                command = re.sub(r"^(\w+=\S+ )+", "", command.strip())
                if command.startswith("hf-capacity "):
                    commands.append(command)
    return commands


def test_the_command_lines_of_the_front_page_and_the_docs_parse():
    """Every `hf-capacity` command in the bash blocks of README.md and docs/ is a valid command line (parsed, not
    run), and the front page's command-line block shows the main commands."""
    import shlex

    from hf_capacity.cli import build_parser

    block = re.search(r"## Command line\n+```bash\n.*?```", README.read_text(), re.S).group(0)
    front = [c.split()[1] for c in _commands(block)]
    assert {"budget", "train", "eval", "sweep", "fit", "plot", "memorize"} <= set(front), front
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    commands = [(page, c) for page in pages for c in _commands(page.read_text())]
    assert len(commands) > 30
    for page, command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            raise AssertionError(f"{page.relative_to(ROOT)}: {command}") from None


def _slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_in_the_docs_points_to_an_existing_file():
    """Links and images in README.md and docs/**/*.md: the file (or folder) exists, and an anchor into a markdown
    file names one of its headings."""
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    assert len(pages) > 15
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"(?m)^#+ (.*)$", re.sub(r"```.*?```", "", file.read_text(), flags=re.S))
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken
