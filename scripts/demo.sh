#!/usr/bin/env bash
# Install everything and run the demo: distill the embedded digits data with DM, evaluate
# against a random subset of the same size, write a picture, print a results table.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.2,<3" --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e .
datadistill demo --out runs/demo "$@"
