#!/usr/bin/env bash
# The speed benchmark of the trajectory family (the memory benchmark, bench/mtt_memory.py, measures
# peak RSS only, which other processes do not change):
#   flock /tmp/datadistill-bench.lock bash bench/mtt_bench_a.sh
set -u
cd "$(dirname "$0")"
python mtt_speed.py
