#!/usr/bin/env bash
# The sixth session's accuracy run (2026-11-29): IDC (multi-formation, factor 2) at IPC 50 on
# Fashion-MNIST for 40 CPU-minutes on one thread, then its evaluation under the `fast` protocol
# (3 models). gm_run resumes from its checkpoint when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
python bench/gm_run.py --method idc --ipc 50 --iterations 2000 --threads 1 --fused --at-cpu-min 20,40 --stop-cpu-min 40 --tag idc_ipc50_cpu40
python bench/gm_eval.py bench/out/gm/idc_ipc50_cpu40/cpu40min --protocol fast --threads 1 --fused --out gm_eval_idc50
