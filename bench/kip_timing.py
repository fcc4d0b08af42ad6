"""Meta-model family: time per outer iteration and peak memory on Fashion-MNIST at IPC 10, and
how KIP's cost grows with the number of real examples per step.

Each configuration runs in its own subprocess (so peak RSS is its own): ``warmup`` iterations,
then ``measure`` timed iterations; we report the median wall and CPU seconds per iteration (CPU
seconds of the process, all its threads: robust when other work shares the cores) and the
process's peak resident memory. The machine's conv throughput is measured before and after.

    flock /tmp/datadistill-bench.lock python bench/kip_timing.py            # everything
    python bench/kip_timing.py --only rfad,frepo                            # a subset

Results: bench/results/meta_timing.json (written after every configuration).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

#: name -> (method, preset, params, warmup, measure); every KRR method at the same real batch
CONFIGS = {
    "kip-conv_ntk": ("kip", None, {"kernel": "conv_ntk", "batch_real": 250}, 1, 1),
    "kip-convnet_entk": ("kip", None, {"kernel": "convnet_entk", "batch_real": 250}, 1, 3),
    "kip-fc_ntk": ("kip", None, {"kernel": "fc_ntk", "kernel_depth": 3, "batch_real": 250}, 1, 3),
    "rfad": ("rfad", None, {"batch_real": 250}, 1, 2),
    "rfad-cpu": ("rfad", "cpu-200", {"batch_real": 250}, 1, 3),
    "frepo": ("frepo", None, {"batch_real": 250}, 1, 3),
    "dd-unroll10": ("dd", None, {"unroll": 10}, 0, 1),
    "dd-unroll10-ckpt5": ("dd", None, {"unroll": 10, "checkpoint_every": 5}, 0, 1),
}
SCALING = {  # KIP cost vs real examples per step
    "conv_ntk": [50, 100, 200],
    "convnet_entk": [100, 200, 400, 800],
    "fc_ntk": [100, 400, 1600, 6400],
}


def run_one(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from datadistill.data import load_dataset
    from datadistill.distillers import create_distiller
    from datadistill.runtime import peak_rss_bytes, tune_allocator

    tune_allocator()
    real = load_dataset("fashion-mnist")
    base_rss = peak_rss_bytes()
    n = spec["warmup"] + spec["measure"]
    d = create_distiller(spec["method"], spec["preset"], device="cpu", iterations=n, **spec["params"])
    syn = d.init_synset(real, ipc=10)
    times, cpu, last = [], [], [0.0, time.process_time()]

    def cb(ev):
        times.append(ev["elapsed"] - last[0])
        cpu.append(time.process_time() - last[1])
        last[:] = [ev["elapsed"], time.process_time()]
    last[1] = time.process_time()
    d.distill(real, syn, [cb])
    meas = times[spec["warmup"]:]
    return {"s_per_iter": statistics.median(meas), "iters_timed": len(meas),
            "cpu_s_per_iter": statistics.median(cpu[spec["warmup"]:]),
            "peak_rss_gib": peak_rss_bytes() / 2**30, "data_rss_gib": base_rss / 2**30,
            "params": d.params()}


def spawn(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--only", default="", help="comma-separated config names (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--scaling", default="", help="comma-separated kernels to scale (default: all)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    import torch

    torch.set_num_threads(args.threads)
    from common import conv_throughput, load, machine, save

    rec = load("meta_timing") or {"configs": {}, "kip_scaling": {}}  # reruns update entries
    rec.update({"machine": machine(), "dataset": "fashion-mnist", "ipc": 10,
                "threads": args.threads, "conv_gflops_start": conv_throughput()})
    rec.setdefault("commands", []).append("python bench/kip_timing.py " + " ".join(sys.argv[1:]))
    only = [s for s in args.only.split(",") if s]
    for name, (method, preset, params, warm, meas) in CONFIGS.items():
        if only and name not in only:
            continue
        t0 = time.time()
        rec["configs"][name] = {"method": method, "preset": preset, **spawn(
            {"method": method, "preset": preset, "params": params, "warmup": warm, "measure": meas,
             "threads": args.threads}), "wall_s": time.time() - t0}
        save("meta_timing", rec)
    if not args.no_scaling:
        for kernel, sizes in SCALING.items():
            if args.scaling and kernel not in args.scaling.split(","):
                continue
            for m in sizes:
                params = {"kernel": kernel, "batch_real": m}
                if kernel == "fc_ntk":
                    params["kernel_depth"] = 3
                r = spawn({"method": "kip", "preset": None, "params": params, "warmup": 1,
                           "measure": 1, "threads": args.threads})
                rec["kip_scaling"].setdefault(kernel, {})[str(m)] = r
                save("meta_timing", rec)
    rec["conv_gflops_end"] = conv_throughput()
    save("meta_timing", rec)


if __name__ == "__main__":
    main()
