"""KIP with the exact pooled ConvNet kernel (``conv_pool_ntk``): CPU seconds and peak memory of
one outer iteration at IPC 10 (100 summary images) on Fashion-MNIST, for a few real batch
sizes, each in a fresh process (``kip_timing.spawn``), and the linear fit

    cpu_s(m) = a + b m        (a: K_ss and its backward; b: per real example, 100 K_ts pairs)

extrapolated to the 250-image real batch of the other rows of BENCHMARKS.md's cost table.
One iteration per size: a single iteration costs minutes here.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 5 python bench/kip_pool_timing.py --sizes 10,25,50

``--blocks 1,2,4`` instead measures, in one process, the kernel blocks KIP computes: K(x_t, x_s)
for m real Fashion-MNIST images against 100 summary images (100 m pairs) with the gradient
to x_s (forward, checkpoint recomputation, backward), and the symmetric K_ss; the CPU seconds
per pair give a *projected* iteration cost c_ss + c_pair 100 m (the solve is negligible).

Results: the ``kip_pool`` entry of bench/results/meta_timing.json.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,25,50")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extrapolate", type=int, default=250)
    ap.add_argument("--blocks", default="", help="real images per K_ts block, e.g. 1,2,4")
    ap.add_argument("--kss", type=int, default=0, help="also time K_ss on this many summary images")
    args = ap.parse_args()
    if args.blocks:
        return blocks(args)
    from common import load, machine, save
    from kip_timing import spawn

    rec = load("meta_timing") or {"configs": {}, "kip_scaling": {}}
    entry = rec.setdefault("kip_pool", {"kernel": "conv_pool_ntk", "points": {}})
    entry.update({"machine": machine(), "threads": args.threads, "ipc": 10,
                  "command": "python bench/kip_pool_timing.py " + " ".join(sys.argv[1:])})
    for m in (int(s) for s in args.sizes.split(",")):
        entry["points"][str(m)] = spawn({"method": "kip", "preset": None, "threads": args.threads,
                                         "params": {"kernel": "conv_pool_ntk", "batch_real": m},
                                         "warmup": 0, "measure": 1})
        save("meta_timing", rec)
        print(m, entry["points"][str(m)], flush=True)
    pts = sorted((int(k), v["cpu_s_per_iter"]) for k, v in entry["points"].items() if "error" not in v)
    if len(pts) >= 2:  # least-squares line through the measured points
        n = len(pts)
        mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        a = my - b * mx
        entry["fit"] = {"fixed_cpu_s": a, "cpu_s_per_real_example": b,
                        "extrapolated_batch": args.extrapolate,
                        "extrapolated_cpu_s": a + b * args.extrapolate,
                        "measured_sizes": [p[0] for p in pts]}
        save("meta_timing", rec)
        print(entry["fit"])


def blocks(args) -> None:
    import time

    import torch

    torch.set_num_threads(args.threads)
    from common import load, machine, save

    from datadistill.data import load_dataset
    from datadistill.kernel_eval import make_kernel
    from datadistill.runtime import peak_rss_bytes

    real = load_dataset("fashion-mnist")
    kern = make_kernel("conv_pool_ntk", real.info)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(real.train.x), generator=g)
    x_s = real.train.x[idx[:100]].clone().requires_grad_(True)
    res = {"machine": machine(), "threads": args.threads, "kernel": "conv_pool_ntk",
           "summary": 100, "command": "python bench/kip_pool_timing.py " + " ".join(sys.argv[1:]),
           "blocks": {}}
    rec = load("meta_timing") or {"configs": {}, "kip_scaling": {}}
    for m in (int(s) for s in args.blocks.split(",")):
        x_t = real.train.x[idx[1000:1000 + m]]
        t0 = time.process_time()
        kern(x_t, x_s).sum().backward()
        cpu = time.process_time() - t0
        res["blocks"][str(m)] = {"pairs": 100 * m, "cpu_s": cpu, "cpu_s_per_pair": cpu / (100 * m),
                                 "peak_rss_gib": peak_rss_bytes() / 2**30}
        print(m, res["blocks"][str(m)], flush=True)
        rec["kip_pool_blocks"] = res
        save("meta_timing", rec)
    if args.kss:
        xs = x_s[:args.kss].detach().clone().requires_grad_(True)
        t0 = time.process_time()
        kern(xs, xs).sum().backward()
        cpu = time.process_time() - t0
        n = args.kss
        res["kss"] = {"n": n, "pairs_computed": n * (n + 1) // 2, "cpu_s": cpu,
                      "cpu_s_per_pair": cpu / (n * (n + 1) // 2), "peak_rss_gib": peak_rss_bytes() / 2**30}
        print("kss", res["kss"], flush=True)
        rec["kip_pool_blocks"] = res
        save("meta_timing", rec)


if __name__ == "__main__":
    main()
