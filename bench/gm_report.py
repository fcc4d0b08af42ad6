"""Print the gradient-matching section of BENCHMARKS.md (markdown) from bench/results/*.json.

    python bench/gm_report.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load  # noqa: E402

PUBLISHED = {("dc", 1): 70.5, ("dc", 10): 82.3, ("dc", 50): 83.6, ("dsa", 1): 70.6,
             ("dsa", 10): 84.6, ("dsa", 50): 88.7, ("idc", 1): 81.0, ("idc", 10): 86.0,
             ("idc", 50): 86.2}


def speed(name: str = "gm_speed") -> None:
    r = load(name)
    if not r or not r.get("variants"):
        print("_speed benchmark not run_\n")
        return
    m = r["machine"]
    clock = "CPU-seconds of the process" if r.get("clock") == "process_time" else "wall-clock seconds"
    print(f"Timed in {clock}. `{r['command']}` — {m['date']}, {m['cpu']}, {r['threads']} thread(s), torch "
          f"{m['torch']}, allocator {r['allocator']}, git {m['git']}.\n")
    conv = {k: round(v, 1) for k, v in r["conv_gflops_before"].items()}
    after = {k: round(v, 1) for k, v in r.get("conv_gflops_after", {}).items()}
    print(f"Machine conv throughput in the same run (128→128 3×3 conv, 16×16, batch 256, fwd+bwd; "
          f"GFLOP/s) before: {conv}; after: {after}.\n")
    peak = max(v for s in ("conv_gflops_before", "conv_gflops_after")
               for k, v in r.get(s, {}).items() if k.startswith("fp32"))
    base = next((v for v in r["variants"] if v["precision"] == "fp32" and not v["compile"]), None)
    for v in r["variants"]:  # also for a run stopped before its end
        v.setdefault("fraction_of_fp32_conv", v["achieved_gflops"] / peak)
        if base is not None:
            v.setdefault("speedup_vs_fp32_eager", base["outer_iteration_s"] / v["outer_iteration_s"])
    v0 = r["variants"][0]
    print(f"FLOPs counted (torch.utils.flop_counter): one matching step (10 classes) "
          f"{v0['match_gflop']:.0f} GFLOP, one 50-step inner loop {v0['inner50_gflop']:.0f} GFLOP, "
          f"one outer iteration (10 × match + 9 × inner) {v0['outer_iteration_gflop']:.0f} GFLOP.\n")
    print("| variant | match step (s) | 50 inner steps (s) | outer iteration (s, extrapolated) | "
          "achieved GFLOP/s | of best fp32 conv | speed-up vs fp32 eager | vs fp32 compile |")
    print("|---|---|---|---|---|---|---|---|")
    for v in r["variants"]:
        print(f"| {v['precision']} {'compile' if v['compile'] else 'eager'} | {v['match_s']:.1f} | "
              f"{v['inner50_s']:.1f} | {v['outer_iteration_s']:.0f} | {v['achieved_gflops']:.1f} | "
              f"{100 * v.get('fraction_of_fp32_conv', float('nan')):.0f} % | "
              f"{v.get('speedup_vs_fp32_eager', float('nan')):.2f}× | "
              f"{v.get('speedup_vs_fp32_compile', float('nan')):.2f}× |")
    print()


def runs() -> None:
    import glob
    import json
    print("| run | iterations done | CPU-s / iteration | wall-s / iteration | snapshots |")
    print("|---|---|---|---|---|")
    for f in sorted(glob.glob(str(Path(__file__).resolve().parent / "results" / "gm_run_*.json"))):
        r = json.loads(Path(f).read_text())
        e = r["events"]
        if not e:
            continue
        it = e[-1]["iteration"]
        print(f"| `{r['command']}` | {it} | {e[-1]['cpu_s'] / it:.1f} | {e[-1]['wall_s'] / it:.1f} | "
              f"{', '.join(r['snapshots'])} |")
    print()


def accuracy() -> None:
    import glob
    import json
    r = {"results": {}}
    for f in sorted(glob.glob(str(Path(__file__).resolve().parent / "results" / "gm_eval*.json"))):
        r["results"].update(json.loads(Path(f).read_text())["results"])
    if not r["results"]:
        print("_no evaluation yet_\n")
        return
    print("| summary | method | IPC | iterations | protocol | models | accuracy % (final) | published |")
    print("|---|---|---|---|---|---|---|---|")
    for key, v in sorted(r["results"].items()):
        iterations, method = snapshot_info(v)
        pub = PUBLISHED.get((method, round(v["ipc"])))
        print(f"| {v['summary'].split('gm/')[-1]} | {method} | {v['ipc']:g} | {iterations} | "
              f"{v['protocol']} ({v['epochs']} epochs) | {v['num_models']} | "
              f"{v['mean']:.2f} ± {v['std']:.2f} | {pub if pub is not None else '-'} |")
    print()


def snapshot_info(result: dict) -> tuple:
    """(iteration, method) of an evaluated summary. For a snapshot of bench/gm_run.py both come
    from its run log: the summary's own metadata holds the iteration of the last checkpoint
    before the snapshot, and a resumed run's snapshots may lack the method."""
    parts = Path(result["summary"]).parts
    run = load(f"gm_run_{parts[-2]}") if len(parts) >= 2 else None
    it = result["iterations"]
    if run and parts[-1] in run.get("snapshots", {}):
        it = run["snapshots"][parts[-1]]["iteration"]
    if it == 0:
        return it, "(initialisation)"
    return it, result["method"] or (run or {}).get("args", {}).get("method") or "?"


def memory() -> None:
    r = load("gm_memory")
    if not r:
        print("_memory benchmark not run_\n")
        return
    print(f"`{r['command']}` — {r['machine']['date']}, IPC {r['ipc']}, Fashion-MNIST, one step.\n")
    print("| method | peak RSS (MiB) | RSS before the step (MiB) |")
    print("|---|---|---|")
    for k, v in r["memory"].items():
        if "error" in v:
            print(f"| {k} | error | - |")
        else:
            print(f"| {k} | {v['peak_rss_mib']:.0f} | {v['before_step_mib']:.0f} |")
    print()


if __name__ == "__main__":
    speed()
    speed("gm_speed_cpu")
    speed("gm_speed_cpu_stem")
    runs()
    accuracy()
    memory()
