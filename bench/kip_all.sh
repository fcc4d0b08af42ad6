#!/usr/bin/env bash
# The meta-model family's benchmarks in one lock hold: timing (+ KIP scaling), then accuracy.
#   OMP_NUM_THREADS=1 flock /tmp/datadistill-bench.lock bash bench/kip_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
python bench/kip_timing.py --threads 1
python bench/kip_accuracy.py --threads 1
