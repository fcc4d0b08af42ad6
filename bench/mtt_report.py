"""Markdown tables of the trajectory-matching results in bench/results/ (for BENCHMARKS.md).

    python bench/mtt_report.py
"""
from __future__ import annotations

import json
from pathlib import Path

R = Path(__file__).resolve().parent / "results"


def load(name):
    p = R / name
    return json.loads(p.read_text()) if p.exists() else None


def memory():
    rows = []
    for f in sorted(R.glob("mtt_memory_*.json")):
        d = load(f.name)
        rows.append(f"\n`{d['command']}` — {d['machine']['date']}, {d['setting']}\n")
        rows.append("| method | syn_steps | params | peak RSS (GiB) | RSS before the step (GiB) "
                    "| peak during the step (GiB) | step (s) |")
        rows.append("|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            if "peak_rss_gib" in r:
                sp = f"{r['step_peak_rss_gib']:.2f}" if "step_peak_rss_gib" in r else "—"
                rows.append(f"| {r['method']} | {r['syn_steps']} | {r.get('params') or ''} | "
                            f"{r['peak_rss_gib']:.2f} | {r['rss_before_step_gib']:.2f} | {sp} | "
                            f"{r['step_s']:.0f} |")
            else:
                rows.append(f"| {r['method']} | {r['syn_steps']} | | not run: "
                            f"{r.get('skipped') or r.get('error')} | | | |")
        t = [r["peak_rss_gib"] for r in d["rows"] if r.get("method") == "tesla" and "peak_rss_gib" in r]
        if len(t) > 1:
            rows.append(f"\nTESLA spread: max/min = {max(t) / min(t):.3f} over {len(t)} settings")
    flat = [r for f in sorted(R.glob("mtt_memory_fp32_flat*.json")) for r in load(f.name)["rows"]
            if r.get("method") == "tesla" and "peak_rss_gib" in r]
    if len(flat) > 1:  # the release_memory runs, one file per batch of settings
        for key in ("peak_rss_gib", "step_peak_rss_gib"):
            v = {r["syn_steps"]: r[key] for r in flat}
            rows.append(f"\nTESLA (release_memory) {key} over syn_steps {sorted(v)}: "
                        f"max/min = {max(v.values()) / min(v.values()):.3f}")
    return "\n".join(rows)


def speed():
    return "\n".join(_speed(f.name) for f in sorted(R.glob("mtt_speed*.json")))


def _speed(name):
    d = load(name)
    out = [f"\n`{d['command']}` — {d['machine']['date']}, {d['setting']}, {d['threads']} thread(s), "
           f"load average at start {d['loadavg_start']:.1f}; conv throughput before: "
           + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in d["conv_gflops_before"].items()),
           "", "| run | timed steps (scaled to) | s / iteration | CPU s / iteration | GFLOP / iteration "
           "| achieved GFLOP/s | conv GFLOP/s (same run) | fraction (wall) | fraction (CPU time) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        if "skipped" in r:
            out.append(f"| {r['run']} | not run: {r['skipped']} | | | | |")
            continue
        cpu = f"{min(r['cpu_s_per_iter']):.1f}" if "cpu_s_per_iter" in r else "-"
        fc = f"{100 * r['fraction_cpu_time']:.0f}%" if "fraction_cpu_time" in r else "-"
        out.append(f"| {r['run']} | {r.get('timed_steps', '')} ({r.get('scaled_to', '')}) | "
                   f"{min(r['s_per_iter']):.0f} | {cpu} | {r['gflop_per_iter']:.0f} | "
                   f"{r['achieved_gflops']:.1f} | {r['conv_gflops_same_run']:.1f} | "
                   f"{100 * r['fraction_of_conv_throughput']:.0f}% | {fc} |")
    return "\n".join(out)


def accuracy():
    out = []
    for f in sorted(R.glob("mtt_accuracy_*.json")):
        d = load(f.name)
        out.append(f"\n`{d['command']}` — {d['machine']['date']}, {d['threads']} thread(s), "
                   f"conv {d['conv_gflops_fp32']:.1f} GFLOP/s fp32 at start")
        ep = [e["seconds"] for e in d["expert_epochs"] if "epoch" in e]
        if ep:
            out.append(f"expert epochs: {len(ep)}, {sum(ep) / len(ep):.0f} s each on average")
        out += ["", "| method | preset / overrides | iterations | CPU s | learned lr | protocol | models | accuracy % |",
                "|---|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            out.append(f"| {r['method']} | {r['preset'] or ''} {r['overrides'] or ''} | {r['iterations']} | "
                       f"{r.get('distill_cpu_s', r['distill_wall_s']):.0f} | "
                       f"{'' if r['learned_lr'] is None else format(r['learned_lr'], '.4g')} | "
                       f"{r['protocol']} | {r['num_models']} | {r['mean']:.2f} ± {r['std']:.2f} |")
    return "\n".join(out)


def experts():
    out = []
    for f in sorted(R.glob("mtt_experts_*.json")):
        d = load(f.name)
        if d.get("seconds_per_epoch"):
            out.append(f"`{d['command']}`: {d['seconds_per_epoch']:.0f} s per expert epoch "
                       f"({d.get('timed_images', 'all')} images timed, {d.get('threads', '?')} "
                       f"thread(s), load average {d.get('loadavg', 0):.1f}; conv "
                       f"{d['conv_gflops_fp32_before']:.1f} / {d.get('conv_gflops_fp32_after', 0):.1f}"
                       f" GFLOP/s fp32 before / after in the same run)")
    return "\n".join(out)


if __name__ == "__main__":
    print("### Memory\n" + memory() + "\n\n### Speed\n" + speed() + "\n\n### Accuracy\n"
          + accuracy() + "\n\n### Experts\n" + experts())
