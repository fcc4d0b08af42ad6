"""Rows whose method stopped its own run before the iterations it was asked for (Distill-CF's and
RFAD's early stopping on a validation score, ``distillers/early_stop.py``): not reduced runs.

Rows recorded since the runner kept it say so (``stopped_early``, ``iterations_requested``).
Older rows do not: since the runner otherwise always runs what was asked, a row that ran fewer
iterations than it asked for stopped itself. What it asked for is its declared ``iterations``,
else the method's default after the row's preset (the library's registry, through
``runner.requested_iterations``); a row whose request cannot be told is not marked.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def _default(method: str, preset: str | None, params: str) -> int | None:
    import json

    from ..runner import requested_iterations  # (imports the library: only for old rows)

    return requested_iterations(method, preset, json.loads(params))


def requested_iterations(row: dict[str, Any]) -> int | None:
    """The outer iterations ``row`` asked for; None when that cannot be told (baselines,
    re-evaluations of another row's summary recorded before the runner kept it, names the
    library no longer knows)."""
    if row.get("iterations_requested") is not None:
        return int(row["iterations_requested"])
    d = row.get("declared") or {}
    if d.get("iterations") is not None:
        return int(d["iterations"])
    method = d.get("method") or row.get("method")
    if row.get("kind") != "accuracy" or d.get("from_summary") or not method:
        return None
    import json

    return _default(str(method), d.get("preset"), json.dumps(d.get("set") or {}, sort_keys=True))


def stopped_early(row: dict[str, Any]) -> bool:
    """Whether the row's method ended its run by its own rule before the requested iterations:
    the recorded flag, else (older rows) fewer iterations run than requested."""
    if row.get("stopped_early") is not None:
        return bool(row["stopped_early"])
    run = row.get("iterations_run")
    if not run:  # (baselines run 0 iterations; unknown is not a stop)
        return False
    asked = requested_iterations(row)
    return asked is not None and run < asked
