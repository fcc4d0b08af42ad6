"""DM speed on Fashion-MNIST IPC 10 (batch_real 256): seconds per iteration, FLOPs per
iteration (counted by torch's FlopCounterMode on a real step), the achieved GFLOP/s and the
machine's convolution throughput measured in the same process right before and after.

    flock /tmp/datadistill-bench.lock python bench/dm_speed.py            # all configurations
    python bench/dm_speed.py --one fp32 --iters 6                         # one, in this process

Each configuration runs in a fresh subprocess (allocator settings apply per process):
``glibc`` = default malloc (no tuning), ``fp32`` = the library default (mallopt-tuned glibc),
``tcmalloc`` = LD_PRELOAD of Debian's libtcmalloc-minimal4, then bf16 / channels-last /
torch.compile options. Results: bench/results/dm_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONFIGS = {
    "glibc": {"tune": False, "kw": {}},
    "fp32": {"tune": True, "kw": {}},
    "tcmalloc": {"tune": True, "kw": {}, "preload": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
    "fp32-cl": {"tune": True, "kw": {"channels_last": True}},
    "fp32-cl-compile": {"tune": True, "kw": {"channels_last": True, "compile": True}},
    "bf16": {"tune": True, "kw": {"precision": "bf16"}},
    "bf16-cl": {"tune": True, "kw": {"precision": "bf16", "channels_last": True}},
    "bf16-cl-compile": {"tune": True, "kw": {"precision": "bf16", "channels_last": True, "compile": True}},
}


def run_one(name: str, iters: int, warmup: int) -> dict:
    cfg = CONFIGS[name]
    from datadistill import runtime
    alloc = runtime.tune_allocator() if cfg["tune"] else "glibc-default"
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from common import conv_throughput
    from datadistill.data import load_dataset
    from datadistill.distillers import create_distiller

    real = load_dataset("fashion-mnist")
    prec = cfg["kw"].get("precision", "fp32")
    tp_before = conv_throughput(prec)
    d = create_distiller("dm", iterations=warmup + iters, seed=0, **cfg["kw"])
    syn = d.init_synset(real, ipc=10)
    times = []
    d.distill(real, syn, [lambda e: times.append(e["elapsed"])])
    per_iter = [b - a for a, b in zip(times, times[1:])][warmup - 1 if warmup else 0:]
    tp_after = conv_throughput(prec)
    with FlopCounterMode(display=False) as fc:  # one more step, counted
        d.step(real, syn)
    flops = fc.get_total_flops()
    med = statistics.median(per_iter)
    tp = (tp_before + tp_after) / 2
    return {"config": name, "allocator": alloc, "options": cfg["kw"], "s_per_iter": per_iter,
            "median_s": med, "flops_per_iter": flops, "achieved_gflops": flops / med / 1e9,
            "conv_gflops_before": tp_before, "conv_gflops_after": tp_after,
            "fraction_of_conv_throughput": flops / med / 1e9 / tp,
            "peak_rss_gb": runtime.peak_rss_bytes() / 2**30}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", choices=list(CONFIGS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.iters, a.warmup)))
        return
    from common import machine, save
    rec = {"command": "python bench/dm_speed.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "loadavg_start": os.getloadavg(), "results": {}}
    for name in a.configs.split(","):
        env = dict(os.environ)
        if "preload" in CONFIGS[name]:
            if not Path(CONFIGS[name]["preload"]).exists():
                rec["results"][name] = {"skipped": "libtcmalloc-minimal4 not installed"}
                continue
            env["LD_PRELOAD"] = CONFIGS[name]["preload"]
        t0 = time.time()
        p = subprocess.run([sys.executable, __file__, "--one", name, "--iters", str(a.iters),
                            "--warmup", str(a.warmup)], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            rec["results"][name] = {"error": p.stderr[-2000:]}
        else:
            rec["results"][name] = json.loads(p.stdout.strip().splitlines()[-1])
            rec["results"][name]["loadavg_after"] = os.getloadavg()
        print(name, json.dumps(rec["results"][name])[:400], f"({time.time() - t0:.0f} s)", flush=True)
        save("dm_speed", rec)


if __name__ == "__main__":
    main()
