"""DM accuracy on Fashion-MNIST: distill, then evaluate the summary and its random-real
initialisation under the same protocol (issue 2's accuracy bar).

    flock /tmp/datadistill-bench.lock python bench/dm_accuracy.py --ipc 10 --iterations 200

Writes bench/results/dm_accuracy_ipc{ipc}_it{iterations}.json as results arrive; the
distillation run folder (checkpoint, summary) is bench/out/, so a rerun resumes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.distillers import create_distiller  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402
from datadistill.synsets import load_summary  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--protocol", default="paper")
    ap.add_argument("--num-models", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-init", action="store_true")
    ap.add_argument("--init-only", action="store_true",
                    help="evaluate only the random-real initialisation (results file *_init)")
    a = ap.parse_args()
    alloc = runtime.tune_allocator()
    name = f"dm_accuracy_{a.dataset}_ipc{a.ipc}_it{a.iterations}_{a.precision}"
    if a.init_only:
        name = f"dm_accuracy_{a.dataset}_ipc{a.ipc}_init"
    rec = {"command": "python bench/dm_accuracy.py " + " ".join(sys.argv[1:]),
           "machine": machine(), "allocator": alloc, "args": vars(a)}
    real = load_dataset(a.dataset)
    out = Path(__file__).resolve().parent / "out" / name
    d = create_distiller("dm", iterations=a.iterations, precision=a.precision, seed=a.seed)
    init = d.init_synset(real, ipc=a.ipc)
    if not a.skip_init:
        rep = evaluate(init, real, protocol=a.protocol, num_models=a.num_models, seed=a.seed,
                       on_model=lambda ev: print('  model', ev, flush=True))
        rec["init"] = rep.to_dict()
        save(name, rec)
        print("init", rep.table(), flush=True)
    if a.init_only:
        return
    if (out / "summary" / "summary.json").exists() and \
            load_summary(out / "summary").meta.get("iterations") == a.iterations:
        syn = load_summary(out / "summary")
    else:
        syn = d.init_synset(real, ipc=a.ipc)
        resume = (out / "checkpoint.pt").exists()
        t0 = time.perf_counter()
        d.distill(real, syn, [lambda e: print(e, flush=True) if e["iteration"] % 20 == 0 else None],
                  workdir=out, resume=resume)
        rec["distill_wall_s"] = time.perf_counter() - t0
    rec["distill_meta"] = {k: syn.meta.get(k) for k in ("iterations", "wall_time_s", "params")}
    rec["peak_rss_gb_after_distill"] = runtime.peak_rss_bytes() / 2**30
    save(name, rec)
    rep = evaluate(syn, real, protocol=a.protocol, num_models=a.num_models, seed=a.seed,
                       on_model=lambda ev: print('  model', ev, flush=True))
    rec["dm"] = rep.to_dict()
    rec["peak_rss_gb"] = runtime.peak_rss_bytes() / 2**30
    save(name, rec)
    print("dm", rep.table(), flush=True)


if __name__ == "__main__":
    main()
