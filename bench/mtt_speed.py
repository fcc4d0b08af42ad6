"""Seconds per MTT / TESLA iteration on Fashion-MNIST IPC 10, syn_steps 20 (batch_syn = all),
the FLOPs of one iteration (counted by torch.utils.flop_counter: the unrolled steps and the
backward through them) and the fraction of the machine's convolution throughput measured in the
same run (before and after).

    flock /tmp/datadistill-bench.lock python bench/mtt_speed.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtt_common import conv_throughput, machine, write
from mtt_memory import mem_available_gib
from mtt_setup import make

from datadistill.runtime import fused_kernels, tune_allocator


#: rough peak memory of each run at IPC 10, syn_steps 20 (from bench/results/mtt_memory_*.json)
NEED_GIB = {("mtt", "fp32", True): 14.5, ("mtt", "fp32", False): 10.5, ("mtt", "bf16", True): 8.0,
            ("mtt", "bf16", False): 6.0, ("tesla", "fp32", True): 2.5}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="tesla:fp32,mtt:bf16,mtt:fp32:gn,mtt:fp32")
    ap.add_argument("--syn-steps", type=int, default=20)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--time-steps", type=int, default=None,
                    help="time an unroll of this many steps and scale to --syn-steps (every step "
                         "costs the same; for configurations whose full unroll does not fit in "
                         "the free memory)")
    ap.add_argument("--out", default="mtt_speed.json")
    args = ap.parse_args()
    threads = int(os.environ.get("BENCH_THREADS", "0")) or (2 if os.getloadavg()[0] < 3 else 1)
    torch.set_num_threads(threads)
    rec = {"command": "python bench/mtt_speed.py " + " ".join(sys.argv[1:]),
           "machine": machine(), "allocator": tune_allocator(), "threads": threads,
           "loadavg_start": os.getloadavg()[0],
           "setting": f"fashion-mnist IPC 10, ConvNet-128-3, syn_steps {args.syn_steps}, "
                      "batch_syn = all, DSA",
           "conv_gflops_before": {p: conv_throughput(p) for p in ("fp32", "bf16")}, "rows": []}
    out = args.out
    write(out, rec)
    real = None
    for run in args.runs.split(","):
        method, prec, *flags = run.split(":")
        extra = {"fast_norm": "gn" not in flags}
        compiled = {"compile": True} if "compile" in flags else {}
        if "fused" in flags:  # the fused norm/ReLU/pool kernel (runtime.fused_kernels)
            compiled["fused"] = True
        tsteps = min(args.time_steps or args.syn_steps, args.syn_steps)
        need = NEED_GIB.get((method, prec, extra["fast_norm"]), 4.0) * tsteps / args.syn_steps
        if mem_available_gib() < need + 1.0:
            rec["rows"].append({"run": run, "skipped": f"needs ~{need} GiB, "
                                f"{mem_available_gib():.1f} GiB free"})
            write(out, rec)
            continue
        # FLOPs per iteration: every unrolled step costs the same, so count 1 and 2 steps and
        # extrapolate linearly (exact up to the per-iteration constant)
        counts = []
        for n in (1, 2):
            real, d, syn = make(method, real, syn_steps=n, precision=prec, **extra)
            with FlopCounterMode(display=False) as fc:
                d.step(real, syn)
            counts.append(fc.get_total_flops())
        flops = counts[0] + (args.syn_steps - 1) * (counts[1] - counts[0])
        # (FLOPs counted on the eager path: compile=True is the same math)
        real, d, syn = make(method, real, syn_steps=tsteps, precision=prec, **extra, **compiled)
        with fused_kernels(bool(compiled.get("fused"))):
            row = timed_row(args, run, method, prec, extra, compiled, real, d, syn, tsteps, counts,
                            flops)
        rec["rows"].append(row)
        print(row, flush=True)
        write(out, rec)
    rec["conv_gflops_after"] = {p: conv_throughput(p) for p in ("fp32", "bf16")}
    write(out, rec)


def timed_row(args, run, method, prec, extra, compiled, real, d, syn, tsteps, counts, flops):
    warm = {}
    if compiled:  # one untimed iteration: the one-off compilation
        t0 = time.perf_counter()
        d.step(real, syn)
        warm = {"first_iteration_s_with_compilation": time.perf_counter() - t0}
    times, cpu = [], []
    for _ in range(args.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        d.step(real, syn)
        times.append((time.perf_counter() - t0) * args.syn_steps / tsteps)
        cpu.append((time.process_time() - c0) * args.syn_steps / tsteps)
    thr = conv_throughput(prec)
    thr_cpu = conv_throughput(prec, cpu_time=True)
    s = min(times)
    row = {"run": run, "method": method, "precision": prec, "params": {**extra, **compiled},
           **warm,
           "timed_steps": tsteps, "scaled_to": args.syn_steps,
           "s_per_iter": times, "gflop_per_iter": flops / 1e9,
           "gflop_counted_steps_1_2": [c / 1e9 for c in counts],
           "achieved_gflops": flops / 1e9 / s, "conv_gflops_same_run": thr,
           "fraction_of_conv_throughput": flops / 1e9 / s / thr,
           "cpu_s_per_iter": cpu, "achieved_gflops_per_cpu_s": flops / 1e9 / min(cpu),
           "conv_gflops_per_cpu_s_same_run": thr_cpu,
           "fraction_cpu_time": flops / 1e9 / min(cpu) / thr_cpu,
           "loadavg": os.getloadavg()[0]}
    return row


if __name__ == "__main__":
    main()
