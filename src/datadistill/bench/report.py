"""``BENCHMARKS.md``, generated from the results files and nothing else.

It opens with one summary table (method × dataset × budget → accuracy, protocol, iterations
run / published, distillation CPU-seconds with threads, published figure, stored bytes,
parity, status), then the rows compared at a fixed number of stored bytes (rows that declare
``byte_budget``), then DD-Ranking's robust scores of the rows that computed them (``robust =
true``), then one section per accuracy suite with every row and its environment, then the speed
/ memory suites. The status word follows a fixed rule (``status``).
"""
from __future__ import annotations

import re
import subprocess

from pathlib import Path
from typing import Any

HEADER = ("<!-- GENERATED FILE: do not edit by hand. `python -m datadistill.bench report` writes "
          "it from bench/results/*.json; change a suite (bench/suites/*.toml) or rerun it. -->")

STATUS_RULE = (
    "Status, by rule: **reduced run** when fewer iterations ran than the published schedule; "
    "otherwise **reproduced** when the mean is at or above the published figure minus its "
    "published std, else **below published**; **no published figure** when none is quoted. "
    "The reason follows the word.")

PARITY_RULE = (
    "Parity, by rule: **yes** when the row was made by library code that passes the method's "
    "parity fixture (tests/fixtures/parity, numbers computed by the authors' code); **before fix "
    "(commit)** when the row predates the fix that fixture led to (the method's defaults changed "
    "since: rerun the row); **—** without a fixture. Every accuracy row measured before commit "
    "12fd6cb also used the previous evaluation schedule (`epochs` passes, lr x0.1 at half keeping "
    "the momentum) instead of the field's (`epochs + 1` passes, a fresh optimizer at lr x0.1): "
    "the `evaluate` parity fixture.")


# -- formatting ---------------------------------------------------------------------------------
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
    run, pub = row.get("iterations_run"), row.get("iterations_published")
    return f"{_num(run) if run is not None else '?'} / {_num(pub) if pub else '—'}"


def _threads(row: dict[str, Any]) -> str:
    t = (row.get("env") or {}).get("threads")
    return f"{t} thr" if t else "threads unknown"


def _cpu(row: dict[str, Any], part: str = "distill") -> str:
    c = (row.get("cpu_s") or {}).get(part)
    if c is None:
        w = (row.get("wall_s") or {}).get(part)
        return "unknown" + (f" (wall {_num(w)} s)" if w is not None else "")
    return f"{_num(c)} ({_threads(row)})"


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


# -- rules ----------------------------------------------------------------------------------------
def status(row: dict[str, Any]) -> tuple[str, str]:
    """(word, why) by the rule in ``STATUS_RULE``."""
    pub = (row.get("published") or {}).get("accuracy")
    mean = (row.get("accuracy") or {}).get("mean")
    if pub is None or mean is None:
        return "no published figure", ""
    delta = f"{mean - pub:+.2f} points"
    run, total = row.get("iterations_run"), row.get("iterations_published")
    if total and run is not None and run < total:
        return "reduced run", f"{_num(run)} of {_num(total)} iterations; {delta}"
    tol = (row.get("published") or {}).get("std") or 0.0
    if mean >= pub - tol:
        return "reproduced", delta
    return "below published", delta


_SINCE = re.compile(r"since commit ([0-9a-f]{7,40})")


def parity_methods(parity_dir: Path | None) -> dict[str, str | None]:
    """Methods with a parity record (``tests/fixtures/parity/<method>[-...].md``) -> the commit
    from which the library passes it (its "Status ... since commit X" line), or None where it
    passed from the start."""
    if parity_dir is None or not parity_dir.is_dir():
        return {}
    out = {}
    for p in parity_dir.glob("*.md"):
        m = _SINCE.search(p.read_text())
        out[p.stem.lower().replace("_", "-")] = m.group(1) if m else None
    return out


def has_parity(method: str, parity) -> bool:
    m = method.lower()
    return any(s == m or s.startswith(m + "-") for s in parity)


def _is_ancestor(a: str, b: str) -> bool | None:
    """Whether commit ``a`` is an ancestor of (or equal to) ``b``; None when git cannot tell."""
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], capture_output=True,
                           cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(r.returncode)


def parity_word(r: dict[str, Any], parity: dict[str, str | None]) -> str:
    """``yes`` when the row was made by code that passes the method's parity fixture, ``before
    fix`` when it predates the fix its fixture led to, ``—`` without a fixture."""
    m = r["method"].lower()
    keys = [k for k in parity if k == m or k.startswith(m + "-")]
    if not keys:
        return "—"
    since = [parity[k] for k in keys if parity[k]]
    commit = (r.get("env") or {}).get("commit") or (r.get("source") or {}).get("commit")
    if not since:
        return "yes"
    if not commit:
        return "unknown"
    ok = [_is_ancestor(c, commit) for c in since]
    if any(v is False for v in ok):
        return f"before fix ({', '.join(c[:7] for c, v in zip(since, ok) if v is False)})"
    return "yes" if all(ok) else "unknown"


def _headline(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per (label, dataset, budget): the most iterations, then paper protocol, then
    more models, then the newest."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["label"], r["dataset"], _budget(r.get("budget") or {}))
        rank = (r.get("iterations_run") or 0, (r.get("protocol") or {}).get("name") == "paper",
                (r.get("accuracy") or {}).get("n") or 0, str((r.get("env") or {}).get("date")))
        if key not in best or rank > best[key][0]:
            best[key] = (rank, r)
    return {k: v[1] for k, v in best.items()}


# -- the document -------------------------------------------------------------------------------
def _accuracy_rows(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for suite in data:
        for r in suite["rows"].values():
            if r.get("kind") == "accuracy" and r.get("status") == "done" \
                    and (r.get("declared") or {}).get("summary", True):
                out.append({**r, "suite": suite["suite"]})
    return out


IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")


def _order(r: dict[str, Any]) -> tuple:
    """Images first, then graphs (graph classification, then node ratios), then recommender."""
    b = r.get("budget") or {}
    kind = 0 if r["dataset"] in IMAGE_DATASETS else 1 if "ipc" in b else 2 if "ratio" in b else 3
    return (kind, r["dataset"], _budget_key(b), r["label"])


def summary_table(data: list[dict[str, Any]], parity: dict[str, str | None]) -> list[str]:
    rows = sorted(_headline(_accuracy_rows(data)).values(), key=_order)
    body = []
    for r in rows:
        word, why = status(r)
        body.append([r["label"], r["dataset"], _budget(r.get("budget") or {}), _acc(r),
                     _protocol(r), _iters(r), _cpu(r), _published(r),
                     _bytes(stored_bytes(r), units=False), parity_word(r, parity),
                     f"**{word}**" + (f" ({why})" if why else ""), f"{r['suite']}/{r['id']}"])
    head = ["method", "dataset", "budget", "accuracy %", "protocol", "iterations run / published",
            "distillation CPU-s (threads)", "published", "stored bytes", "parity", "status",
            "results row"]
    return _table(head, body)


BYTES_RULE = (
    "A row is compared here when its suite declares `byte_budget` (bytes) for it: rows of one "
    "dataset at one budget, best first. **fits** when the summary stores at most the budget, "
    "**over** (by how much) otherwise, **unknown** when its bytes were not recorded; stored "
    "bytes count every tensor that must be kept (examples, labels, learned step size, bases "
    "and decoders of factorized summaries). The summary table above is at a fixed number of "
    "examples per class.")


def fixed_bytes_table(data: list[dict[str, Any]]) -> list[str]:
    """Rows that declare a ``byte_budget``, grouped by dataset and budget, best accuracy first."""
    rows = [r for r in _accuracy_rows(data) if (r.get("declared") or {}).get("byte_budget")]
    if not rows:
        return ["No row declares a byte budget yet (`byte_budget = <bytes>` in a suite row); "
                "the summary table's stored-bytes column gives each row's bytes."]
    rows.sort(key=lambda r: (r["dataset"], int(r["declared"]["byte_budget"]),
                             -((r.get("accuracy") or {}).get("mean") or -1e9)))
    body = []
    for r in rows:
        budget, got = int(r["declared"]["byte_budget"]), stored_bytes(r)
        fit = "unknown" if got is None else "fits" if got <= budget else \
            f"**over** (+{100 * (got / budget - 1):.1f} %)"
        used = "—" if got is None else f"{100 * got / budget:.1f} %"
        body.append([r["dataset"], _bytes(budget), r["label"], _budget(r.get("budget") or {}),
                     _acc(r), _protocol(r), _bytes(got), used, fit, _cpu(r),
                     f"{r['suite']}/{r['id']}"])
    return _table(["dataset", "byte budget", "method", "examples", "accuracy %", "protocol",
                   "stored bytes", "of budget", "fits", "distillation CPU-s (threads)",
                   "results row"], body)


ROBUST_RULE = (
    "DD-Ranking's scores (Li et al., \"DD-Ranking: Rethinking the Evaluation of Dataset "
    "Distillation\", arXiv:2505.13300, 2025; `datadistill.evaluation.robust`, the same function "
    "as `datadistill evaluate --robust`; docs/report.md). Per round r, fresh models trained on "
    "the summary, on the summary under hard labels, on the summary without evaluation-time "
    "augmentation, and on a new random real subset of the same storage with and without "
    "augmentation: HLR = full-data accuracy − the summary's under hard labels; IOR = the "
    "summary's − the random subset's (each under its own evaluation); LRS = 100·(e^α − e^−1)/"
    "(e − e^−1) with α = w·IOR − (1−w)·HLR; ARS the same with β = γ·(gap to random with "
    "augmentation) + (1−γ)·(gap without); accuracies as fractions, w = γ = 0.5 unless the row "
    "says otherwise. Mean ± population std over the rounds of every seed. The protocol column "
    "is the evaluation every stage used (its DSA for \"with augmentation\"); HLR needs the "
    "full-data accuracy named in the last column. Unlike DD-Ranking, no learning rate or "
    "epoch is chosen on the test set, so accuracies (and scores) are the fixed protocol's.")


def _pm(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat.get("std") is not None
                                    and (stat.get("n") or 0) > 1 else "")


def robust_table(data: list[dict[str, Any]]) -> list[str]:
    """Every accuracy row with robust scores, one line per row and architecture."""
    rows = sorted((r for r in _accuracy_rows(data) if r.get("robust")), key=_order)
    body = []
    for r in rows:
        rob = r["robust"]
        full = rob.get("full_reference") or {}
        rnd = rob.get("random") or {}
        proto = rob.get("protocol") or {}
        how = (f"{proto.get('name', '?')} ({proto.get('epochs', '?')} ep, "
               f"{rob.get('rounds', '?')} rounds"
               + (f" over {rob['seeds']} seeds" if (rob.get("seeds") or 1) > 1 else "") + ")")
        w = rob.get("weights") or {}
        if (w.get("lrs"), w.get("ars")) not in ((0.5, 0.5), (None, None)):
            how += f"; w = {w.get('lrs')}, γ = {w.get('ars')}"
        for m, s in (rob.get("models") or {}).items():
            acc = (r.get("per_model") or {}).get(m) or {}
            body.append([
                r["label"], r["dataset"], _budget(r.get("budget") or {}), m,
                _pm(acc), f"**{_pm(s.get('lrs'))}**",
                f"**{_pm(s.get('ars'))}**", _pm(s.get("hlr")), _pm(s.get("ior")),
                _pm(s.get("aug_gap")), _pm(s.get("noaug_gap")), how,
                f"IPC {rnd.get('ipc', '?')}, {rnd.get('labels', '?')} labels",
                (f"{s['full_acc']:.1f} ({full.get('kind', '?')})"
                 if s.get("full_acc") is not None else "—"),
                f"{r['suite']}/{r['id']}"])
    if not body:
        return ["No row computed them yet (`robust = true` in a suite row; "
                "`python -m datadistill.bench run robust`)."]
    return _table(["method", "dataset", "budget", "model", "accuracy %", "LRS %", "ARS %",
                   "HLR (pp)", "IOR (pp)", "gap to random w/ aug (pp)",
                   "gap to random w/o aug (pp)", "protocol (rounds)", "random subsets",
                   "full-data % (source)", "results row"], body)


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
                     _gib(r.get("peak_rss_bytes")), ratio, also, r.get("status", "?")])
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


def _accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    body = []
    for r in rows:
        if r.get("status") != "done":
            body.append([r["id"], (r.get("declared") or {}).get("method", "?")] + [""] * 9
                        + [r.get("status", "?")])
            continue
        word, why = status(r)
        per = "; ".join(f"{m} {v['mean']:.2f}" for m, v in (r.get("per_model") or {}).items()
                        if v.get("mean") is not None)
        body.append([r["id"], r["label"], r["dataset"], _budget(r.get("budget") or {}), _acc(r),
                     per, _protocol(r), _iters(r), _cpu(r), _cpu(r, "evaluate"),
                     _gib(r.get("peak_rss_bytes")), _published(r), word])
    return _table(["row", "method", "dataset", "budget", "result", "per model", "protocol",
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


def suite_section(suite: dict[str, Any], level: str = "##") -> list[str]:
    lines = [f"{level} {suite['title']} (`{suite['suite']}`)", ""]
    if suite.get("notes"):
        lines += [suite["notes"], ""]
    rows = list(suite["rows"].values())
    acc = [r for r in rows if r.get("kind") != "speed"]
    speed = [r for r in rows if r.get("kind") == "speed"]
    if acc:
        lines += _accuracy_table(acc) + [""]
    if speed:
        lines += _speed_table(suite, speed) + [""]
    lines += ["Where and how each row was measured:", ""] + _where_table(rows)
    return lines + [""]


def render(data: list[dict[str, Any]], parity: dict[str, str | None]) -> str:
    units = data[0]["units"] if data else {}
    lines = ["# Benchmarks", "", HEADER, "",
             f"Generated from {len(data)} results files in "
             "`bench/results/`. Time is in CPU-seconds (process CPU time of all threads, "
             "waited-for workers included) with the thread count beside it; wall seconds only "
             "where a row says so. `unknown` means the original run did not record it.", ""]
    for k, v in units.items():
        lines.append(f"- `{k}`: {v}")
    lines += ["", "## Summary: which method, how good, at what cost", "",
              "One row per method × dataset × budget: the results row with the most iterations "
              "(then the `paper` protocol, then the most models). Every row of every suite "
              "follows in the suite sections.", "", STATUS_RULE, "", PARITY_RULE, ""]
    lines += summary_table(data, parity) + [""]
    lines += ["## At fixed stored bytes", "", BYTES_RULE, ""] + fixed_bytes_table(data) + [""]
    lines += ["## Robust scores (DD-Ranking): accuracy without soft-label and augmentation "
              "inflation", "", ROBUST_RULE, ""] + robust_table(data) + [""]
    speed_only = lambda s: all(r.get("kind") == "speed" for r in s["rows"].values())  # noqa: E731
    for s in data:
        if not speed_only(s):
            lines += suite_section(s)
    if any(speed_only(s) for s in data):
        lines += ["## Speed and memory", ""]
        for s in data:
            if speed_only(s):
                lines += suite_section(s, "###")
    return "\n".join(lines).rstrip() + "\n"


APP_TITLES = {"continual": "Continual learning: compress then recall",
              "nas": "Architecture search: rank preservation"}


def _app_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline columns of an application results file (``datadistill.apps/1``)."""
    res = d.get("results") or {}
    if d.get("app") == "continual":
        head = ["strategy", "final average accuracy %", "forgetting", "memory / class",
                "CPU-s"]
        body = [[k, _num(v.get("final_avg_acc"), 2), _num(v.get("forgetting"), 2),
                 _num(v.get("memory_examples_per_class")), _num(v.get("cpu_s"))]
                for k, v in res.items()]
    else:
        head = ["summary", "Spearman", "Kendall", "top-5 overlap", "chosen arch's full-data acc %",
                "best %", "search speed-up (with making the summary)"]
        body = [[k, _num(v.get("spearman"), 2), _num(v.get("kendall"), 2),
                 f"{v.get('top_overlap')}/{v.get('top_k')}", _num(v.get("chosen_true_acc"), 2),
                 _num(v.get("best_true_acc"), 2),
                 f"{_num(v.get('speedup'), 2)}× ({_num(v.get('speedup_with_making'), 2)}×)"]
                for k, v in res.items()]
    return head, body


def app_sections(results_dir: Path) -> list[str]:
    """Sections for the applications' own results files (``datadistill app NAME --out``), which
    record one command's run (machine, threads, commit, date, CPU-seconds) in their schema."""
    import json
    lines: list[str] = []
    for f in sorted(results_dir.glob("apps-*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if d.get("schema") != "datadistill.apps/1" or d.get("app") not in APP_TITLES:
            continue
        m = d.get("machine") or {}
        ds = (d.get("settings") or {}).get("dataset", "?")
        lines += [f"## {APP_TITLES[d['app']]} ({ds}) (`{f.stem}`)", "",
                  f"Command: `{d.get('command')}`; {m.get('cpu', '?')}, {m.get('threads', '?')} "
                  f"thread(s), torch "
                  f"{m.get('torch', '?')}, commit {str(m.get('commit', '?'))[:9]}"
                  f"{'+dirty' if m.get('dirty') else ''}, {str(m.get('date', '?'))[:10]}; "
                  f"{_num(d.get('cpu_s'))} CPU-s in all. Settings and every number: "
                  f"`bench/results/{f.name}`; the docs page `docs/apps-{d['app']}.md` compares "
                  "them with the published claim.", ""]
        head, body = _app_rows(d)
        lines += _table(head, body) + [""]
    return lines


def write_report(results_dir: Path, out: Path, parity_dir: Path | None = None) -> Path:
    from .results import all_results

    text = render(all_results(results_dir), parity_methods(parity_dir))
    extra = app_sections(results_dir)
    if extra:
        head, sep, tail = text.partition("\n## Speed and memory\n")
        text = head.rstrip() + "\n\n" + "\n".join(extra).rstrip() + "\n" + (sep + tail if sep else "")
    out.write_text(text)
    return out
