"""Speed of DC's outer iteration against the machine's measured convolution throughput.

    python bench/gm_speed.py                      # (through the bench lock)
    python bench/gm_speed.py --memory             # peak RSS of one step of each method at IPC 10

One DC outer iteration at IPC 10 on Fashion-MNIST = 10 matching steps (all 10 classes, 256 real
images each, second-order on the 10 synthetic ones) + 9 inner loops of 50 SGD steps on the 100
synthetic images. We count the FLOPs of one matching step and of one 50-step inner loop with
``torch.utils.flop_counter`` (convolutions and matmuls, forward, backward and double backward),
time both for each variant (fp32 / bf16 autocast, eager / ``compile=True``, each optionally with
the fused norm/ReLU/pool kernel: ``fp32:compile+fused``), and extrapolate the
outer iteration as 10 x match + 9 x inner. In the same run we measure the machine's throughput
on the ConvNet's dominant convolution (128->128, 3x3, 16x16, batch 256; NCHW and channels_last,
fp32 and bf16) and report the fraction achieved. Results: bench/results/gm_speed.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.distillers import create_distiller  # noqa: E402


CLOCK = time.perf_counter  # --cpu-time: time.process_time (CPU-seconds of this process)


def conv_throughput(precision: str, channels_last: bool, batch: int = 256, reps: int = 5) -> float:
    """Best-of GFLOP/s of the ConvNet's 128->128 3x3 conv on 16x16 maps, forward + backward
    (input and weight gradients), as in training."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(batch, 128, 16, 16, requires_grad=True)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    flops = 3 * 2 * batch * 128 * 128 * 9 * 16 * 16
    best = float("inf")
    for i in range(reps + 1):
        t = CLOCK()
        with runtime.autocast(torch.device("cpu"), precision):
            y = conv(x)
        y.float().sum().backward()
        if i:
            best = min(best, CLOCK() - t)
    return flops / best / 1e9


def timed(fn, reps: int):
    ts = []
    for _ in range(reps):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return min(ts), ts


def variant(real, precision: str, compile_: bool, reps: int, flops: tuple | None = None,
            fused: bool = False) -> dict:
    with runtime.fused_kernels(fused):
        return _variant(real, precision, compile_, reps, flops, fused)


def _variant(real, precision, compile_, reps, flops, fused) -> dict:
    d = create_distiller("dc", precision=precision, compile=compile_, fused=fused, device="cpu",
                         seed=0)
    syn = d.init_synset(real, ipc=10)
    d.setup(real, syn)
    net = d.fresh_network(real)

    def match():
        loss = d.matching_loss(net, real, syn)
        d.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss.detach())

    def inner():
        d.train_network(net, real, syn)  # inner_loop = 50 epochs of one batch of 100

    t0 = time.perf_counter()
    first = match()  # warm-up (and compilation)
    warm = time.perf_counter() - t0
    if flops is None:  # the same count for every variant (eager fp32 counts them)
        with FlopCounterMode(display=False) as fc:
            match()
        f_match = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            inner()
        f_inner = fc.get_total_flops()
    else:
        f_match, f_inner = flops
    t_match, all_m = timed(match, reps)
    t_inner, all_i = timed(inner, reps)
    flops = 10 * f_match + 9 * f_inner
    secs = 10 * t_match + 9 * t_inner
    return {"precision": precision, "compile": compile_, "fused": fused, "first_match_s": round(warm, 2),
            "first_loss": first, "match_gflop": f_match / 1e9, "inner50_gflop": f_inner / 1e9,
            "match_s": t_match, "inner50_s": t_inner, "match_all_s": all_m, "inner_all_s": all_i,
            "outer_iteration_gflop": flops / 1e9, "outer_iteration_s": secs,
            "achieved_gflops": flops / secs / 1e9}


MEMORY_SNIPPET = """
import resource, sys, torch
torch.set_num_threads(1)
from datadistill.data import load_dataset
from datadistill.distillers import create_distiller
m = sys.argv[1]
real = load_dataset("fashion-mnist")
# the peak is the matching step (256 real images per class, second order); the inner loop on
# 100 synthetic images needs less, so one matching step (outer_loop=1) measures the peak
kw = {"dc": dict(outer_loop=1), "dsa": dict(outer_loop=1), "dcc": dict(outer_loop=1),
      "idc": dict(inner_loop=1), "dm": {}}[m]
d = create_distiller(m, iterations=1, device="cpu", **kw)
syn = d.init_synset(real, ipc=10)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d.distill(real, syn)
print(base * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def memory(methods) -> dict:
    out = {}
    for m in methods:
        r = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, m], capture_output=True, text=True)
        if r.returncode != 0:
            out[m] = {"error": r.stderr[-500:]}
            continue
        base, peak = (int(v) for v in r.stdout.split()[-2:])
        out[m] = {"peak_rss_mib": peak / 2**20, "before_step_mib": base / 2**20}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--variants", default="fp32:eager,bf16:eager,fp32:compile,bf16:compile")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--methods", default="dc,dsa,dcc,idc")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time in CPU-seconds of this process (robust to a loaded machine)")
    ap.add_argument("--flops-from", default=None, help="reuse the FLOP counts of a results file")
    ap.add_argument("--out", default=None, help="results name (default gm_speed / gm_speed_cpu)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    alloc = runtime.tune_allocator()
    global CLOCK
    if a.cpu_time:
        CLOCK = time.process_time
    name = a.out or ("gm_memory" if a.memory else ("gm_speed_cpu" if a.cpu_time else "gm_speed"))
    rec = {"command": "python bench/gm_speed.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "allocator": alloc, "threads": a.threads,
           "clock": "process_time" if a.cpu_time else "perf_counter"}
    if a.memory:
        rec["ipc"] = 10
        rec["memory"] = memory(a.methods.split(","))
        save(name, rec)
        print(json.dumps(rec["memory"], indent=1))
        return
    real = load_dataset("fashion-mnist")
    rec["conv_gflops_before"] = {f"{p}{'_cl' if cl else ''}": conv_throughput(p, cl)
                                 for p in ("fp32", "bf16") for cl in (False, True)}
    save(name, rec)
    rec["variants"] = []
    prior = None
    if a.flops_from:
        pv = json.loads(Path(a.flops_from).read_text())["variants"][0]
        prior = (pv["match_gflop"] * 1e9, pv["inner50_gflop"] * 1e9)
    for v in a.variants.split(","):
        p, mode = v.split(":")
        f = (prior if not rec["variants"] else
             (rec["variants"][0]["match_gflop"] * 1e9, rec["variants"][0]["inner50_gflop"] * 1e9))
        rec["variants"].append(variant(real, p, "compile" in mode, a.reps, f, "fused" in mode))
        save(name, rec)
    rec["conv_gflops_after"] = {f"{p}{'_cl' if cl else ''}": conv_throughput(p, cl)
                                for p in ("fp32", "bf16") for cl in (False, True)}
    fp32_peak = max(max(v for k, v in rec[s].items() if k.startswith("fp32"))
                    for s in ("conv_gflops_before", "conv_gflops_after"))
    fp32 = [v for v in rec["variants"] if v["precision"] == "fp32"]
    base = next((v for v in fp32 if not v["compile"] and not v["fused"]), fp32[0])
    base_c = next((v for v in fp32 if v["compile"] and not v["fused"]), None)
    best32 = min(fp32, key=lambda v: v["outer_iteration_s"])
    for v in rec["variants"]:
        v["speedup_vs_fastest_fp32"] = best32["outer_iteration_s"] / v["outer_iteration_s"]
        v["fraction_of_fp32_conv"] = v["achieved_gflops"] / fp32_peak
        v["speedup_vs_fp32_eager"] = base["outer_iteration_s"] / v["outer_iteration_s"]
        if base_c is not None:
            v["speedup_vs_fp32_compile"] = base_c["outer_iteration_s"] / v["outer_iteration_s"]
    rec["fp32_conv_peak_gflops"] = fp32_peak
    save(name, rec)
    for v in rec["variants"]:
        mode = ("compile" if v["compile"] else "eager") + ("+fused" if v["fused"] else "")
        print(f"{v['precision']:5} {mode:14} "
              f"iter {v['outer_iteration_s']:7.1f} s  {v['achieved_gflops']:6.1f} GFLOP/s "
              f"({100 * v['fraction_of_fp32_conv']:.0f}% of fp32 conv)  x{v['speedup_vs_fp32_eager']:.2f}")


if __name__ == "__main__":
    main()
