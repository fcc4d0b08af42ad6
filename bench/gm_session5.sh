#!/usr/bin/env bash
# The fifth session's accuracy runs (2026-11-29): three single-thread chains, run side by side
# (chain A: DM time to accuracy at IPC 10, DC at IPC 50; B: IDC at IPC 10, IDC-I at IPC 1 and 10;
# C, after B: IDC-I at IPC 50). Every gm_run resumes from its checkpoint when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
chain_a() {
  python bench/gm_run.py --method dm --ipc 10 --iterations 20000 --threads 1 --at-cpu-min 5,15,30,60 --stop-cpu-min 60 --tag dm_tta_ipc10_1t
  python bench/gm_eval.py bench/out/gm/dm_tta_ipc10_1t/cpu60min bench/out/gm/dm_tta_ipc10_1t/cpu15min --protocol fast --threads 1 --fused --out gm_eval_tta60_dm10
  python bench/gm_run.py --method dc --ipc 50 --iterations 1000 --preset fast-bf16 --precision bf16 --init real --threads 1 --at-cpu-min 20 --stop-cpu-min 20 --tag dc_ipc50_bf16_cpu20
  python bench/gm_eval.py bench/out/gm/dc_ipc50_bf16_cpu20/cpu20min --protocol fast --threads 1 --fused --out gm_eval_ipc50_dc
}
chain_b() {
  python bench/gm_run.py --method idc --ipc 10 --iterations 2000 --threads 1 --fused --at-cpu-min 10,20 --stop-cpu-min 20 --tag idc_ipc10_cpu20
  python bench/gm_eval.py bench/out/gm/idc_ipc10_cpu20/cpu20min --protocol fast --threads 1 --fused --out gm_eval_idc
  python bench/gm_run.py --method idc --preset idc-i --ipc 1 --iterations 2000 --threads 1 --fused --at-cpu-min 10 --stop-cpu-min 10 --tag idci_ipc1_cpu10
  python bench/gm_eval.py bench/out/gm/idci_ipc1_cpu10/cpu10min --protocol fast --threads 1 --fused --out gm_eval_idc
  python bench/gm_run.py --method idc --preset idc-i --ipc 10 --iterations 2000 --threads 1 --fused --at-cpu-min 20 --stop-cpu-min 20 --tag idci_ipc10_cpu20
  python bench/gm_eval.py bench/out/gm/idci_ipc10_cpu20/cpu20min --protocol fast --threads 1 --fused --out gm_eval_idc
  # chain C
  python bench/gm_run.py --method idc --preset idc-i --ipc 50 --iterations 2000 --threads 1 --fused --at-cpu-min 20 --stop-cpu-min 20 --tag idci_ipc50_cpu20
  python bench/gm_eval.py bench/out/gm/idci_ipc50_cpu20/cpu20min --protocol fast --threads 1 --fused --out gm_eval_idc
}
chain_a & chain_b & wait
