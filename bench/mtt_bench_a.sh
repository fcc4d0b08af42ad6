#!/usr/bin/env bash
# The memory and speed benchmarks of the trajectory family, in one lock acquisition:
#   flock /tmp/datadistill-bench.lock bash bench/mtt_bench_a.sh
set -u
cd "$(dirname "$0")"
BENCH_THREADS=${BENCH_THREADS:-1} python mtt_memory.py
python mtt_speed.py
