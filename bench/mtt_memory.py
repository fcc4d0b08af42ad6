"""Peak RSS of one MTT / TESLA iteration on Fashion-MNIST IPC 10 against syn_steps, each
configuration in a fresh subprocess (peak RSS of the whole process: data, model and the unroll).

    flock /tmp/datadistill-bench.lock python bench/mtt_memory.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mtt_common import machine, write

CONFIGS = [("mtt", s) for s in (5, 10, 20, 40)] + [("tesla", s) for s in (5, 10, 20, 40, 80, 160)]


def child(method: str, steps: int, precision: str, extra: dict) -> dict:
    import torch

    from mtt_setup import make

    from datadistill.runtime import fused_kernels, peak_rss_bytes, tune_allocator

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    # BENCH_ALLOC=default: glibc's own malloc (returns freed large blocks to the OS, so peak RSS
    # is live memory); otherwise the library's speed setting, which keeps freed heap pages
    alloc = "glibc default" if os.environ.get("BENCH_ALLOC") == "default" else tune_allocator()
    real, d, syn = make(method, syn_steps=steps, precision=precision, **extra)
    before = peak_rss_bytes()
    now = rss_now_bytes()
    # reset the kernel's high-water mark (VmHWM) so that the step's own peak is also known
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    with fused_kernels(bool(extra.get("fused"))):  # a distiller's fused=True, as distill() does
        m = d.step(real, syn)
    return {"method": method, "syn_steps": steps, "precision": precision, "allocator": alloc,
            "params": {k: v for k, v in extra.items()},
            "release_memory": getattr(d, "release_memory", None),
            "peak_rss_gib": peak_rss_bytes() / 2**30, "rss_before_step_gib": before / 2**30,
            "rss_at_step_start_gib": now / 2**30, "step_peak_rss_gib": vm_hwm_bytes() / 2**30,
            "step_s": time.perf_counter() - t0, "loss": m["loss"]}


def rss_now_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--only", default=None, help="mtt or tesla")
    ap.add_argument("--params", default="{}", help='extra method parameters, JSON')
    ap.add_argument("--tag", default="")
    ap.add_argument("--steps", default=None, help="comma-separated syn_steps to run (default all)")
    args = ap.parse_args()
    extra = json.loads(args.params)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.precision, extra)))
        return
    if os.environ.get("BENCH_ALLOC") == "default":
        args.tag += "_glibc_default"
    out = f"mtt_memory_{args.precision}{args.tag}.json"
    rec = {"command": "flock /tmp/datadistill-bench.lock python bench/mtt_memory.py"
                      + (f" --precision {args.precision}" if args.precision != "fp32" else "")
           + (f" --only {args.only}" if args.only else "")
           + (f" --steps {args.steps}" if args.steps else "")
           + (f" --params '{args.params}'" if extra else "")
           + (f" --tag {args.tag}" if args.tag else "")
           + (" (BENCH_ALLOC=default)" if os.environ.get("BENCH_ALLOC") == "default" else ""),
           "machine": machine(), "setting": "fashion-mnist, IPC 10, ConvNet-128-3, batch_syn = all "
           "(100), DSA, one iteration per fresh process", "rows": []}
    order = CONFIGS if not args.steps else [
        (m, int(s)) for s in args.steps.split(",") for m in ("mtt", "tesla") if (m, int(s)) in CONFIGS]
    for method, steps in order:
        if args.only and method != args.only:
            continue
        prev = [r for r in rec["rows"] if r["method"] == method and "peak_rss_gib" in r]
        if len(prev) >= 2:  # linear extrapolation; skip what would not fit in free memory
            a, b = prev[-2], prev[-1]
            slope = (b["peak_rss_gib"] - a["peak_rss_gib"]) / (b["syn_steps"] - a["syn_steps"])
            need = b["peak_rss_gib"] + slope * (steps - b["syn_steps"])
            if need > mem_available_gib() - 1.0:
                rec["rows"].append({"method": method, "syn_steps": steps, "skipped":
                                    f"needs ~{need:.1f} GiB, {mem_available_gib():.1f} GiB free"})
                write(out, rec)
                continue
        p = subprocess.run([sys.executable, __file__, "--child", method, str(steps),
                            "--precision", args.precision, "--params", args.params],
                           capture_output=True, text=True, cwd=Path(__file__).parent)
        if p.returncode != 0:
            rec["rows"].append({"method": method, "syn_steps": steps,
                                "error": p.stderr.strip().splitlines()[-1:]})
        else:
            rec["rows"].append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(rec["rows"][-1], flush=True)
        write(out, rec)


if __name__ == "__main__":
    main()
