#!/usr/bin/env bash
# Install everything (CPU torch first, so pip does not pull a CUDA build) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.2,<3" --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q -e ".[test,graph]"
python -m pytest -q "$@"
