#!/usr/bin/env bash
# Experts (Fashion-MNIST CPU preset) and the IPC 1 accuracy rows, in one lock acquisition:
#   flock /tmp/datadistill-bench.lock bash bench/mtt_bench_b.sh
set -u
cd "$(dirname "$0")"
python mtt_accuracy.py --ipc 1 --num-experts 1 --num-models 2
