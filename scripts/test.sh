#!/usr/bin/env bash
# Install hf-capacity with its test extra (CPU torch first, so no CUDA build is pulled) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"  # scipy fits: no BLAS thread oversubscription
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
