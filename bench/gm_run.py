"""Distill with a gradient-matching method (or DM, for the time-to-accuracy comparison) and keep
snapshots of the summary at given iterations and at given CPU-minutes of this process.

    flock /tmp/datadistill-bench.lock python bench/gm_run.py --method dsa --ipc 1 \
        --iterations 1000 --precision bf16 --threads 1 --at-iters 100,200,500,1000 --at-cpu-min 5,15,60

Snapshots go to bench/out/gm/<tag>/it<N>/ and cpu<M>min/ (summary folders); progress (loss,
wall and CPU time per iteration, snapshots taken) to bench/results/gm_run_<tag>.json as it
arrives. The run checkpoints every minute in bench/out/gm/<tag>/run/, so a rerun resumes.
Evaluate the snapshots with bench/gm_eval.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

import torch  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.distillers import create_distiller  # noqa: E402
from datadistill.distillers.base import CHECKPOINT_FILE  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "gm"


class StopRun(Exception):
    pass


def _ints(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dsa")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--init", default=None, help="summary initialisation (real / noise); "
                    "default: the method's")
    ap.add_argument("--fused", action="store_true",
                    help="the fused CPU norm/ReLU/pool kernel (same math; recorded in params)")
    ap.add_argument("--at-iters", default="")
    ap.add_argument("--at-cpu-min", default="")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--stop-cpu-min", type=float, default=None,
                    help="stop (keeping the summary) after this many CPU-minutes")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    alloc = runtime.tune_allocator()
    tag = a.tag or f"{a.method}_{a.dataset}_ipc{a.ipc}_it{a.iterations}_{a.precision}_s{a.seed}"
    root = OUT / tag
    real = load_dataset(a.dataset)
    d = create_distiller(a.method, a.preset, iterations=a.iterations, precision=a.precision,
                         seed=a.seed, device="cpu", **({"init": a.init} if a.init else {}),
                         **({"fused": True} if a.fused else {}))
    syn = d.init_synset(real, ipc=a.ipc)
    syn.save(root / "it0")
    prev = runtime_load(tag)
    rec = {"command": "python bench/gm_run.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "allocator": alloc, "args": vars(a), "params": d.params(), "events": [],
           "snapshots": {"it0": {"iteration": 0, "cpu_s": 0.0, "wall_s": 0.0}}}
    cpu_base = wall_base = 0.0
    resume = (root / "run" / CHECKPOINT_FILE).exists()
    if resume and prev is not None:
        # continue from the checkpoint's iteration: events logged after it (the work lost at the
        # interruption, replayed now) are dropped, so CPU time counts each iteration once
        done = int(torch.load(root / "run" / CHECKPOINT_FILE, weights_only=False)["iteration"])
        rec["events"] = [e for e in prev["events"] if e["iteration"] <= done]
        rec["snapshots"] = prev["snapshots"]
        if rec["events"]:
            cpu_base, wall_base = rec["events"][-1]["cpu_s"], rec["events"][-1]["wall_s"]
    at_iters = {int(v) for v in _ints(a.at_iters)}
    at_cpu = sorted(m for m in _ints(a.at_cpu_min) if f"cpu{m:g}min" not in rec["snapshots"])
    c0, w0 = time.process_time(), time.perf_counter()

    def on_event(e):
        cpu = cpu_base + time.process_time() - c0
        wall = wall_base + time.perf_counter() - w0
        it = e["iteration"]
        rec["events"].append({"iteration": it, "loss": e.get("loss"), "cpu_s": round(cpu, 2),
                              "wall_s": round(wall, 2)})
        marks = [f"it{it}"] if it in at_iters else []
        while at_cpu and cpu >= at_cpu[0] * 60:
            marks.append(f"cpu{at_cpu.pop(0):g}min")
        if it == a.iterations:
            marks.append("final")
        for m in marks:
            syn.save(root / m)
            rec["snapshots"][m] = {"iteration": it, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}
        save(f"gm_run_{tag}", rec)
        if a.stop_cpu_min is not None and cpu >= a.stop_cpu_min * 60:
            raise StopRun

    try:
        d.distill(real, syn, [on_event], workdir=root / "run", resume=resume, checkpoint_every_s=60)
    except StopRun:
        rec["stopped_at_cpu_min"] = a.stop_cpu_min
    rec["done"] = True
    rec["peak_rss_mib"] = runtime.peak_rss_bytes() / 2**20
    save(f"gm_run_{tag}", rec)


def runtime_load(tag):
    from common import load
    return load(f"gm_run_{tag}")


if __name__ == "__main__":
    main()
