"""Markdown tables for BENCHMARKS.md from bench/results/meta_timing.json and meta_accuracy.json.

    python bench/kip_report.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import load  # noqa: E402

PUBLISHED = {  # Fashion-MNIST (IPC 1, IPC 10), as quoted in issue 5 (GPU, thousands of iterations)
    "kip": ("KRR 76.7, width-1024 net 73.8", "KRR 88.8, width-1024 net 86.8"),
    "rfad": ("78.6", "87.0"),
    "frepo": ("75.6", "86.2"),
}


def timing() -> None:
    r = load("meta_timing")
    if not r:
        return
    print(f"conv throughput: {r.get('conv_gflops_start', 0):.1f} GFLOP/s at start, "
          f"{r.get('conv_gflops_end', float('nan')):.1f} at end (fp32, {r['threads']} threads)\n")
    print("| configuration | real batch | CPU s / iteration | wall s / iteration | peak RSS GiB |")
    print("|---|---|---|---|---|")
    for name, c in r["configs"].items():
        if "cpu_s_per_iter" not in c:
            print(f"| {name} | - | failed | - | - |")
            continue
        p = c["params"]
        print(f"| {name} | {p.get('batch_real')} | {c['cpu_s_per_iter']:.3f} | {c['s_per_iter']:.2f} | "
              f"{c['peak_rss_gib']:.2f} |")
    print("\nKIP per iteration vs real examples per step (IPC 10, CPU s):\n")
    print("| kernel | " + " | ".join(["real batch: CPU s (peak GiB)"]) + " |")
    print("|---|---|")
    for kernel, rows in r.get("kip_scaling", {}).items():
        cells = [f"{m}: {v['cpu_s_per_iter']:.3f} ({v['peak_rss_gib']:.1f})" if "cpu_s_per_iter" in v
                 else f"{m}: failed" for m, v in rows.items()]
        print(f"| {kernel} | " + ", ".join(cells) + " |")


def accuracy() -> None:
    r = load("meta_accuracy")
    if not r:
        return
    print("\n| run | iterations | KRR init → distilled (kernel, test examples) | ConvNet-128 (protocol) | published |")
    print("|---|---|---|---|---|")
    for name, v in r["runs"].items():
        method, ipc = v["method"], v["ipc"]
        it = (v.get("distill") or {}).get("iterations")
        k0, k = v.get("init_krr", {}), v.get("krr")
        krr = (f"{k0['accuracy']:.1f} → {k['accuracy']:.1f} ({k['kernel']}, {k['num_test']})" if k
               else "-")
        net = "-"
        if "convnet" in v:
            res = v["convnet"]["results"]["convnet"]
            net = (f"{res['mean']:.1f} ± {res['std']:.1f} ({v['convnet']['protocol']['name']}, "
                   f"{v['convnet']['protocol']['epochs']} ep)")
        p = PUBLISHED[method][0 if ipc == 1 else 1]
        print(f"| {name} | {it} | {krr} | {net} | {p} |")
    for key, b in r.get("baselines", {}).items():
        if "convnet" in b:
            res = b["convnet"]["results"]["convnet"]
            print(f"| {key} (random real, one-hot) | 0 | (see 'init' above) | {res['mean']:.1f} ± "
                  f"{res['std']:.1f} ({b['convnet']['protocol']['name']}, "
                  f"{b['convnet']['protocol']['epochs']} ep) | - |")


if __name__ == "__main__":
    timing()
    accuracy()
