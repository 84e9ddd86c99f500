#!/usr/bin/env bash
# A paper-scale bioS point (1.12M parameters, 1000 exposures, ~10 min on one H100/H200) added to the capacity-law
# figure next to the CPU ladder.
#   bash examples/gpu/capacity_law_point.sh                      # examples/sweeps/gpu_capacity_law_bios.yaml
#   bash examples/gpu/capacity_law_point.sh my_point.yaml        # another sweep config
# Install first with the torch build of your GPU (see examples/gpu/calibrate.sh). A run killed part-way resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
config="${1:-examples/sweeps/gpu_capacity_law_bios.yaml}"
out="$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$config")"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this recipe is for a GPU'; print('GPU:', torch.cuda.get_device_name())"
start=$(date +%s)
hf-capacity sweep "$config"
echo "trained in $(( $(date +%s) - start )) s"
python scripts/capacity_law_table.py "$out" --with-table docs/results/capacity_law.csv \
    -o docs/results/capacity_law.csv --figure docs/figures/capacity_law.png
