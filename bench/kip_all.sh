#!/usr/bin/env bash
# The meta-model family's benchmarks: timing (+ KIP scaling) and accuracy, side by side.
#   OMP_WAIT_POLICY=PASSIVE flock /tmp/datadistill-bench.lock bash bench/kip_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
python bench/kip_timing.py --threads 2 > bench/logs/meta_timing.log 2>&1 &
python bench/kip_accuracy.py --threads 2 > bench/logs/meta_accuracy.log 2>&1 &
wait
