"""Packaging: the wheel's package list covers the source tree, and shipped data files are found."""

from pathlib import Path

import tomllib

from hf_capacity.report import CARD_TEMPLATE, _template_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "hf_capacity").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert "hf_capacity.model_cards" in listed  # mapped from the top-level model_cards/ folder


def test_model_card_template_is_found():
    assert _template_path(CARD_TEMPLATE).read_text().startswith("# {model_name}")


def _relative_imports(package: Path) -> dict[str, set[str]]:
    """module → the modules of ``package`` it imports (at the top or inside functions), from its source."""
    import ast

    modules = {p.stem: p for p in package.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    targets.add(node.module.split(".")[0])
                else:
                    targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules} | ({"__init__"} if name == "__main__" else set())
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_cli_and_sweep_modules_import_no_cycle():
    for package in ("cli", "sweep"):
        graph = _relative_imports(ROOT / "hf_capacity" / package)
        assert len(graph) > 3
        cycle = _cycle(graph)
        assert cycle is None, f"hf_capacity.{package}: import cycle {' → '.join(cycle)}"


def test_every_file_the_package_names_exists():
    # docstrings and comments point readers at tests, examples, scripts, ...; the metric card's front matter names
    # the files of its Hub Space
    import re

    import yaml

    named = re.compile(r"\b(?:tests|examples|benchmarks|scripts|docs|model_cards)/[\w./-]+\.(?:py|md|yaml|csv|json)")
    missing = []
    for path in [*(ROOT / "hf_capacity").rglob("*.py"), *(ROOT / "hf_capacity").rglob("*.md"), ROOT / "README.md",
                 *(ROOT / "docs").rglob("*.md")]:
        missing += [f"{path.relative_to(ROOT)}: {name}" for name in named.findall(path.read_text())
                    if not (ROOT / name).exists()]
    card = ROOT / "hf_capacity" / "metrics" / "knowledge_bits" / "README.md"
    front = yaml.safe_load(card.read_text().split("---")[1])
    missing += [f"{card.relative_to(ROOT)}: {front[key]}" for key in ("app_file",)
                if key in front and not (card.parent / front[key]).exists()]
    assert not missing, missing


def test_the_front_page_is_the_long_description(tmp_path):
    """pyproject's `readme` builds into the wheel's metadata as markdown, the whole front page."""
    import subprocess
    import sys

    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    metadata = (tmp_path / result.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    header, _, description = metadata.partition("\n\n")
    assert "Description-Content-Type: text/markdown" in header
    assert description.strip() == (ROOT / "README.md").read_text().strip()
