"""A suite's figure (``figure = {x, title, also, limit}`` in its TOML): accuracy against examples
per class (``x = "ipc"``), stored bytes (``x = "bytes"``) or distillation CPU-seconds
(``x = "cpu"``) from its results file, drawn into ``bench/results/<suite>.png`` and shown in the
suite's section of ``BENCHMARKS.md``.

Against examples or bytes, one line per series: the rows of one method with the same storage
precision and label settings (``set`` keys ``storage`` and ``*label*``) and compact layout
(``compact``) under one protocol (or the rows declaring one ``series`` name), sorted by x;
where a series has several rows at one x, the one with the most iterations; log-x. Against CPU-seconds, one line per row: the points of its
``curve`` (one distillation evaluated at its snapshots; a row without a curve is one point);
linear x, and ``limit`` draws a budget as a vertical line. Each point: the mean with the
population std (over models and seeds) as an error bar. The protocol is in the figure's
subtitle when every row shares it, else in each series' legend entry. The PNG carries no
metadata that varies between runs (``report.figures.to_png``) and is rewritten only when its
bytes change, so regenerating the report without new results leaves it untouched.
"""
from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

from .cells import _protocol, stored_bytes

X_LABELS = {"ipc": "examples per class", "bytes": "stored bytes",
            "cpu": "distillation CPU-seconds"}


def _x(row: dict[str, Any], x: str) -> float | None:
    if x == "ipc":
        v = (row.get("budget") or {}).get("ipc")
    elif x == "cpu":
        v = (row.get("cpu_s") or {}).get("distill")
    else:
        v = stored_bytes(row)
    return float(v) if v else None


def _cpu_series(suite: dict[str, Any]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Against CPU-seconds: one line per finished row (its curve's points, or its one point)."""
    out = {}
    for r in suite["rows"].values():
        if r.get("kind") != "accuracy" or r.get("status") != "done":
            continue
        marks = [(p.get("distill_cpu_s"), p.get("accuracy") or {}) for p in r.get("curve") or []] \
            or [(_x(r, "cpu"), r.get("accuracy") or {})]
        pts = [{"x": float(cpu), "mean": float(acc["mean"]), "std": float(acc.get("std") or 0.0),
                "row": r["id"]} for cpu, acc in marks
               if cpu is not None and acc.get("mean") is not None]
        if pts:
            proto = re.sub(r",? \d+ models?\)", ")", _protocol(r))
            out[(str(r.get("label") or r["id"]), proto, r.get("metric") or "accuracy %")] = \
                sorted(pts, key=lambda p: p["x"])
    return dict(sorted(out.items()))


def _series_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """(name, protocol, metric) of the line a row belongs to: its declared ``series``, else its
    method with its storage, label settings and compact layout."""
    d = row.get("declared") or {}
    proto = re.sub(r",? \d+ models?\)", ")", _protocol(row))
    if d.get("series"):
        return str(d["series"]), proto, row.get("metric") or "accuracy %"
    kept = {k: v for k, v in sorted((d.get("set") or {}).items())
            if k == "storage" or "label" in k}
    comp = d.get("compact") or {}
    layout = ["compact"] + ([f"top-{comp['topk']}"] if comp.get("topk") else []) \
        + [str(comp.get("dtype") or "float16")]
    name = ", ".join([str(d.get("method") or row.get("method") or "?")]
                     + [str(v) if k == "storage" else f"{k}={v}" for k, v in kept.items()]
                     + ([" ".join(layout)] if comp else []))
    # one line whatever the number of evaluation models of each point (the tables give it)
    return name, proto, row.get("metric") or "accuracy %"


def series(suite: dict[str, Any], x: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The plotted points per series: {x, mean, std, row}, sorted by x."""
    if x == "cpu":
        return _cpu_series(suite)
    out: dict[tuple[str, str, str], dict[float, dict[str, Any]]] = {}
    for r in suite["rows"].values():
        mean = (r.get("accuracy") or {}).get("mean")
        xv = _x(r, x)
        if r.get("kind") != "accuracy" or r.get("status") != "done" or mean is None or xv is None:
            continue
        pts = out.setdefault(_series_key(r), {})
        old = pts.get(xv)
        its = r.get("iterations_run") or 0
        if old is None or its >= old["iterations"]:
            pts[xv] = {"x": xv, "mean": float(mean), "iterations": its,
                       "std": float((r.get("accuracy") or {}).get("std") or 0.0), "row": r["id"]}
    return {k: [v[xv] for xv in sorted(v)] for k, v in sorted(out.items())}


def with_also(suite: dict[str, Any], spec: dict[str, Any],
              by_name: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``suite`` with the rows its figure's ``also`` names ("<suite>/<row>") from the other
    results (keyed by that name; a row not run yet is left out, and the caption says which
    were drawn)."""
    extra = {}
    for ref in spec.get("also") or []:
        other, rid = ref.split("/", 1)
        row = ((by_name.get(other) or {}).get("rows") or {}).get(rid)
        if row is not None:
            extra[ref] = {**row, "id": ref}
    if not extra:
        return suite
    return {**suite, "rows": {**suite["rows"], **extra}}


def caption(suite: dict[str, Any], spec: dict[str, Any]) -> str:
    lines = series(suite, spec["x"])
    protos = sorted({k[1] for k in lines})
    metric = sorted({k[2] for k in lines})
    drawn = {p["row"] for pts in lines.values() for p in pts}
    also = [a for a in spec.get("also") or [] if a in drawn]
    per = ("(linear scale; threads: the table); one line per row, each one distillation "
           "evaluated at its snapshots" if spec["x"] == "cpu" else
           "(log scale); one line per method and storage")
    named = sorted({str(r["declared"]["series"]) for r in suite["rows"].values()
                    if (r.get("declared") or {}).get("series") and r["id"] in drawn})
    if named and spec["x"] != "cpu":
        per += (", and a line per series its rows name (" + "; ".join(named) + ")")
    limit = spec.get("limit")
    return (f"{' / '.join(metric) or 'accuracy %'}: mean over models and seeds (their number "
            f"per point: the table), population std as error bars, against "
            f"{X_LABELS[spec['x']]} {per}"
            + (f"; the dashed line: {limit['label'] or 'the budget'} ({limit['x']:g})"
               if limit else "") + (f"; protocol {protos[0]}" if len(protos) == 1 else
                          "; protocols in the legend") + "."
            + (f" Also drawn from other suites: {', '.join(also)}." if also else ""))


def draw(suite: dict[str, Any], spec: dict[str, Any]) -> bytes | None:
    """The figure as PNG bytes; None when no row has a point to plot."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from ...report.figures import color, figure, marker, to_png

    lines = series(suite, spec["x"])
    if not lines:
        return None
    protos = {k[1] for k in lines}
    metrics = sorted({k[2] for k in lines})
    title = textwrap.fill(spec.get("title") or suite.get("title") or suite["suite"], 70)
    if len(protos) == 1:
        title += f"\nprotocol: {next(iter(protos))}"
    with figure(6.0, 3.8) as (fig, ax):
        for i, ((name, proto, _), pts) in enumerate(lines.items()):
            label = name if len(protos) == 1 else f"{name} [{proto}]"
            ax.errorbar([p["x"] for p in pts], [p["mean"] for p in pts],
                        yerr=[p["std"] for p in pts], color=color(i), marker=marker(i),
                        capsize=3, lw=1.2, ms=5, label=label)
        xs = sorted({p["x"] for pts in lines.values() for p in pts})
        limit = spec.get("limit")
        if limit:
            ax.axvline(limit["x"], color="0.4", ls="--", lw=1.0, label=limit["label"] or None)
        if spec["x"] == "cpu":  # linear: CPU-seconds add up
            ax.set_xlim(0, max(xs[-1], limit["x"] if limit else 0) * 1.05)
            ax.set_xlabel(X_LABELS["cpu"])
        else:
            ax.set_xscale("log")
            if spec["x"] == "ipc":  # the examples-per-class values themselves as ticks
                ax.set_xticks(xs)
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(xs[0] / 1.5, xs[-1] * 1.5)
            ax.set_xlabel(X_LABELS[spec["x"]] + " (log scale)")
        ax.set_ylabel(" / ".join(metrics))
        ax.set_title(title, fontsize=9)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return to_png(fig)


def write_figure(suite: dict[str, Any], spec: dict[str, Any], path: Path) -> Path | None:
    """Draw the suite's figure into ``path`` (only when its bytes change); None when nothing to
    plot."""
    png = draw(suite, spec)
    if png is None:
        return None
    path = Path(path)
    if not (path.exists() and path.read_bytes() == png):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(png)
        os.replace(tmp, path)
    return path


def figure_lines(suite: dict[str, Any], spec: dict[str, Any], png: Path, md: Path) -> list[str]:
    """The markdown that shows ``png`` in a file at ``md`` (a path relative to it)."""
    rel = os.path.relpath(Path(png).resolve(), Path(md).resolve().parent).replace(os.sep, "/")
    alt = (spec.get("title") or suite.get("title") or suite["suite"]).replace("[", "(").replace("]", ")")
    return [f"![{alt}]({rel})", "", f"*Figure: {caption(suite, spec)} Drawn by "
            f"`python -m datadistill.bench report` from `bench/results/{suite['suite']}.json`.*",
            ""]
