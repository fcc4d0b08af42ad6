"""Distill-CF on MovieTweetings (5-core) beside full-data ∞-AE / EASE / MF and subset baselines.

    flock /tmp/datadistill-bench.lock python bench/recsys_distill_cf.py [--stages refs,subsets,distill,scaling]
        [--sizes 100,200,500] [--seeds 0,1] [--preset cpu] [--iterations N] [--ref-models inf-ae,ease,mf]

(bench/recsys_all.sh runs the stages in the order the BENCHMARKS.md rows were produced.)

Results go to bench/results/recsys_movietweetings.json after every item (rerun resumes: items
already in the file are skipped). Every summary is evaluated with the library's recsys protocol
(``fast``: hyper-parameters chosen on the validation split by nDCG@10, test reported once).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import conv_throughput, load, machine, save  # noqa: E402

from datadistill.data import load_dataset  # noqa: E402
from datadistill.distillers import create_distiller  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402
from datadistill.recsys.evaluation import RECSYS_PROTOCOLS, evaluate_rows  # noqa: E402
from datadistill.recsys.subsets import select_users  # noqa: E402
from datadistill.runtime import tune_allocator  # noqa: E402

NAME = "recsys_movietweetings"


def matmul_gflops(seconds: float = 2.0) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def brief(res: dict) -> dict:
    return {m: {k: r[k] for k in ("hr@10", "ndcg@10", "auc", "accs")} | {"hp": [x["hp"] for x in r["runs"]]}
            for m, r in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default="refs,subsets,distill,scaling")
    ap.add_argument("--sizes", default="100,200,500")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--preset", default="cpu", help="a distill-cf preset; '' = the published defaults")
    ap.add_argument("--ref-models", default="inf-ae,ease,mf")
    ap.add_argument("--random-seeds", default="0,1,2")
    ap.add_argument("--part", default="", help="write bench/results/recsys_movietweetings<part>.json "
                    "(lets independent stages run side by side)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="key=value method overrides (floats/ints/bools)")
    args = ap.parse_args()
    tune_allocator()
    global NAME
    NAME = NAME + args.part
    rec = load(NAME) or {}
    rec.setdefault("runs", {})
    rec["machine"] = machine()
    rec.setdefault("commands", []).append("python bench/recsys_distill_cf.py " + " ".join(sys.argv[1:]))
    rec.setdefault("throughput", []).append({"conv_gflops": conv_throughput(seconds=2.0),
                                             "matmul_gflops": matmul_gflops(), "time": time.time()})
    save(NAME, rec)
    # the offline copy beside the checkout (users get it through the loader's download)
    shared = Path(os.environ.get("DATADISTILL_SHARED_DATA",
                                 Path(__file__).resolve().parents[2] / "shared" / "data"))
    data = load_dataset("movietweetings", data_dir=shared / "recsys" / "movietweetings")
    rec["data"] = {"repr": repr(data), **{k: v for k, v in data.info.extra.items() if k != "source"}}
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    fast = RECSYS_PROTOCOLS["fast"]
    stages = args.stages.split(",")

    def done(key):
        return key in rec["runs"]

    def put(key, value):
        rec["runs"][key] = value
        save(NAME, rec)
        print(key, {m: round(v["ndcg@10"]["mean"], 3) for m, v in value.get("results", {}).items()}, flush=True)

    if "refs" in stages:
        for model in args.ref_models.split(","):
            key = f"full/{model}"
            if done(key):
                continue
            t0 = time.perf_counter()
            proto = fast if model != "mf" else RECSYS_PROTOCOLS["fast"].__class__("fast", num_models=2)
            res = evaluate_rows(data.dense("train"), data, (model,), proto)
            put(key, {"results": brief(res), "users": data.num_users, "wall_s": time.perf_counter() - t0,
                      "protocol": "fast" + (" (2 seeds)" if model == "mf" else ""), "peak_rss_mb": peak_rss_mb()})

    if "subsets" in stages:
        for n in sizes:
            rs = tuple(int(x) for x in args.random_seeds.split(","))
            for method, ss in (("random", rs), ("active", (0,)), ("herding", (0,))):
                for s in ss:
                    key = f"subset-{method}/{n}/seed{s}"
                    if done(key):
                        continue
                    t0 = time.perf_counter()
                    syn = select_users(data, n, method, seed=s)
                    rep = evaluate(syn, data, protocol="fast")
                    put(key, {"results": brief(rep.results), "users": n, "wall_s": time.perf_counter() - t0,
                              "interactions": rep.summary["interactions"]})

    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = {"true": True, "false": False}.get(v.lower(), None)
        if overrides[k] is None:
            overrides[k] = float(v) if "." in v or "e" in v else int(v)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations

    if "distill" in stages:
        for s in seeds:
            for n in sizes:
                key = f"distill-cf-{args.preset or 'published'}/{n}/seed{s}"
                if done(key):
                    continue
                d = create_distiller("distill-cf", args.preset or None, seed=s, **overrides)
                syn = d.init_synset(data, users=n)
                steps = []
                t0 = time.perf_counter()
                d.distill(data, syn, [steps.append], workdir=Path("bench/out/recsys") / f"dcf_{n}_s{s}",
                          checkpoint_every_s=300)
                wall = time.perf_counter() - t0
                rep = evaluate(syn, data, protocol="fast", models=("inf-ae", "ease"))
                put(key, {"results": brief(rep.results), "users": n, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
                          "params": d.params(), "preset": args.preset, "summary": rep.summary,
                          "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"],
                          "reg_last": steps[-1]["reg"], "best_step": syn.meta.get("best_step"),
                          "best_val_ndcg@10": syn.meta.get("best_val_ndcg@10"),
                          "validation": syn.meta.get("validation"),
                          "interactions_per_user_last": float((syn.rows > 0).sum(-1).float().mean()),
                          "row_mass_per_user": float(syn.rows.sum(-1).mean()),
                          "throughput_after": {"conv_gflops": conv_throughput(seconds=1.0)}})

    if "scaling" in stages:
        for real_users in (500, 1000, 2000, 4333):
            key = f"scaling/step/{real_users}"
            if done(key):
                continue
            d = create_distiller("distill-cf", args.preset, iterations=6, batch_users=real_users, reg=1.0)
            syn = d.init_synset(data, users=100)
            times = []
            last = [time.perf_counter()]

            def tick(e, times=times, last=last):
                now = time.perf_counter()
                times.append(now - last[0])
                last[0] = now
            d.distill(data, syn, [tick])
            put(key, {"real_users_per_step": real_users, "syn_users": 100, "step_s": sorted(times[1:])[len(times[1:]) // 2],
                      "peak_rss_mb": peak_rss_mb(), "matmul_gflops": matmul_gflops(1.0)})
        for frac in (0.25, 0.5, 1.0):
            n = int(frac * data.num_users)
            key = f"scaling/full-inf-ae/{n}"
            if done(key):
                continue
            rows = data.dense("train")[:n]
            from datadistill.recsys.models import InfiniteAE
            t0 = time.perf_counter()
            m = InfiniteAE().fit(rows, reg=1.0)
            m.scores(data.dense("train"))
            put(key, {"support_users": n, "fit_and_score_all_s": time.perf_counter() - t0,
                      "peak_rss_mb": peak_rss_mb(), "matmul_gflops": matmul_gflops(1.0)})
    rec["throughput"].append({"conv_gflops": conv_throughput(seconds=2.0), "matmul_gflops": matmul_gflops(),
                              "time": time.time()})
    save(NAME, rec)


if __name__ == "__main__":
    main()
