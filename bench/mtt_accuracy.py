"""Fashion-MNIST accuracy of MTT (CPU preset, cached experts) beside DM given the same
budget, both evaluated under the ``paper`` protocol (final accuracy, never the best). The budget
is the process CPU time of the MTT run (with one thread this is its wall-clock time on an idle
machine; CPU time stays fair when other processes share the cores).

    flock /tmp/datadistill-bench.lock python bench/mtt_accuracy.py --ipc 1 --num-models 2
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from mtt_common import conv_throughput, machine, write

from datadistill.data import load_dataset
from datadistill.distillers import create_distiller
from datadistill.evaluate import evaluate
from datadistill.experts import load_experts
from datadistill.runtime import tune_allocator
from datadistill.synsets import load_summary

RUNS = Path(__file__).resolve().parent / "out"


class Budget(Exception):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--methods", default="mtt,dm")
    ap.add_argument("--num-experts", type=int, default=None, help="override the preset's")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's")
    ap.add_argument("--num-models", type=int, default=2)
    ap.add_argument("--protocol", default="paper")
    ap.add_argument("--fused", action="store_true",
                    help="MTT/TESLA (and DM) on the fused CPU kernels (the same function, faster)")
    ap.add_argument("--tag", default="", help="suffix of the results file and run folders")
    args = ap.parse_args()
    threads = int(os.environ.get("BENCH_THREADS", "0")) or (2 if os.getloadavg()[0] < 3 else 1)
    torch.set_num_threads(threads)
    out = f"mtt_accuracy_{args.dataset}_ipc{args.ipc}{args.tag}.json"
    rec = {"command": "flock /tmp/datadistill-bench.lock python bench/mtt_accuracy.py "
                      + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                 for k, v in vars(args).items()
                                 if v is not None and v is not False and v != ""),
           "machine": machine(), "allocator": tune_allocator(), "threads": threads,
           "conv_gflops_fp32": conv_throughput("fp32"), "rows": [], "expert_epochs": []}
    write(out, rec)
    real = load_dataset(args.dataset)
    preset = f"cpu-ipc{args.ipc}" if args.ipc in (1, 10) else "cpu-ipc10"
    over = {k: v for k, v in (("num_experts", args.num_experts),
                              ("iterations", args.iterations)) if v is not None}
    mtt = create_distiller("mtt", preset, device="cpu", **over)
    last = [time.perf_counter()]

    def on_epoch(ev):
        now = time.perf_counter()
        rec["expert_epochs"].append({**ev, "seconds": now - last[0]})
        last[0] = now
        write(out, rec)

    load_experts(real, mtt.expert_config(), on_epoch=on_epoch)
    budget = None
    for method in args.methods.split(","):
        wd = RUNS / f"{method}_{args.dataset}_ipc{args.ipc}{args.tag}"
        if method in ("mtt", "tesla"):
            d = create_distiller(method, preset, device="cpu", fused=args.fused, **over)
            cbs = []
        else:  # DM with MTT's wall-clock budget
            d = create_distiller(method, device="cpu", iterations=100000, fused=args.fused)
            limit = budget

            c0 = time.process_time()

            def stop(ev, limit=limit, c0=c0):
                if limit is not None and time.process_time() - c0 >= limit:
                    raise Budget
            cbs = [stop]
        syn = d.init_synset(real, ipc=args.ipc)
        t0, c_start = time.perf_counter(), time.process_time()
        try:
            d.distill(real, syn, cbs, workdir=wd, checkpoint_every_s=1e9)
        except Budget:
            pass
        wall, cpu = time.perf_counter() - t0, time.process_time() - c_start
        if method == "mtt":
            budget = cpu
        syn = load_summary(wd / "summary")
        rep = evaluate(syn, real, protocol=args.protocol, num_models=args.num_models, device="cpu")
        r = rep.results["convnet"]
        rec["rows"].append({"method": method, "preset": preset if method != "dm" else None,
                            "overrides": over if method != "dm" else {},
                            "iterations": syn.meta["iterations"], "distill_wall_s": wall, "distill_cpu_s": cpu,
                            "learned_lr": None if syn.lr is None else float(syn.lr.detach()),
                            "protocol": args.protocol, "num_models": args.num_models,
                            "accs": r["accs"], "mean": r["mean"], "std": r["std"]})
        print(rec["rows"][-1], flush=True)
        write(out, rec)


if __name__ == "__main__":
    main()
