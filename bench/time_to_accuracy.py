"""Test accuracy of a method's summary after fixed distillation budgets (Fashion-MNIST).

The budget is measured in *core-normalized CPU minutes*: the process's CPU time divided by its
thread count, i.e. the wall time the run would take alone on this 2-core machine. That keeps
the figure meaningful when other work shares the CPU (wall time is recorded too).

    python bench/time_to_accuracy.py --method dm --ipc 10 --minutes 1,5,15 --protocol fast

Snapshots are saved under bench/out/tta_<method>_ipc<ipc>/min<m>/ and evaluated at the end;
results go to bench/results/tta_<method>_ipc<ipc>_<protocol>.json.
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
from datadistill.distillers import create_distiller  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402
from datadistill.synsets import load_summary  # noqa: E402


class Budget(Exception):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dm")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--minutes", default="1,5,15")
    ap.add_argument("--protocol", default="fast")
    ap.add_argument("--num-models", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="method parameter key=value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distill-only", action="store_true", help="save snapshots, evaluate later")
    a = ap.parse_args()
    alloc = runtime.tune_allocator()
    marks = sorted(float(m) for m in a.minutes.split(","))
    name = f"tta_{a.method}_ipc{a.ipc}"
    out = Path(__file__).resolve().parent / "out" / name
    res_name = f"{name}_{a.protocol}"
    rec = load(res_name) or {"rows": {}}
    rec.update({"command": "python bench/time_to_accuracy.py " + " ".join(sys.argv[1:]),
                "machine": machine(), "allocator": alloc, "args": vars(a)})
    real = load_dataset(a.dataset)
    params = dict(kv.split("=", 1) for kv in a.set)
    params = {k: type(getattr(create_distiller(a.method), k))(v) for k, v in params.items()}
    d = create_distiller(a.method, iterations=10**7, seed=a.seed, **params)
    syn = d.init_synset(real, ipc=a.ipc)
    threads = torch.get_num_threads()
    todo = [m for m in marks if not (out / f"min{m:g}" / "summary.json").exists()]
    if todo:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        pending = list(todo)

        def cb(ev):
            used = (time.process_time() - cpu0) / threads / 60
            while pending and used >= pending[0]:
                m = pending.pop(0)
                syn.meta.update({"method": a.method, "iterations": ev["iteration"], "cpu_minutes": used,
                                 "wall_minutes": (time.perf_counter() - wall0) / 60})
                syn.save(out / f"min{m:g}")
                print(f"{m:g} min: iteration {ev['iteration']}, wall {(time.perf_counter() - wall0) / 60:.1f} min",
                      flush=True)
            if not pending:
                raise Budget
        try:
            d.distill(real, syn, [cb])
        except Budget:
            pass
    if a.distill_only:
        return
    for m in marks:
        key = f"{m:g}"
        if key in rec["rows"] or not (out / f"min{m:g}" / "summary.json").exists():
            continue
        s = load_summary(out / f"min{m:g}")
        rep = evaluate(s, real, protocol=a.protocol, num_models=a.num_models, seed=a.seed)
        r = rep.results["convnet"]
        rec["rows"][key] = {"cpu_minutes": s.meta["cpu_minutes"], "wall_minutes": s.meta["wall_minutes"],
                            "iterations": s.meta["iterations"], "accs": r["accs"], "mean": r["mean"],
                            "std": r["std"], "protocol": rep.protocol, "overrides": rep.overrides}
        save(res_name, rec)
        print(key, "min:", f"{r['mean']:.2f} ± {r['std']:.2f}", flush=True)


if __name__ == "__main__":
    main()
