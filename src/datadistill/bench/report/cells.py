"""The cells of ``BENCHMARKS.md``: how a number, an accuracy, a budget, a protocol, CPU time,
stored bytes or a row's machine is written, and a markdown table of them."""
from __future__ import annotations

from typing import Any

from .stops import requested_iterations, stopped_early


def _num(x: float | None, nd: int | None = None) -> str:
    """Thousands separators; ``nd`` decimals (default: 2 below 10, 1 below 100, else 0)."""
    if x is None:
        return "unknown"
    if nd is None:
        nd = 0 if float(x).is_integer() or abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{nd}f}"


def _acc(row: dict[str, Any]) -> str:
    a = row.get("accuracy") or {}
    if a.get("mean") is None:
        return "—"
    s = f"{a['mean']:.2f}"
    if a.get("n", 1) > 1 and a.get("std") is not None:
        s += f" ± {a['std']:.2f}"
    s += f" (n={a.get('n', '?')})"
    if row.get("metric", "accuracy %") != "accuracy %":
        s += f" {row['metric'].replace(' %', '')}"
    return s


def _budget(b: dict[str, Any]) -> str:
    if "ipc" in b:
        return f"IPC {b['ipc']}"
    if "ratio" in b:
        return f"{100 * b['ratio']:.1f} % of nodes"
    if "users" in b:
        return f"{b['users']} users"
    return "—"


def _budget_key(b: dict[str, Any]) -> tuple:
    return (sorted(b)[0] if b else "", float(next(iter(b.values()), 0) or 0))


def _protocol(row: dict[str, Any]) -> str:
    p = row.get("protocol") or {}
    if not p:
        return "—"
    name = p.get("name", "?")
    bits = [f"{p['epochs']} ep" if p.get("epochs") else None,
            f"{p['num_models']} models" if p.get("num_models") else None]
    bits = [b for b in bits if b]
    return name + (f" ({', '.join(bits)})" if bits else "")


def _iters(row: dict[str, Any]) -> str:
    """``run / published``; a run its method stopped by its own rule says so, and how many
    iterations it asked for where that is not the published schedule: ``280 (stopped) / 500``."""
    run, pub = row.get("iterations_run"), row.get("iterations_published")
    ran = _num(run) if run is not None else "?"
    if stopped_early(row):
        asked = requested_iterations(row)
        ran += " (stopped)" if asked == pub or asked is None else f" (stopped, of {_num(asked)})"
    return f"{ran} / {_num(pub) if pub else '—'}"


def _threads(row: dict[str, Any]) -> str:
    t = (row.get("env") or {}).get("threads")
    return f"{t} thr" if t else "threads unknown"


def _cpu(row: dict[str, Any], part: str = "distill") -> str:
    src = (row.get("declared") or {}).get("from_summary")
    if src and part == "distill":  # a re-evaluation: its distillation is that row's
        return f"— (the summary of {src})"
    c = (row.get("cpu_s") or {}).get(part)
    if c is None:
        w = (row.get("wall_s") or {}).get(part)
        return "unknown" + (f" (wall {_num(w)} s)" if w is not None else "")
    used = ((row.get("run_resolved") or {}).get(part) or {}).get("threads")
    # the threads that part ran with (a resumed part may have run with others than the row's env)
    return f"{_num(c)} ({used} thr)" if used else f"{_num(c)} ({_threads(row)})"


def _published(row: dict[str, Any]) -> str:
    p = row.get("published") or {}
    if p.get("accuracy") is None:
        return "—"
    s = f"{p['accuracy']:.1f}" + (f" ± {p['std']:.1f}" if p.get("std") else "")
    return s + (f" ({p['source']})" if p.get("source") else "")


def stored_bytes(row: dict[str, Any]) -> int | None:
    """The bytes a row's summary stores: the row's ``stored_bytes``, else the first recorded
    per-seed figure (``summaries[].stored_bytes``); None when neither was recorded."""
    if row.get("stored_bytes") is not None:
        return int(row["stored_bytes"])
    for s in row.get("summaries") or []:
        if s and s.get("stored_bytes") is not None:
            return int(s["stored_bytes"])
    return None


def _bytes(b: int | None, units: bool = True) -> str:
    if b is None:
        return "—"
    if not units:
        return f"{b:,}"
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b:,} ({b / size:.1f} {unit})"
    return f"{b:,}"


def _gib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2**30:.2f} GiB"


def _env(row: dict[str, Any]) -> str:
    e = row.get("env") or {}
    commit = (e.get("commit") or "?")[:9] + ("+dirty" if e.get("dirty") else "")
    return (f"{e.get('cpu', '?')}, {e.get('cores', '?')} cores, {_threads(row)}, torch "
            f"{e.get('torch', '?')}, {commit}, {str(e.get('date', '?'))[:10]}")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def _pm(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat.get("std") is not None
                                    and (stat.get("n") or 0) > 1 else "")
