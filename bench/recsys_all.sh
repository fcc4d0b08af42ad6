#!/usr/bin/env bash
# Issue 7's benchmark rows, as they were produced on 2026-11-28 (four parts side by side, each
# writing its own bench/results/recsys_movietweetings<part>.json; finished items are skipped on a
# rerun). Then: python bench/recsys_report.py  -> the BENCHMARKS.md tables.
#   nohup bash bench/recsys_all.sh > bench/logs/recsys_all.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
B="python bench/recsys_distill_cf.py"
$B --stages distill --sizes 500 --seeds 0 --preset cpu &
( $B --part _b --stages refs --ref-models inf-ae,ease
  $B --part _b --stages subsets --sizes 100,200,500 ) &
$B --part _c --stages distill --sizes 100,200 --seeds 0 --preset cpu &
$B --part _e --stages scaling --preset cpu &
$B --part _f --stages refs --ref-models mf &
wait
# not finished inside the session (the 500-user seed-1 run needed ~70 min under the day's load):
# $B --part _d --stages distill --sizes 100,200,500 --seeds 1 --preset cpu
python bench/recsys_report.py
