#!/usr/bin/env bash
# Install hf-capacity at the tested versions (CPU torch first, so no CUDA build is pulled) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -c scripts/constraints.txt -e .
hf-capacity demo "$@"
