"""Node-classification graph condensation benchmark (issue 6): GCond / GCDM / DosCond and the
random / herding / k-center coresets on Cora or CiteSeer at GCond's reduction ratios, evaluated
with GCond's protocol (2-layer GCN, hidden 256, dropout 0.5, wd 5e-4, Adam 600 epochs,
best-validation weights, tested on the real test nodes), plus the whole-graph reference and
cross-architecture rows. Results go to bench/results/graph_node_<dataset>.json as they arrive.

    flock /tmp/datadistill-bench.lock python bench/graph_node.py --dataset cora \
        --data-dir /tmp/gdata/planetoid --ratios 0.026,0.013,0.052 --preset cpu-200
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import conv_throughput, machine, save  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.distillers import create_distiller  # noqa: E402
from datadistill.evaluate import evaluate  # noqa: E402
from datadistill.graph import full_graph_accuracy  # noqa: E402
from datadistill.graph_coresets import coreset_features, select_graph_coreset  # noqa: E402

PUBLISHED_GCOND = {("cora", 0.013): 79.8, ("cora", 0.026): 80.1, ("cora", 0.052): 79.3,
                   ("citeseer", 0.009): 70.5, ("citeseer", 0.018): 70.6, ("citeseer", 0.036): 69.8}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="cora")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--ratios", default="0.026,0.013,0.052")
    ap.add_argument("--methods", default="gcond,random,herding,kcenter")
    ap.add_argument("--preset", default="cpu-200", help="distiller preset (iterations)")
    ap.add_argument("--gcdm-ratio", type=float, default=None, help="also run GCDM at this ratio")
    ap.add_argument("--gcdm-preset", default="cpu-100")
    ap.add_argument("--name", default=None, help="result file name (default graph_node_<dataset>)")
    ap.add_argument("--no-full", action="store_true", help="skip the whole-graph reference")
    ap.add_argument("--save-dir", default=None, help="also save each distilled summary here")
    ap.add_argument("--cross-ratio", type=float, default=None,
                    help="cross-architecture evaluation of GCond at this ratio")
    ap.add_argument("--from-saved", default=None,
                    help="evaluate <dir>/<method>-<dataset>-<ratio> summaries instead of distilling")
    ap.add_argument("--protocol", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    runtime.tune_allocator()
    name = a.name or f"graph_node_{a.dataset}"
    import datadistill
    rec = {"machine": machine(), "command": " ".join(sys.argv), "protocol": a.protocol,
           "library_file": datadistill.__file__,
           "preset": a.preset, "conv_gflops_start": conv_throughput(), "rows": []}
    real = load_dataset(a.dataset, data_dir=a.data_dir)
    labelled = len(real.train_idx)
    rec["data"] = {"nodes": real.num_nodes, "labelled": labelled, "repr": repr(real)}

    def row(method, ratio, syn, distill_s=None, models=("gcn",), extra=None):
        t0 = time.perf_counter()
        rep = evaluate(syn, real, models=models, protocol=a.protocol, seed=a.seed, device="cpu")
        for m, r in rep.results.items():
            rec["rows"].append({
                "method": method, "ratio_of_all_nodes": ratio,
                "ratio_of_labelled": syn.meta.get("ratio_of_labelled"), "nodes": syn.num_examples,
                "edges": int(syn.edges()[0].shape[1]), "model": m, "mean": r["mean"], "std": r["std"],
                "accs": r["accs"], "stored_bytes": syn.stored_bytes(),
                "distill_s": distill_s, "eval_s": round(time.perf_counter() - t0, 1),
                "iterations": syn.meta.get("iterations"),
                "published_gcond": PUBLISHED_GCOND.get((a.dataset, ratio)) if method == "gcond" else None,
                "peak_rss_mb": round(runtime.peak_rss_bytes() / 2**20), **(extra or {})})
        save(name, rec)

    if not a.no_full:
        full = full_graph_accuracy(real, "gcn", protocol=a.protocol, seed=a.seed, device="cpu")
        rec["whole_graph_gcn"] = {k: full[k] for k in ("mean", "std", "accs")}
        save(name, rec)
    feats = None
    methods = a.methods.split(",")
    for ratio in (float(r) for r in a.ratios.split(",")):
        for method in methods:
            if method in ("gcond", "gcdm", "doscond") and a.from_saved:
                from datadistill.synsets import load_summary
                src = Path(a.from_saved) / f"{method}-{a.dataset}-{ratio}"
                syn = load_summary(src)
                cross = ("gcn", "sgc", "graphsage", "gat") if ratio == a.cross_ratio else ("gcn",)
                row(method, ratio, syn, None, cross,
                    {"preset": syn.meta.get("preset", a.preset), "loaded_from": str(src)})
            elif method in ("gcond", "gcdm", "doscond"):
                d = create_distiller(method, a.preset, seed=a.seed, device="cpu")
                syn = d.init_synset(real, ratio=ratio)
                t0 = time.perf_counter()
                d.distill(real, syn)
                dt = round(time.perf_counter() - t0, 1)
                if a.save_dir:
                    syn.save(Path(a.save_dir) / f"{method}-{a.dataset}-{ratio}")
                cross = ("gcn", "sgc", "graphsage", "gat") if ratio == a.cross_ratio else ("gcn",)
                row(method, ratio, syn, dt, cross, {"preset": a.preset})
            else:
                if method != "random" and feats is None:
                    feats = coreset_features(real, "gcn", seed=a.seed, device="cpu")
                t0 = time.perf_counter()
                syn = select_graph_coreset(real, method, ratio=ratio, seed=a.seed, device="cpu",
                                           features=feats)
                row(method, ratio, syn, round(time.perf_counter() - t0, 1))
        if a.gcdm_ratio == ratio:
            d = create_distiller("gcdm", a.gcdm_preset, seed=a.seed, device="cpu")
            syn = d.init_synset(real, ratio=ratio)
            t0 = time.perf_counter()
            d.distill(real, syn)
            row("gcdm", ratio, syn, round(time.perf_counter() - t0, 1),
                extra={"preset": a.gcdm_preset})
    rec["conv_gflops_end"] = conv_throughput()
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    save(name, rec)


if __name__ == "__main__":
    main()
