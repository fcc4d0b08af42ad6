"""Coreset baselines (random, herding, k-center) on Fashion-MNIST at several IPCs, evaluated
under a stated protocol; herding/k-center use features of a ConvNet trained on the full
training split (settings recorded). Results accumulate in bench/results/coresets_<tag>.json
and finished rows are skipped on a rerun.

    python bench/coresets.py --ipcs 1,10 --protocol paper --num-models 3 --feature-epochs 5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine, save  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.coresets import select_coreset  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--methods", default="random,herding,kcenter")
    ap.add_argument("--protocol", default="paper")
    ap.add_argument("--num-models", type=int, default=3)
    ap.add_argument("--feature-epochs", type=int, default=5)
    ap.add_argument("--feature-precision", default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    alloc = runtime.tune_allocator()
    tag = f"{a.dataset}_{a.protocol}_m{a.num_models}"
    rec = load(f"coresets_{tag}") or {"rows": {}}
    rec.update({"command": "python bench/coresets.py " + " ".join(sys.argv[1:]),
                "machine": machine(), "allocator": alloc, "args": vars(a)})
    real = load_dataset(a.dataset)
    fs = {"epochs": a.feature_epochs, "precision": a.feature_precision}
    for ipc in [int(i) for i in a.ipcs.split(",")]:
        for m in a.methods.split(","):
            key = f"{m}_ipc{ipc}"
            if key in rec["rows"]:
                continue
            t0 = time.perf_counter()
            syn = select_coreset(real, ipc, m, seed=a.seed, feature_settings=fs)
            t_sel = time.perf_counter() - t0
            rep = evaluate(syn, real, protocol=a.protocol, num_models=a.num_models, seed=a.seed,
                       on_model=lambda ev: print('  model', ev, flush=True))
            r = rep.results["convnet"]
            rec["rows"][key] = {"method": m, "ipc": ipc, "accs": r["accs"], "mean": r["mean"],
                                "std": r["std"], "select_s": t_sel,
                                "feature_settings": fs if m != "random" else None,
                                "protocol": rep.protocol, "overrides": rep.overrides,
                                "command": rec["command"]}
            if m != "random":
                from datadistill.reference import full_data_accuracy
                rec["feature_network"] = full_data_accuracy(real, "convnet", settings=fs)
            save(f"coresets_{tag}", rec)
            print(key, f"{r['mean']:.2f} ± {r['std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
