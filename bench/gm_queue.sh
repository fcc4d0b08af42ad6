#!/usr/bin/env bash
# Third session's single-thread queue for issue 3 (runs beside bench/gm_ipc1.sh):
# DCC at IPC 1 (100 of the published 1000 iterations), IDC at IPC 1 (20 CPU-minutes of the
# published 2000 iterations) and DM at IPC 1 for the time-to-accuracy table (snapshots at 5, 15
# CPU-minutes, up to DM_STOP_MIN, default 15; rerun with DM_STOP_MIN=60 to continue it). Every run checkpoints and resumes; snapshots land in bench/out/gm/.
#   nohup bash bench/gm_queue.sh > bench/logs/gm_queue.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/gm_run.py --method dcc --ipc 1 --iterations 100 --threads 1 --at-iters 50,100
python bench/gm_run.py --method idc --ipc 1 --iterations 2000 --threads 1 --at-iters 1,2,5,10 \
  --at-cpu-min 5,10,20 --stop-cpu-min 20 --tag idc_fashion-mnist_ipc1_cpu20_fp32_s0
python bench/gm_run.py --method dm --ipc 1 --iterations 20000 --threads 1 \
  --at-cpu-min 1,5,15,60 --stop-cpu-min "${DM_STOP_MIN:-15}" --tag dm_tta_ipc1
