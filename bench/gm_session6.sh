#!/usr/bin/env bash
# The sixth session's accuracy run (2026-11-29): IDC (multi-formation, factor 2) at IPC 50 on
# Fashion-MNIST for 40 CPU-minutes on one thread, then its evaluation under the `fast` protocol
# (3 models). gm_run resumes from its checkpoint when rerun.
# Chain B (run beside chain A below, `bash bench/gm_session6.sh b`): IDC at IPC 1 resumed from the
# first session's 5-iteration run (eager, 1,462 CPU-s) on the fused kernels, to 80 CPU-minutes
# in all (IDC1_STOP=<CPU-minutes> continues it further, e.g. toward the published 2000
# iterations), then its snapshots evaluated the same way. Chain C (`... c`): DCC with DSA (`dsac`) at
# IPC 1 for 100 iterations, as the DCC row.

set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
if [ "${1:-a}" = c ]; then  # chain C: DCC's DSA variant (preset dsac) at IPC 1, like the DCC row
  python bench/gm_run.py --method dcc --preset dsac --ipc 1 --iterations 100 --threads 1 --fused --at-iters 50,100 --tag dsac_ipc1_it100
  python bench/gm_eval.py bench/out/gm/dsac_ipc1_it100/final --protocol fast --threads 1 --fused --out gm_eval_dsac
  exit 0
fi
if [ "${1:-a}" = b ]; then
  python bench/gm_run.py --method idc --ipc 1 --iterations 2000 --threads 1 --fused --at-iters 1,2,5,10 --at-cpu-min 5,10,20,40,60,80,${IDC1_STOP:-80} --stop-cpu-min ${IDC1_STOP:-80} --tag idc_fashion-mnist_ipc1_cpu20_fp32_s0
  python bench/gm_eval.py bench/out/gm/idc_fashion-mnist_ipc1_cpu20_fp32_s0/cpu40min bench/out/gm/idc_fashion-mnist_ipc1_cpu20_fp32_s0/cpu${IDC1_STOP:-80}min --protocol fast --threads 1 --fused --out gm_eval_idc1_cpu${IDC1_STOP:-80}
  exit 0
fi
python bench/gm_run.py --method idc --ipc 50 --iterations 2000 --threads 1 --fused --at-cpu-min 20,40 --stop-cpu-min 40 --tag idc_ipc50_cpu40
python bench/gm_eval.py bench/out/gm/idc_ipc50_cpu40/cpu40min --protocol fast --threads 1 --fused --out gm_eval_idc50
