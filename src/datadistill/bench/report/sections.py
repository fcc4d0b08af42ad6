"""One section per suite: every row's result (accuracy rows, speed / memory rows) and where and
how it was measured."""
from __future__ import annotations

from typing import Any

from .cells import (_acc, _budget, _bytes, _cpu, _env, _gib, _iters, _num, _protocol,
                    _published, _table, _threads, stored_bytes)
from .rules import status


def _speed_table(suite: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        c, w = r.get("cpu_s_per_iter") or {}, r.get("wall_s_per_iter") or {}
        ratio = "—"
        base = suite["rows"].get(r.get("vs") or "")
        if base and c.get("median") and (base.get("cpu_s_per_iter") or {}).get("median"):
            ratio = f"{base['cpu_s_per_iter']['median'] / c['median']:.2f}× vs {base['id']}"
            if base.get("peak_rss_bytes") and r.get("peak_rss_bytes"):
                ratio += f" (CPU-s {c['median'] / base['cpu_s_per_iter']['median']:.2f}×, " \
                         f"peak RSS {r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}× of it)"
        also = "; ".join(x for x in (_rounds(r), _extra(r.get("extra") or {})) if x != "—") or "—"
        body.append([r["id"], r.get("label") or r.get("method", "?"), r.get("dataset", "?"),
                     _budget(r.get("budget") or {}), _run_options(r), _threads(r),
                     _num(c.get("median"), 2) if c.get("median") is not None else "unknown",
                     _num(w.get("median"), 2) if w.get("median") is not None else "unknown",
                     _gib(r.get("peak_rss_bytes")), ratio, also, _state(r)])
    return _table(["row", "method", "dataset", "budget", "run options", "threads",
                   "CPU-s / iteration (median)", "wall s / iteration (median)", "peak RSS",
                   "speed-up (CPU-s)", "also measured", "status"], body)


def _run_options(r: dict[str, Any]) -> str:
    """What the row asked for and, after the arrow, what ``auto`` resolved to; rows timing an
    older commit or another program say so."""
    d = r.get("declared") or {}
    if r.get("commit") or d.get("commit"):
        params = ", ".join(f"{k}={v}" for k, v in (d.get("set") or {}).items())
        preset = f"preset {d['preset']}" if d.get("preset") else ""
        return (f"library at {str(r.get('commit') or d.get('commit'))[:9]}"
                + (f" ({', '.join(x for x in (preset, params) if x)})" if preset or params else ""))
    if r.get("external") or d.get("external"):
        prov = r.get("provenance") or {}
        return "external: " + (prov.get("program") or prov.get("repository") or str(d.get("external")))
    opts = ", ".join(f"{k}={v}" for k, v in (r.get("run") or {}).items() if k != "threads") or "defaults"
    res = r.get("run_resolved") or {}
    if not res:
        return opts
    got = [f"fused {'on' if res.get('fused') else 'off'}",
           f"compile {'on' if res.get('compile') else 'off'}", str(res.get("precision", "fp32"))]
    if res.get("chunk"):
        got.append(f"chunk {res['chunk']}")
    return f"{opts} → {', '.join(got)}"


def _rounds(r: dict[str, Any]) -> str:
    meds = (r.get("cpu_s_per_iter") or {}).get("round_medians")
    if not meds or len(meds) < 2:
        return "—"
    spread = (r.get("cpu_s_per_iter") or {}).get("spread")
    return (f"{len(meds)} alternating rounds, medians {' / '.join(_num(m, 2) for m in meds)}"
            + (f" (spread {100 * spread:.0f} %)" if spread is not None else ""))


def _extra(extra: dict[str, Any]) -> str:
    """Other figures a speed row recorded (FLOPs, fraction of the convolution throughput...)."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    return "; ".join(f"{k} {fmt(v)}" for k, v in extra.items() if v is not None) or "—"


def _state(r: dict[str, Any]) -> str:
    """The status cell of a row the table has no result for: a row its results mark as started
    (``running``) may have been interrupted when the report was written, so it says what is known."""
    st = r.get("status", "?")
    if st != "running":
        return st
    if r.get("rounds"):  # a repeated speed row: the rounds it has are in the record
        return (f"unfinished ({len(r['rounds'])} of "
                f"{(r.get('declared') or {}).get('repeats', '?')} rounds)")
    return "unfinished (started, no result yet)"


def _accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        if r.get("status") != "done":
            body.append([r["id"], (r.get("declared") or {}).get("method", "?")] + [""] * 11
                        + [_state(r)])
            continue
        word, why = status(r)
        per = "; ".join(f"{m} {v['mean']:.2f}" for m, v in (r.get("per_model") or {}).items()
                        if v.get("mean") is not None)
        body.append([r["id"], r["label"], r["dataset"], _budget(r.get("budget") or {}),
                     _bytes(stored_bytes(r), units=False), _acc(r), per, _protocol(r), _iters(r),
                     _cpu(r), _cpu(r, "evaluate"), _gib(r.get("peak_rss_bytes")), _published(r),
                     word])
    return _table(["row", "method", "dataset", "budget", "stored bytes", "result", "per model",
                   "protocol",
                   "iterations run / published", "distillation CPU-s", "evaluation CPU-s",
                   "peak RSS", "published", "status"], body)


def _where_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        src = r.get("source") or {}
        cmd = src.get("command") or ""
        origin = ", ".join(x for x in (src.get("file"), src.get("commit") and
                                       f"added in {src['commit'][:9]}") if x) or "—"
        prov = r.get("provenance") or {}
        if r.get("commit"):
            origin = f"the library at commit {r['commit']}, timed by `datadistill/bench/legacy.py`"
        elif prov.get("repository"):
            origin = (f"{prov['repository']} @ {str(prov.get('commit') or '?')[:9]}: "
                      f"{prov.get('command') or ''}").strip()
        kept = ", ".join(s["kept"] or f"sha256 {str(s.get('sha256'))[:12]}…, not kept"
                         for s in r.get("summaries") or [] if s) or "—"
        body.append([r["id"], _env(r), f"`{cmd}`" if cmd else "—", origin, kept,
                     (r.get("declared") or {}).get("notes") or ""])
    return _table(["row", "machine, threads, torch, commit, date", "command", "original file",
                   "summary", "notes"], body)


def suite_section(suite: dict[str, Any], level: str = "##",
                  figure: list[str] | None = None) -> list[str]:
    """The suite's heading, notes, its figure (``figure``: the markdown lines showing it, when
    the suite declares one), its tables and where each row was measured."""
    lines = [f"{level} {suite['title']} (`{suite['suite']}`)", ""]
    if suite.get("notes"):
        lines += [suite["notes"], ""]
    lines += figure or []
    rows = list(suite["rows"].values())
    acc = [r for r in rows if r.get("kind") != "speed"]
    speed = [r for r in rows if r.get("kind") == "speed"]
    if acc:
        lines += _accuracy_table(acc) + [""]
    if speed:
        lines += _speed_table(suite, speed) + [""]
    lines += ["Where and how each row was measured:", ""] + _where_table(rows)
    return lines + [""]
