"""Seconds per MTT / TESLA iteration on Fashion-MNIST IPC 10, syn_steps 20 (batch_syn = all),
the FLOPs of one iteration (counted by torch.utils.flop_counter: the unrolled steps and the
backward through them) and the fraction of the machine's convolution throughput measured in the
same run (before and after).

    flock /tmp/datadistill-bench.lock python bench/mtt_speed.py
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtt_common import conv_throughput, machine, write
from mtt_setup import make

from datadistill.runtime import tune_allocator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="mtt:fp32,mtt:bf16,tesla:fp32")
    ap.add_argument("--syn-steps", type=int, default=20)
    ap.add_argument("--iters", type=int, default=2)
    args = ap.parse_args()
    threads = int(os.environ.get("BENCH_THREADS", "0")) or (2 if os.getloadavg()[0] < 3 else 1)
    torch.set_num_threads(threads)
    rec = {"command": "flock /tmp/datadistill-bench.lock python bench/mtt_speed.py",
           "machine": machine(), "allocator": tune_allocator(), "threads": threads,
           "loadavg_start": os.getloadavg()[0],
           "setting": f"fashion-mnist IPC 10, ConvNet-128-3, syn_steps {args.syn_steps}, "
                      "batch_syn = all, DSA",
           "conv_gflops_before": {p: conv_throughput(p) for p in ("fp32", "bf16")}, "rows": []}
    out = "mtt_speed.json"
    write(out, rec)
    real = None
    for run in args.runs.split(","):
        method, prec = run.split(":")
        real, d, syn = make(method, real, syn_steps=args.syn_steps, precision=prec)
        with FlopCounterMode(display=False) as fc:
            d.step(real, syn)  # also the warm-up
        flops = fc.get_total_flops()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            d.step(real, syn)
            times.append(time.perf_counter() - t0)
        thr = conv_throughput(prec)
        s = min(times)
        row = {"method": method, "precision": prec, "s_per_iter": times, "gflop_per_iter": flops / 1e9,
               "achieved_gflops": flops / 1e9 / s, "conv_gflops_same_run": thr,
               "fraction_of_conv_throughput": flops / 1e9 / s / thr,
               "loadavg": os.getloadavg()[0]}
        rec["rows"].append(row)
        print(row, flush=True)
        write(out, rec)
    rec["conv_gflops_after"] = {p: conv_throughput(p) for p in ("fp32", "bf16")}
    write(out, rec)


if __name__ == "__main__":
    main()
