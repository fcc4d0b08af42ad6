"""Print the BENCHMARKS.md tables of the foundation issue from bench/results/*.json.

    python bench/report_foundation.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

R = Path(__file__).resolve().parent / "results"
PUBLISHED = {  # Fashion-MNIST, DC paper (coresets) and DM paper; ConvNet, IPC 1 / 10 / 50
    "random": {1: 51.4, 10: 73.8, 50: 82.5}, "herding": {1: 67.0, 10: 71.1, 50: 71.9},
    "kcenter": {1: 66.9, 10: 54.7, 50: 68.3}, "dm": {1: 70.7, 10: 83.5, 50: 88.1},
}


def load(name):
    p = R / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(accs):
    import statistics
    m = statistics.fmean(accs)
    s = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f} (n={len(accs)})" if len(accs) > 1 else f"{m:.2f} (n=1)"


def proto(p, overrides=None):
    n = (overrides or {}).get("num_models", p["num_models"])
    return f"{p['name']}: {p['epochs']} ep, {n} models" + (", DSA" if p["dsa"] else "")


def main():
    out = []
    sp = load("dm_speed")
    if sp:
        m = sp["machine"]
        out += ["### DM speed (Fashion-MNIST, IPC 10, batch_real 256)", "",
                f"`{sp['command']}` — {m['date']}, {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
                f"load average at start {tuple(round(x, 1) for x in sp['loadavg_start'])}", "",
                "| configuration | s / iteration (median) | GFLOP / iteration | achieved GFLOP/s | conv throughput GFLOP/s (same run) | fraction | peak RSS GB |",
                "|---|---|---|---|---|---|---|"]
        for name, r in sp["results"].items():
            if "median_s" not in r:
                out.append(f"| {name} | {r.get('skipped') or 'error'} | | | | | |")
                continue
            tp = (r["conv_gflops_before"] + r["conv_gflops_after"]) / 2
            out.append(f"| {name} ({r['allocator']}) | {r['median_s']:.2f} | {r['flops_per_iter'] / 1e9:.0f} | "
                       f"{r['achieved_gflops']:.0f} | {tp:.0f} | {r['fraction_of_conv_throughput']:.2f} | {r['peak_rss_gb']:.1f} |")
        out.append("")
    rows = []  # (ipc, order, label, ours, published, protocol, command)
    order = {"random-real init (DM's own)": 0, "random": 1, "herding": 2, "kcenter": 3}
    for f in sorted(R.glob("dm_accuracy_*.json")):
        d = json.loads(f.read_text())
        a = d["args"]
        for key, label in (("init", "random-real init (DM's own)"), ("dm", f"DM, {a['iterations']} it, {a['precision']}")):
            if key in d:
                res = d[key]["results"]["convnet"]
                pub = PUBLISHED["dm"].get(a["ipc"]) if key == "dm" else PUBLISHED["random"].get(a["ipc"])
                ours = fmt(res["accs"])
                if key == "dm" and "peak_rss_gb_after_distill" in d:
                    ours += f"; distillation peak RSS {d['peak_rss_gb_after_distill']:.1f} GB"
                rows.append((a["ipc"], order.get(label, 4), label, ours, pub,
                             proto(d[key]["protocol"], d[key]["overrides"]),
                             f"`{d['command']}` ({d['machine']['date']})"))
    full = None
    for f in sorted(R.glob("coresets_*.json")):
        d = json.loads(f.read_text())
        full = full or d.get("feature_network")
        for key, r in d["rows"].items():
            rows.append((r["ipc"], order[r["method"]], r["method"], fmt(r["accs"]),
                         PUBLISHED[r["method"]].get(r["ipc"]), proto(r["protocol"], r["overrides"]),
                         f"`{r.get('command', d['command'])}` ({d['machine']['date']})"))
    if rows:
        out += ["### Accuracy on Fashion-MNIST (ConvNet, final model, mean ± std over models)", "",
                "| IPC | summary | ours % | published % | protocol | command (date) |", "|---|---|---|---|---|---|"]
        out += [f"| {i} | {lab} | {ours} | {pub if pub is not None else '-'} | {pr} | {cmd} |"
                for i, _, lab, ours, pub, pr, cmd in sorted(rows, key=lambda r: (r[0], r[1], r[2]))]
        if full:
            st = full["settings"]
            out.append(f"| all | full training set (the coresets' feature network: {st['epochs']} epochs, "
                       f"{st['precision']}, no DSA; val {full['val_accuracy']:.1f}) | {full['accuracy']:.2f} (n=1) | 93.5 | "
                       f"SGD lr {st['lr']}, batch {st['batch_size']} | `python bench/coresets.py` (cached in "
                       f"`~/.cache/datadistill/full`) |")
        out.append("")
    for f in sorted(R.glob("tta_*.json")):
        d = json.loads(f.read_text())
        out += [f"### Time to accuracy: {d['args']['method']} IPC {d['args']['ipc']} (`{d['command']}`, {d['machine']['date']})", "",
                "| budget (core-normalized CPU min) | wall min (shared machine) | iterations | accuracy % | protocol |",
                "|---|---|---|---|---|"]
        for k, r in sorted(d["rows"].items(), key=lambda kv: float(kv[0])):
            out.append(f"| {k} | {r['wall_minutes']:.1f} | {r['iterations']} | {fmt(r['accs'])} | {proto(r['protocol'], r['overrides'])} |")
        out.append("")
    print("\n".join(out) if out else "no results yet", file=sys.stdout)


if __name__ == "__main__":
    main()
