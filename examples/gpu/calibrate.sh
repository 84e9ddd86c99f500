#!/usr/bin/env bash
# A 1000-exposure capacity point on one GPU (~10 min on an H100/H200), then its table by precision.
#   bash examples/gpu/calibrate.sh                 # examples/sweeps/gpu_calibration.yaml
#   bash examples/gpu/calibrate.sh my_sweep.yaml   # any sweep config; the table lands in its output_dir
# Install first with the torch build of your GPU, e.g. `pip install torch && pip install -e .` (not scripts/,
# which install the CPU build). A run killed part-way resumes from its last checkpoint when started again.
set -euo pipefail
cd "$(dirname "$0")/../.."
config="${1:-examples/sweeps/gpu_calibration.yaml}"
out="$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$config")"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this recipe is for a GPU'; print('GPU:', torch.cuda.get_device_name())"
start=$(date +%s)
hf-capacity sweep "$config"
echo "trained in $(( $(date +%s) - start )) s"
python scripts/calibration_table.py "$out" -o "$out/calibration.csv"
