"""Write scripts/constraints.txt: the exact installed versions of hf-capacity[test] and everything it pulls in.

Run after the suite passed on the versions to pin (for example after `bash scripts/test.sh --latest`):

    python scripts/freeze_constraints.py            # writes scripts/constraints.txt
    python scripts/freeze_constraints.py --check    # exit 1 if the installed versions differ from the file

Only the dependency closure of the project is written (read from the installed packages' metadata), not
whatever else the environment holds; torch stays at the CPU build the set-up scripts install.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "constraints.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Installed ``{name: version}`` of every package that ``root[extras]`` requires, transitively."""
    pins: dict[str, str] = {}
    todo = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, wanted = todo.pop()
        if (canonical(name), wanted) in seen:
            continue
        seen.add((canonical(name), wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency whose marker matched but that pip did not need to install
        if canonical(name) != canonical(root):
            # `torch==2.13.0` admits the local build (+cpu, +cu128 …) that the machine has
            pins[canonical(dist.metadata["Name"])] = dist.version.split("+")[0]
        for line in dist.requires or []:
            req = Requirement(line)
            env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""}))
            if env_ok:
                todo.append((req.name, frozenset(req.extras)))
    return dict(sorted(pins.items()))


def render(pins: dict[str, str]) -> str:
    head = [
        "# The exact versions the test suite passed on (pip -c constraints; see scripts/test.sh).",
        "# Regenerate with: python scripts/freeze_constraints.py",
        f"# Python {sys.version.split()[0]}",
    ]
    return "\n".join(head + [f"{n}=={v}" for n, v in pins.items()]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render(closure("hf-capacity", {"test"}))
    if args.check:
        old = {line for line in OUT.read_text().splitlines() if "==" in line}
        new = {line for line in text.splitlines() if "==" in line}
        for line in sorted(old ^ new):
            print(("- " if line in old else "+ ") + line)
        return int(old != new)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
