"""Fixed-examples and fixed-bytes comparison of runs (``datadistill compare``; survey §2.5).

Every run (a run folder or a bare summary folder) contributes one point per evaluated
architecture and protocol: its accuracy (mean ± std over the evaluated models) against

- examples per class (materialized: a multi-formation or factorized summary holds more examples
  than it stores), and
- stored bytes (``SyntheticSet.stored_bytes()``: at the summary's storage precision, with uint8
  ranges, decoders and labels), also expressed as ``f32-ipc``: the number of float32 images per
  class those bytes would hold (``bytes / (classes x numbers per image x 4)``).

What it needs: the summary (``summary/summary.json`` + ``.safetensors``) and its saved
evaluations — the ``*.json`` files ``datadistill evaluate RUN`` writes into
``RUN/evaluations/`` (or any evaluation JSON in the folder, ``report.runs``). A run without an
evaluation is listed with its bytes and no accuracy. Each point carries its protocol; points under
different protocols are not comparable, and the table says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .runs import RunData, load_run, unique_names

BY = ("examples", "bytes")


def _protocol_label(ev: dict[str, Any]) -> str:
    from .plots import protocol_label  # (the report's wording of a protocol)
    return protocol_label(ev)


def float32_ipc(run: RunData) -> float | None:
    """The stored bytes as float32 images per class (image data), else None."""
    info = run.syn.info
    if info.modality != "image":
        return None
    per_image = math.prod(info.shape) * 4
    return run.stored_bytes / (per_image * info.num_classes)


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    paths = [Path(p) for p in paths]
    return [load_run(p, name) for p, name in zip(paths, unique_names(paths))]


def compare_points(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per (run, evaluation, architecture); a run without evaluations gives one row
    with ``mean`` None."""
    rows = []
    for ri, run in enumerate(runs):
        base = {"run": run.name, "run_index": ri, "method": run.method, "kind": run.syn.kind,
                "storage": run.syn.storage.name, "ipc": run.ipc,
                "stored_bytes": run.stored_bytes, "f32_ipc": float32_ipc(run),
                "dataset": run.dataset}
        seen: set[tuple[str, str]] = set()
        for ev in run.evaluations:
            label = _protocol_label(ev)
            for model, r in ev["results"].items():
                if not isinstance(r.get("mean"), (int, float)) or (model, label) in seen:
                    continue
                seen.add((model, label))
                rows.append({**base, "model": model, "mean": float(r["mean"]),
                             "std": float(r.get("std") or 0.0), "protocol": label})
        if not seen:
            rows.append({**base, "model": None, "mean": None, "std": None, "protocol": None})
    return rows


def _sort_key(by: str):
    x = "ipc" if by == "examples" else "stored_bytes"
    return lambda p: (p["dataset"], p[x], -(p["mean"] if p["mean"] is not None else -1e9))


def compare_table(points: list[dict[str, Any]], by: str = "examples") -> str:
    """A text table sorted by examples per class or by stored bytes."""
    if by not in BY:
        raise ConfigError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    head = (f"{'run':<24}{'method':<9}{'kind':<15}{'storage':<14}{'ex/class':>9}"
            f"{'stored B':>11}{'f32-ipc':>9}{'model':>10}{'accuracy %':>17}  protocol")
    lines = [f"accuracy by {'examples per class' if by == 'examples' else 'stored bytes'}", head]
    for p in sorted(points, key=_sort_key(by)):
        acc = "not evaluated" if p["mean"] is None else f"{p['mean']:.2f} ± {p['std']:.2f}"
        f32 = "-" if p["f32_ipc"] is None else f"{p['f32_ipc']:.3g}"
        lines.append(f"{p['run'][:23]:<24}{p['method'][:8]:<9}{p['kind'][:14]:<15}"
                     f"{p['storage']:<14}{p['ipc']:>9.3g}{p['stored_bytes']:>11}{f32:>9}"
                     f"{(p['model'] or '-'):>10}{acc:>17}  {p['protocol'] or '-'}")
    protocols = sorted({p["protocol"] for p in points if p["protocol"]})
    if len(protocols) > 1:
        lines.append(f"note: {len(protocols)} protocols ({'; '.join(protocols)}): only points "
                     f"under the same protocol compare")
    missing = sorted({p["run"] for p in points if p["mean"] is None})
    if missing:
        lines.append(f"note: not evaluated: {', '.join(missing)} (run `datadistill evaluate RUN` "
                     f"first; the result goes to RUN/evaluations/)")
    return "\n".join(lines)


def compare_png(points: list[dict[str, Any]], out: str | Path, by: str | None = None) -> Path:
    """Accuracy against examples per class and against stored bytes (two panels; ``by`` draws
    one of them), one colour per run, one marker per architecture, each point labelled with its
    run and protocol."""
    from .figures import figure, marker
    from .plots import draw_points

    pts = [p for p in points if p["mean"] is not None]
    if not pts:
        raise ConfigError("no evaluated run to plot (run `datadistill evaluate RUN` first)")
    panels = [b for b in BY if by is None or b == by]
    models = sorted({p["model"] for p in pts})
    out = Path(out)
    with figure(4.8 * len(panels), 3.6, ncols=len(panels)) as (fig, axes):
        axes = axes if len(panels) > 1 else [axes]
        for ax, b in zip(axes, panels):
            x = "ipc" if b == "examples" else "stored_bytes"
            draw_points(ax, pts, x, models, show_model=False)
            xs = [p[x] for p in pts]
            if b == "bytes" or max(xs) / max(min(xs), 1e-9) > 20:
                ax.set_xscale("log")
                ax.set_xlim(min(xs) / 1.6, max(xs) * 3.5)
            else:  # room on the right for the labels
                span = (max(xs) - min(xs)) or max(abs(max(xs)), 1.0)
                ax.set_xlim(min(xs) - 0.1 * span, max(xs) + 0.6 * span)
            ax.set_xlabel("examples per class" if b == "examples" else "stored bytes")
            ax.set_ylabel("accuracy %")
            ax.set_title(f"accuracy vs {'examples per class' if b == 'examples' else 'stored bytes'}",
                         fontsize=9)
        if len(models) > 1:
            for mi, m in enumerate(models):
                axes[-1].plot([], [], marker(mi), color="0.4", label=f"model: {m}")
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png", metadata={"Software": None})
    return out


def compare(paths: Sequence[str | Path], *, by: str = "examples",
            png: str | Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Load runs, build the points, return (table, points); with ``png`` also write the plot."""
    if by not in BY:
        raise ConfigError(f"by must be one of {', '.join(BY)}, got {by!r}")
    points = compare_points(load_runs(paths))
    if png is not None:
        compare_png(points, png)
    return compare_table(points, by), points
