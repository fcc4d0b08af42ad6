"""The accuracy-vs-CPU-time curves of ``curve`` rows: one distillation, its summary evaluated at
several iterations, each point with the distillation CPU-seconds spent up to it."""
from __future__ import annotations

from typing import Any

from .cells import _budget, _num, _pm, _protocol, _table, _threads
from .summary import _accuracy_rows, _order

CURVES_RULE = (
    "Rows with a `curve` evaluate snapshots of one distillation (saved at the listed iterations) "
    "under the row's protocol; the last point is the row's own evaluation. Distillation "
    "CPU-seconds are those spent up to that iteration (evaluation excluded), with the row's "
    "thread count. Accuracy: the first architecture of the row, mean ± population std over its "
    "models (and seeds). Iterations are out of the published schedule where the row quotes one.")


def curves_table(data: list[dict[str, Any]]) -> list[str]:
    """One line per point of every finished curve row, rows in the summary's order."""
    body = []
    for r in sorted((r for r in _accuracy_rows(data) if r.get("curve")), key=_order):
        pub = r.get("iterations_published")
        for p in r["curve"]:
            its = _num(p["iterations"]) + (f" / {_num(pub)}" if pub else "")
            cpu = "unknown" if p.get("distill_cpu_s") is None else \
                f"{_num(p['distill_cpu_s'])} ({_threads(r)})"
            body.append([r["label"], r["dataset"], _budget(r.get("budget") or {}), its, cpu,
                         _pm(p.get("accuracy")), p.get("model", "?"), _protocol(r),
                         f"{r['suite']}/{r['id']}"])
    if not body:
        return ["No curve row has finished yet (`curve = [...]` in a suite row)."]
    return _table(["method", "dataset", "budget", "iterations run / published",
                   "distillation CPU-s (threads)", "accuracy %", "model", "protocol",
                   "results row"], body)
