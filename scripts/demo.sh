#!/usr/bin/env bash
# Install hf-capacity (CPU torch first, so no CUDA build is pulled) and run the default demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
hf-capacity demo "$@"
