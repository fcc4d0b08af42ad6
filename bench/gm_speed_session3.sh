#!/usr/bin/env bash
# Issue 3 speed rows of the third session, on an otherwise idle box: the roofline breakdown and
# the DC outer iteration at IPC 10 (4 variants), one thread each, side by side (CPU time).
#   bash bench/gm_speed_session3.sh > bench/logs/gm_speed_session3.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/gm_roofline.py --threads 1 --batch 100,256 &
python bench/gm_speed.py --threads 1 --cpu-time --reps 2 \
  --variants fp32:eager,fp32:compile,bf16:eager,bf16:compile \
  --flops-from bench/results/gm_speed.json --out gm_speed_cpu_stem &
wait
