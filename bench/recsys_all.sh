#!/usr/bin/env bash
# Issue 7's benchmark rows as they were produced (each command resumes: finished items are
# skipped). Parts run side by side write separate result files (--part), merged by the report.
#   nohup bash bench/recsys_all.sh > bench/logs/recsys_all.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
B="python bench/recsys_distill_cf.py"
$B --stages distill --sizes 500 --seeds 0 --preset cpu &                       # part "" (main file)
( $B --part _b --stages refs --ref-models inf-ae,ease
  $B --part _b --stages subsets --sizes 100,200,500 ) &
wait
$B --part _c --stages distill --sizes 100,200 --seeds 0 --preset cpu
$B --part _c --stages scaling --preset cpu
$B --part _c --stages refs --ref-models mf
