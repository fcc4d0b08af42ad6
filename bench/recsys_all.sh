#!/usr/bin/env bash
# Issue 7's benchmark rows, as they were produced on 2026-11-28 (four parts side by side, each
# writing its own bench/results/recsys_movietweetings<part>.json; finished items are skipped on a
# rerun). Then: # the soft summaries (today's cpu preset), one process after the other:
$B --part _soft --stages distill --sizes 500 --seeds 0,1 --preset cpu
$B --part _soft --stages distill --sizes 100,200 --seeds 0 --preset cpu
# how the cpu preset was chosen (validation split only): bench/results/recsys_movietweetings_val.log
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100}'        (published; stopped at step 50)
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100, "estimator": "mean"}'
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100, "estimator": "mean", "lr_data": 0.2}'
#   python bench/recsys_trajectory.py full
python bench/recsys_report.py  -> the BENCHMARKS.md tables.
#   nohup bash bench/recsys_all.sh > bench/logs/recsys_all.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
B="python bench/recsys_distill_cf.py"
$B --stages distill --sizes 500 --seeds 0 --preset cpu &   # "cpu" then = today's cpu-binary
( $B --part _b --stages refs --ref-models inf-ae,ease
  $B --part _b --stages subsets --sizes 100,200,500 ) &
$B --part _c --stages distill --sizes 100,200 --seeds 0 --preset cpu &   # (cpu-binary)
$B --part _e --stages scaling --preset cpu &
$B --part _f --stages refs --ref-models mf &
wait
# not finished inside the session (the 500-user seed-1 run needed ~70 min under the day's load):
# $B --part _d --stages distill --sizes 100,200,500 --seeds 1 --preset cpu
# the soft summaries (today's cpu preset), one process after the other:
$B --part _soft --stages distill --sizes 500 --seeds 0,1 --preset cpu
$B --part _soft --stages distill --sizes 100,200 --seeds 0 --preset cpu
# how the cpu preset was chosen (validation split only): bench/results/recsys_movietweetings_val.log
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100}'        (published; stopped at step 50)
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100, "estimator": "mean"}'
#   python bench/recsys_trajectory.py 500 none '{"iterations": 100, "estimator": "mean", "lr_data": 0.2}'
#   python bench/recsys_trajectory.py full
python bench/recsys_report.py
