#!/usr/bin/env bash
# Issue 6 benchmarks (node classification), in priority order. Usage: bash bench/graph_all.sh DATA_ROOT
# DATA_ROOT holds writable copies of ../shared/data/planetoid (as planetoid/) and graphs/TU (as TU/).
# Each step writes bench/results/<name>.json as rows arrive; later steps may be cut by the time box.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-/tmp/gdata}
P=${PRESET:-cpu-100}
python bench/graph_node.py --dataset cora --data-dir "$R/planetoid" --ratios 0.026 \
  --methods gcond,random,herding,kcenter --preset "$P" --cross-ratio 0.026 --name graph_node_cora_026
python bench/graph_node.py --dataset cora --data-dir "$R/planetoid" --ratios 0.013,0.052 \
  --methods gcond,random,herding,kcenter --preset "$P" --gcdm-ratio 0.013 --no-full \
  --name graph_node_cora_other
python bench/graph_node.py --dataset citeseer --data-dir "$R/planetoid" --ratios 0.018,0.009,0.036 \
  --methods gcond,random,herding,kcenter --preset "$P" --name graph_node_citeseer
