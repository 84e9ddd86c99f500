#!/usr/bin/env bash
# Install hf-capacity with its test extra and run the tests (CPU torch first, so no CUDA build is pulled).
#   bash scripts/test.sh             the tested versions (scripts/constraints.txt), then the fast suite
#   bash scripts/test.sh --latest    the newest releases that pyproject.toml allows instead (what a plain
#                                    `pip install hf-capacity` picks today); torch stays at 2.13.0 CPU
#   bash scripts/test.sh -m slow     other arguments go to pytest (here: the slow end-to-end tests)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"  # scipy fits: no BLAS thread oversubscription
pins=(-c scripts/constraints.txt)
if [[ "${1:-}" == "--latest" ]]; then
    shift
    torch_only="$(mktemp)"; echo "torch==2.13.0" > "$torch_only"
    pins=(-c "$torch_only" --upgrade --upgrade-strategy eager)
fi
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet "${pins[@]}" -e ".[test]"
python - <<'PY'
from importlib.metadata import version
names = "torch transformers datasets tokenizers accelerate peft bitsandbytes evaluate huggingface_hub".split()
print("testing on " + ", ".join(f"{n} {version(n)}" for n in names))
PY
python -m ruff check .  # lint (pyproject.toml [tool.ruff]): fails the script before the tests on any error
python -m pytest -q "$@"
