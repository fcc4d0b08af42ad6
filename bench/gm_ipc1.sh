#!/usr/bin/env bash
# The IPC-1 accuracy runs of issue 3: DC and DSA on Fashion-MNIST, the published 1000 iterations,
# run side by side (one thread each) so both progress equally; snapshots by iteration and by
# CPU-minutes (the DSA ones feed the time-to-accuracy table). Run through the bench lock:
#   nohup flock /tmp/datadistill-bench.lock bash bench/gm_ipc1.sh fp32 > bench/logs/gm_ipc1.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
prec="${1:-fp32}"
for m in dc dsa; do
  python bench/gm_run.py --method "$m" --ipc 1 --iterations 1000 --precision "$prec" --threads 1 \
    --at-iters 50,100,200,300,500,700,1000 --at-cpu-min 5,15,60 &
done
wait
