"""Packaging: the wheel's package list covers the source tree, and shipped data files are found."""

import tomllib
from pathlib import Path

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
