#!/usr/bin/env bash
# DM side of the time-to-accuracy table (DSA IPC 1 comes from bench/gm_ipc1.sh): DM at IPC 1 and
# 10 on Fashion-MNIST, one thread each, snapshots at 5 and 15 CPU-minutes, then stop.
#   nohup flock /tmp/datadistill-bench.lock bash bench/gm_time_to_acc.sh > bench/logs/gm_tta.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
stop="${1:-15}"
for ipc in 1 10; do
  python bench/gm_run.py --method dm --ipc "$ipc" --iterations 20000 --threads 1 \
    --at-cpu-min 5,15,60 --stop-cpu-min "$stop" --tag "dm_tta_ipc${ipc}" &
done
wait
