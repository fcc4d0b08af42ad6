"""Train (or reuse) the expert trajectories of a dataset with a named expert preset and report
seconds per expert epoch beside the machine's convolution throughput measured in the same run.

    flock /tmp/datadistill-bench.lock python bench/mtt_experts.py --dataset fashion-mnist --preset cpu
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from mtt_common import conv_throughput, machine, write

from datadistill.data import load_dataset
from datadistill.experts import EXPERT_PRESETS, ExpertConfig, expert_dir, load_experts
from datadistill.runtime import tune_allocator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preset", default="cpu", choices=sorted(EXPERT_PRESETS))
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    alloc = tune_allocator()
    real = load_dataset(args.dataset)
    cfg = ExpertConfig(**EXPERT_PRESETS[args.preset])
    out = f"mtt_experts_{args.dataset}_{args.preset}.json"
    rec = {"command": f"flock /tmp/datadistill-bench.lock python bench/mtt_experts.py "
                      f"--dataset {args.dataset} --preset {args.preset}",
           "machine": machine(), "allocator": alloc, "settings": dataclasses.asdict(cfg),
           "cache": str(expert_dir(real, cfg)),
           "conv_gflops_fp32_before": conv_throughput("fp32"),
           "conv_gflops_bf16_before": conv_throughput("bf16"), "epochs": []}
    write(out, rec)
    last = [time.perf_counter()]

    def on_epoch(ev):
        now = time.perf_counter()
        rec["epochs"].append({**ev, "seconds": now - last[0]})
        last[0] = now
        write(out, rec)
        print(rec["epochs"][-1], flush=True)

    t0 = time.perf_counter()
    load_experts(real, cfg, workers=args.workers, on_epoch=on_epoch)
    rec["total_s"] = time.perf_counter() - t0
    secs = [e["seconds"] for e in rec["epochs"] if "epoch" in e]
    if secs:
        rec["seconds_per_epoch"] = sum(secs) / len(secs)
    rec["conv_gflops_fp32_after"] = conv_throughput("fp32")
    write(out, rec)
    print(rec.get("seconds_per_epoch"), rec["total_s"])


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    main()
