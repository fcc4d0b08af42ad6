"""Print issue 7's BENCHMARKS.md tables from bench/results/recsys_movietweetings*.json.

    python bench/recsys_report.py
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RES = Path(__file__).resolve().parent / "results"


def merged() -> tuple[dict, list[dict]]:
    runs, parts = {}, []
    for p in sorted(RES.glob("recsys_movietweetings*.json")):
        rec = json.loads(p.read_text())
        parts.append({"file": p.name, **{k: rec.get(k) for k in ("machine", "commands", "throughput", "data")}})
        # the first rows (key "distill-cf/...") were made with the binary preset now named cpu-binary
        runs.update({k.replace("distill-cf/", "distill-cf-cpu-binary/"): v for k, v in rec.get("runs", {}).items()})
    return runs, parts


def pm(vals: list[float], d: int = 2) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.{d}f}"
    return f"{statistics.fmean(vals):.{d}f} ± {statistics.pstdev(vals):.{d}f}"


def csr_kb(nnz: float, users: int) -> str:
    """A binary user x item matrix as CSR: int32 column indices + row pointers."""
    return f"{4 * (nnz + users + 1) / 1000:.0f}"


def stored_kb(items: list[dict], users: int) -> str:
    if "summary" in items[0]:  # distilled: the summary's own count (dense float32 when soft)
        return pm([it["summary"]["stored_bytes"] / 1000 for it in items], 0)
    return pm([float(csr_kb(it["interactions"], users)) for it in items], 0)


def main() -> None:
    runs, parts = merged()
    data = next((p["data"] for p in parts if p.get("data")), {})
    train_nnz = data.get("repr", "").split("train ")[-1].split(",")[0] if data else "0"
    train_nnz = int(train_nnz) if train_nnz.isdigit() else 0
    full = runs.get("full/inf-ae", {}).get("results", {}).get("inf-ae", {}).get("ndcg@10", {}).get("mean")
    print("| summary | users | recommender | HR@10 % | nDCG@10 % | AUC | % of full ∞-AE nDCG@10 | seeds | wall s "
          "| stored KB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in ("inf-ae", "ease", "mf"):
        r = runs.get(f"full/{m}")
        if r:
            x = r["results"][m]
            acc = x["accs"]
            print(f"| all real users ({r['protocol']}) | {r['users']} | {m} | {x['hr@10']['mean']:.2f} | {pm(acc)} | "
                  f"{x['auc']['mean']:.4f} | {100 * statistics.fmean(acc) / full:.1f} | {len(acc)} | {r['wall_s']:.0f} | "
                  f"{csr_kb(train_nnz, r['users'])} |"
                  if full else "")
    sizes = sorted({int(k.split("/")[1]) for k in runs if k.startswith(("subset-", "distill-cf"))})
    distill = sorted({k.split("/")[0] for k in runs if k.startswith("distill-cf")})
    for n in sizes:
        for method in ("subset-random", "subset-active", "subset-herding", *distill):
            items = [v for k, v in runs.items() if k.startswith(f"{method}/{n}/")]
            if not items:
                continue
            for model in ("inf-ae", "ease"):
                if model not in items[0]["results"]:
                    continue
                g = lambda key: [it["results"][model][key]["mean"] for it in items]  # noqa: E731
                nd = g("ndcg@10")
                pct = f"{100 * statistics.fmean(nd) / full:.1f}" if full else "-"
                wall = statistics.fmean(it["wall_s"] for it in items)
                print(f"| {method} | {n} | {model} | {pm(g('hr@10'))} | {pm(nd)} | {pm(g('auc'), 4)} | {pct} | "
                      f"{len(items)} | {wall:.0f} | {stored_kb(items, n)} |")
    print()
    print("| Distill-CF run | steps | wall s | s / step | peak RSS MB | nonzero entries / fake user | "
          "row mass / fake user | best step (val nDCG@10) | λ (last) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, v in sorted(runs.items()):
        if k.startswith("distill-cf"):
            it = v["params"]["iterations"]
            best = f"{v['best_step']} ({v['best_val_ndcg@10']:.2f})" if v.get("best_step") else "last step"
            mass = f"{v['row_mass_per_user']:.1f}" if "row_mass_per_user" in v else "-"
            print(f"| {k} | {it} | {v['wall_s']:.0f} | {v['wall_s'] / it:.1f} | {v['peak_rss_mb']:.0f} | "
                  f"{v['interactions_per_user_last']:.1f} | {mass} | {best} | {v['reg_last']} |")
    print()
    print("| scaling | size | time s | peak RSS MB | matmul GFLOP/s then |")
    print("|---|---|---|---|---|")
    for k, v in sorted(runs.items(), key=lambda kv: (kv[0].split("/")[1], int(kv[0].split("/")[-1])) if kv[0].startswith("scaling") else ("", 0)):
        if k.startswith("scaling/step"):
            print(f"| Distill-CF step (100 fake users), real users per step | {v['real_users_per_step']} | "
                  f"{v['step_s']:.2f} | {v['peak_rss_mb']:.0f} | {v['matmul_gflops']:.1f} |")
        elif k.startswith("scaling/full-inf-ae"):
            print(f"| full-data ∞-AE fit + score all 4,333 users, support users | {v['support_users']} | "
                  f"{v['fit_and_score_all_s']:.2f} | {v['peak_rss_mb']:.0f} | {v['matmul_gflops']:.1f} |")
    print()
    for p in parts:
        th = ", ".join(f"conv {t['conv_gflops']:.1f} / matmul {t['matmul_gflops']:.1f}" for t in p["throughput"] or [])
        print(f"- `{p['file']}`: {p['machine'].get('date')} git {p['machine'].get('git')}, "
              f"{p['machine'].get('cpu')} x{p['machine'].get('cores')}; GFLOP/s measured in the run: {th}; "
              f"commands: {'; '.join(p['commands'] or [])}")


if __name__ == "__main__":
    main()
