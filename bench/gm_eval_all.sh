#!/usr/bin/env bash
# Evaluate every snapshot that the third session's gradient-matching runs produced (issue 3).
# gm_eval.py skips what is already in its result file, so rerunning continues.
#   nohup bash bench/gm_eval_all.sh > bench/logs/gm_eval_all.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
G=bench/out/gm
ev() { out="$1"; proto="$2"; models="$3"; shift 3
  for s in "$@"; do [ -f "$s/summary.json" ] && python bench/gm_eval.py --protocol "$proto" \
    --num-models "$models" --threads 1 --out "$out" "$s"; done; }
# IPC 1, the published 1000 iterations: the issue's reproduction target (paper protocol, 5 models)
ev gm_eval_ipc1_paper_dc paper 5 $G/dc_fashion-mnist_ipc1_it1000_fp32_s0/final
ev gm_eval_ipc1_paper_dsa paper 5 $G/dsa_fashion-mnist_ipc1_it1000_fp32_s0/final
ev gm_eval_ipc1_paper paper 5 $G/dc_fashion-mnist_ipc1_it1000_fp32_s0/it300 \
  $G/dsa_fashion-mnist_ipc1_it1000_fp32_s0/it300
# time to accuracy (fast protocol, 3 models, like the DM IPC 10 rows of the foundation section)
ev gm_eval_tta fast 3 $G/dsa_fashion-mnist_ipc1_it1000_fp32_s0/cpu15min \
  $G/dsa_fashion-mnist_ipc1_it1000_fp32_s0/cpu60min \
  $G/dm_tta_ipc1/cpu1min $G/dm_tta_ipc1/cpu5min $G/dm_tta_ipc1/cpu15min $G/dm_tta_ipc1/cpu60min \
  $G/dsa_tta_ipc10/cpu5min $G/dsa_tta_ipc10/cpu15min $G/dsa_tta_ipc10/cpu30min
# DCC vs DC, and DC in bf16 vs fp32, at the same 100 iterations; IDC after 20 CPU-minutes
ev gm_eval_other fast 3 $G/dc_fashion-mnist_ipc1_it1000_fp32_s0/it100 \
  $G/dc_fashion-mnist_ipc1_it100_bf16_s0/final \
  $G/dcc_fashion-mnist_ipc1_it100_fp32_s0/final $G/idc_fashion-mnist_ipc1_cpu20_fp32_s0/cpu20min
