"""Evaluate summary snapshots written by bench/gm_run.py under a named protocol.

    flock /tmp/datadistill-bench.lock python bench/gm_eval.py --protocol fast --num-models 3 \
        bench/out/gm/dsa_fashion-mnist_ipc1_it1000_fp32_s0/it100 ...

Each snapshot's result (mean +- std over fresh ConvNets, final accuracy after the fixed
schedule, never the best epoch; test split only here) lands in bench/results/gm_eval.json
under its folder name as soon as it is done; existing entries with the same protocol and
model count are skipped, so a rerun continues.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, save  # noqa: E402

import torch  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402
from datadistill.synsets import load_summary  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--protocol", default="fast")
    ap.add_argument("--num-models", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="gm_eval")
    ap.add_argument("--fused", action="store_true",
                    help="train the evaluation networks with the fused CPU kernel (same math)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    runtime.tune_allocator()
    rec = load(a.out) or {"results": {}}
    rec.update({"machine": machine(), "last_command": "python bench/gm_eval.py " + " ".join(sys.argv[1:])})
    data = {}
    for s in a.summaries:
        p = Path(s)
        key = f"{p.parent.name}/{p.name}|{a.protocol}|{a.num_models}"
        if key in rec["results"]:
            continue
        syn = load_summary(p)
        name = syn.info.name
        if name not in data:
            data[name] = load_dataset(name)
        t = time.perf_counter()
        rep = evaluate(syn, data[name], protocol=a.protocol, num_models=a.num_models, device="cpu",
                       fused=True if a.fused else None)
        r = next(iter(rep.results.values()))
        rec["results"][key] = {"summary": str(p), "protocol": rep.protocol["name"],
                               "epochs": rep.protocol["epochs"], "num_models": rep.protocol["num_models"],
                               "mean": r["mean"], "std": r["std"], "accs": r["accs"],
                               "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
                               "ipc": syn.ipc, "stored_bytes": syn.stored_bytes(),
                               "fused": rep.protocol.get("fused", False),
                               "eval_wall_s": round(time.perf_counter() - t, 1)}
        save(a.out, rec)
        print(key, f"{r['mean']:.2f} +- {r['std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
