"""The report's plots (matplotlib, PNG bytes): curves of one run, comparisons across runs."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .figures import color, figure, marker, to_png
from .runs import RunData


def protocol_label(ev: dict[str, Any]) -> str:
    """A short statement of the protocol an evaluation ran under, e.g. ``fast: 300 ep x 3, DSA``."""
    p = ev.get("protocol") or {}
    parts = [str(p.get("name", "?"))]
    if p.get("epochs") is not None:
        parts.append(f"{p['epochs']} ep x {p.get('num_models', '?')}")
    text = parts[0] + (": " + parts[1] if len(parts) > 1 else "")
    if p.get("dsa"):
        text += ", DSA"
    over = {k: v for k, v in (ev.get("overrides") or {}).items()
            if not (k == "num_models" and v == p.get("num_models"))}  # (already in "ep x n")
    if over:
        text += ", " + ", ".join(f"{k}={_short(v)}" for k, v in over.items())
    return text


def _short(v: Any) -> str:
    v = str(v).split(" ")[0]
    try:
        return f"{float(v):.3g}"
    except ValueError:
        return v


def metric_name(run: RunData) -> str:
    return "nDCG@10 %" if run.modality == "recsys" else "accuracy %"


def run_curves(run: RunData) -> bytes | None:
    """Loss (and the method's other metrics) over iterations beside the evaluated accuracy:
    accuracy logged during distillation and each saved evaluation at the summary's iteration."""
    names = run.metric_names()
    loss_keys = [k for k in names if "acc" not in k.lower()][:4]
    acc = run.series("accuracy")
    it = run.meta.get("iterations")
    evals = [(ev, m, r) for ev in run.evaluations for m, r in ev["results"].items()
             if isinstance(r.get("mean"), (int, float))]
    if not loss_keys and not acc and not evals:
        return None
    with figure(8.6, 3.0, ncols=2) as (fig, (ax, ax2)):
        for i, k in enumerate(loss_keys):
            s = run.series(k)
            if s:
                xs, ys = zip(*s)
                ax.plot(xs, ys, color=color(i), label=k, lw=1.2,
                        marker="o" if len(s) == 1 else None)
        if loss_keys:
            vals = [y for k in loss_keys for _, y in run.series(k)]
            if vals and min(vals) > 0 and max(vals) / max(min(vals), 1e-30) > 20:
                ax.set_yscale("log")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("iteration")
        ax.set_title("distillation metrics", fontsize=9)
        if acc:
            xs, ys = zip(*acc)
            ax2.plot(xs, ys, color=color(0), marker=".", label="during distillation")
        x_eval = float(it) if isinstance(it, (int, float)) else 0.0
        for j, (ev, m, r) in enumerate(evals):
            ax2.errorbar([x_eval], [r["mean"]], yerr=[r.get("std") or 0.0], fmt=marker(j),
                         color=color(j + 1), capsize=3, label=f"{m} [{protocol_label(ev)}]")
        if acc or evals:
            ax2.legend()
        else:
            ax2.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_xlabel("iteration")
        ax2.set_ylabel(metric_name(run))
        ax2.set_title("evaluated " + metric_name(run).split(" ")[0], fontsize=9)
        return to_png(fig)


def points(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One point per (run, evaluation, architecture): what the comparison plots draw."""
    out = []
    for ri, run in enumerate(runs):
        cpu, how = run.cpu_seconds()
        seen: set[tuple[str, str]] = set()  # the same model under the same protocol: once
        for ev in run.evaluations:
            for m, r in ev["results"].items():
                if not isinstance(r.get("mean"), (int, float)) or (m, protocol_label(ev)) in seen:
                    continue
                seen.add((m, protocol_label(ev)))
                out.append({"run": run.name, "run_index": ri, "method": run.method,
                            "model": m, "mean": float(r["mean"]), "std": float(r.get("std") or 0),
                            "protocol": protocol_label(ev), "ipc": run.ipc,
                            "stored_bytes": run.stored_bytes, "cpu_s": cpu, "cpu_how": how,
                            "metric": metric_name(run)})
    return out


def draw_points(ax, pts: list[dict[str, Any]], x: str, models: list[str], *,
                show_model: bool) -> None:
    """Each point's accuracy ± std against ``p[x]``: one colour per run (labelled once), one
    marker per architecture, annotated with its run (and model) and protocol."""
    seen_runs: set[str] = set()
    for p in pts:
        mi = models.index(p["model"])
        lab = p["run"] if p["run"] not in seen_runs else None
        seen_runs.add(p["run"])
        ax.errorbar([p[x]], [p["mean"]], yerr=[p["std"]], fmt=marker(mi),
                    color=color(p["run_index"]), capsize=3, ms=6, label=lab)
        text = f"{p['run']} ({p['model']})" if show_model else p["run"]
        ax.annotate(f"{text} [{p['protocol']}]", (p[x], p["mean"]),
                    textcoords="offset points", xytext=(5, 2), fontsize=6,
                    color=color(p["run_index"]))


def comparison(pts: list[dict[str, Any]], x: str, xlabel: str, *, log_x: bool = False) -> bytes | None:
    """Accuracy against ``x`` (a key of the points): one colour per run, one marker per
    architecture, each point labelled with its run and protocol."""
    pts = [p for p in pts if isinstance(p.get(x), (int, float)) and (not log_x or p[x] > 0)]
    if not pts:
        return None
    models = sorted({p["model"] for p in pts})
    with figure(4.6, 3.6) as (fig, ax):
        draw_points(ax, pts, x, models, show_model=True)
        if log_x:
            ax.set_xscale("log")
        lo, hi = min(p[x] for p in pts), max(p[x] for p in pts)
        if log_x:
            ax.set_xlim(lo / 1.6, hi * 3.5)
        else:
            span = (hi - lo) or max(abs(hi), 1.0)
            ax.set_xlim(lo - 0.1 * span, hi + 0.45 * span)
        ax.set_xlabel(xlabel)
        metrics = sorted({p["metric"] for p in pts})
        ax.set_ylabel(" / ".join(metrics))
        if len(models) > 1:
            for mi, m in enumerate(models):
                ax.plot([], [], marker(mi), color="0.4", label=f"model: {m}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return to_png(fig)


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
