"""Markdown tables for BENCHMARKS.md from bench/results/graph_*.json (issue 6).

    python bench/graph_report.py
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name):
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def node_tables() -> None:
    for ds, names in (("cora", ("graph_node_cora_026", "graph_node_cora_gcond", "graph_node_cora_coresets", "graph_node_cora_gcdm",
                                "graph_node_cora_other", "graph_node_cora_cross")),
                      ("citeseer", ("graph_node_citeseer", "graph_node_citeseer_036"))):
        recs = [r for r in map(_load, names) if r]
        if not recs:
            continue
        whole = next((r["whole_graph_gcn"] for r in recs if "whole_graph_gcn" in r), None)
        print(f"\n**{ds}** (GCN evaluation, mean ± std over {len(whole['accs']) if whole else '?'} "
              f"models; whole graph: {whole['mean']:.1f} ± {whole['std']:.1f})" if whole else f"\n**{ds}**")
        print("\n| method | ratio (all nodes) | ratio (labelled) | nodes | edges | iterations | GCN acc % | published GCond | distill s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        rows = [x for r in recs for x in r["rows"] if x["model"] == "gcn"]
        for x in sorted(rows, key=lambda x: (x["ratio_of_all_nodes"], x["method"])):
            pub = x.get("published_gcond")
            print(f"| {x['method']}{' (saved summary re-evaluated)' if x.get('loaded_from') else ''} | {100 * x['ratio_of_all_nodes']:.1f} % | "
                  f"{100 * x['ratio_of_labelled']:.0f} % | {x['nodes']} | {x['edges']} | "
                  f"{x.get('iterations') or '-'} | {x['mean']:.1f} ± {x['std']:.1f} | "
                  f"{pub if pub else '-'} | {x['distill_s'] if x.get('distill_s') is not None else '-'} | "
                  f"{x['peak_rss_mb']} |")
        cross = [x for r in recs for x in r["rows"] if x["model"] != "gcn"]
        if cross:
            print("\nCross-architecture (same summary, trained and tested with each network):\n")
            print("| method | ratio | model | acc % |")
            print("|---|---|---|---|")
            for x in cross:
                print(f"| {x['method']} | {100 * x['ratio_of_all_nodes']:.1f} % | {x['model']} | "
                      f"{x['mean']:.1f} ± {x['std']:.1f} |")
        for r in recs:
            print(f"\n`{r['command']}` — {r['machine']['date']}, {r['machine']['cpu']}, "
                  f"torch threads {r['machine']['threads']}, conv throughput "
                  f"{r.get('conv_gflops_start', 0):.1f} → {r.get('conv_gflops_end', float('nan')):.1f} GFLOP/s"
                  + ("" if "conv_gflops_end" in r else " (run incomplete)"))


def graph_tables() -> None:
    r = _load("graph_doscond")
    if not r:
        return
    print("\n**Graph classification** (DosCond protocol: 3-layer GCN, mean pool, "
          f"{r['protocol']} protocol; DosCond {r['iterations']} iterations)\n")
    print("| dataset | graphs/class | random % | DosCond % | DosCond distill s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    by = {}
    for x in r["rows"]:
        if "method" in x:
            by.setdefault((x["dataset"], x["ipc"], x["ipc_used"]), {})[x["method"]] = x
    for (ds, ipc, used), m in by.items():
        rnd, dos = m.get("random"), m.get("doscond")
        f = lambda v: f"{v['mean']:.1f} ± {v['std']:.1f}" if v else "-"  # noqa: E731
        print(f"| {ds} | {ipc}{'' if used == ipc else f' (→{used})'} | {f(rnd)} | {f(dos)} | "
              f"{dos['distill_s'] if dos else '-'} | {dos['peak_rss_mb'] if dos else '-'} |")
    print(f"\n`{r['command']}` — {r['machine']['date']}, {r['machine']['cpu']}, conv throughput "
          f"{r.get('conv_gflops_start', 0):.1f} → {r.get('conv_gflops_end', float('nan')):.1f} GFLOP/s"
          + ("" if "conv_gflops_end" in r else " (run incomplete)"))


if __name__ == "__main__":
    node_tables()
    graph_tables()
