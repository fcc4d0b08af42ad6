"""One self-contained HTML file for one or more runs: every image inlined as a base64 PNG, the
style inline, nothing fetched from the network. A few lines of script only record, on load,
how many images decoded (``data-images-total`` / ``data-images-decoded`` on ``<body>``), which
the browser test reads."""
from __future__ import annotations

import datetime
import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .figures import data_uri
from .modality import draw_summary
from .plots import comparison, fmt_bytes, metric_name, points, protocol_label, run_curves
from .runs import RunData, load_run, unique_names

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#222;background:#fff;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 6px}.sub{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.panels{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:720px}
img{max-width:100%;height:auto}.placeholder{border:1px dashed #bbb;padding:16px;color:#666;
font-size:13px;max-width:520px}.cols{display:flex;flex-wrap:wrap;gap:24px}
nav a{margin-right:12px;font-size:13px}code{font-size:12px}
table.decoded td{max-width:420px}
"""

HOOK = """window.addEventListener("load",function(){var im=Array.prototype.slice.call(document.images);
document.body.setAttribute("data-images-total",String(im.length));
document.body.setAttribute("data-images-decoded",String(im.filter(function(i){
return i.complete&&i.naturalWidth>0;}).length));});"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes | None, caption: str) -> str:
    if png is None:
        return f'<div class="placeholder">{_e(caption)}</div>'
    return (f'<figure><img alt="{_e(caption)}" src="{data_uri(png)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _panel(p) -> str:
    """A drawing: its PNG, its table (an HTML table of the decoded examples) or a placeholder."""
    if p.table is not None:
        cols, rows = p.table
        head = "".join(f"<th>{_e(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
        return (f'<figure><table class="decoded"><tr>{head}</tr>{body}</table>'
                f"<figcaption>{_e(p.title)}</figcaption></figure>")
    return _img(p.png, p.title if p.png is not None else p.text)


def _kv_table(d: dict[str, Any] | None, empty: str = "none recorded") -> str:
    if not d:
        return f'<p class="sub">{_e(empty)}</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_short(v))}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str)
        return s if len(s) < 160 else s[:157] + "..."
    return str(v)


def _pm(r: dict[str, Any] | None, digits: int = 2) -> str:
    if not r or not isinstance(r.get("mean"), (int, float)):
        return "-"
    return f"{r['mean']:.{digits}f} ± {float(r.get('std') or 0):.{digits}f}"


def _eval_table(run: RunData) -> str:
    if not run.evaluations:
        return ('<p class="sub">not evaluated (run <code>datadistill evaluate RUN</code>; it '
                "saves its results in the run folder)</p>")
    head = ("<tr><th>file</th><th>protocol</th><th>model</th><th>"
            f"{_e(metric_name(run))}</th><th>% of full</th><th>run options</th></tr>")
    rows = []
    for ev in run.evaluations:
        ropt = ev.get("run") or {}
        ropt_s = ", ".join(f"{k}={ropt[k]}" for k in ("device", "precision", "threads", "fused")
                           if k in ropt)
        for m, r in ev["results"].items():
            pct = r.get("pct_of_full")
            rows.append(f"<tr><td>{_e(ev.get('_file', ''))}</td><td>{_e(protocol_label(ev))}</td>"
                        f"<td>{_e(m)}</td><td class=num>{_pm(r)}</td><td class=num>"
                        f"{'-' if pct is None else f'{pct:.1f}'}</td><td>{_e(ropt_s)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _robust_rows(run: RunData) -> list[str]:
    rows = []
    for ev in run.evaluations:
        rob = ev.get("robust")
        if not isinstance(rob, dict):
            continue
        full = (rob.get("full_reference") or {}).get("kind", "?")
        for m, s in (rob.get("models") or {}).items():
            rows.append(
                f"<tr><td>{_e(run.name)}</td><td>{_e(m)}</td><td>{_e(protocol_label(ev))}</td>"
                f"<td class=num>{_pm(ev['results'].get(m))}</td>"
                f"<td class=num>{_pm(s.get('hlr'))}</td><td class=num>{_pm(s.get('ior'))}</td>"
                f"<td class=num><b>{_pm(s.get('lrs'))}</b></td>"
                f"<td class=num>{_pm(s.get('aug_gap'))}</td><td class=num>{_pm(s.get('noaug_gap'))}</td>"
                f"<td class=num><b>{_pm(s.get('ars'))}</b></td>"
                f"<td class=num>{s.get('full_acc', float('nan')):.2f} ({_e(full)})</td></tr>")
    return rows


ROBUST_HEAD = ("<tr><th>run</th><th>model</th><th>protocol</th><th>accuracy %</th>"
               "<th>HLR (pp)</th><th>IOR (pp)</th><th>LRS %</th><th>gap w/ aug (pp)</th>"
               "<th>gap w/o aug (pp)</th><th>ARS %</th><th>full-data % (source)</th></tr>")
ROBUST_NOTE = ("DD-Ranking's scores (Li et al. 2025): HLR = full-data accuracy − the summary's "
               "accuracy under hard labels; IOR = the summary's accuracy − a random real subset's "
               "of the same size, both under the summary's own evaluation; LRS = 100·(e^α − e^−1)/"
               "(e − e^−1), α = w·IOR − (1−w)·HLR (accuracies as fractions, w = 0.5); ARS the "
               "same with β = γ·(gap with evaluation-time augmentation) + (1−γ)·(gap without). "
               "Mean ± std over paired rounds (one fresh model per round). See docs/report.md.")


def run_section(run: RunData, anchor: str, real: Any = None) -> str:
    syn = run.syn
    cpu, how = run.cpu_seconds()
    facts = [f"method <b>{_e(run.method)}</b>", f"dataset {_e(run.dataset)} ({_e(run.modality)})",
             f"{syn.num_examples} examples ({syn.ipc:g} per class)",
             f"stored {fmt_bytes(run.stored_bytes)} ({run.stored_bytes} B)",
             f"labels {_e(syn.label_format)}"]
    if run.meta.get("iterations") is not None:
        facts.append(f"{run.meta['iterations']} iterations")
    if run.meta.get("wall_time_s") is not None:
        facts.append(f"wall {float(run.meta['wall_time_s']):.1f} s")
    if cpu is not None:
        facts.append(f"CPU {cpu:.1f} s ({how})")
    if syn.lr is not None:
        facts.append(f"learned step size {float(syn.lr.detach()):.4g}")
    panels = "".join(_panel(p) for p in draw_summary(syn, real))
    curves = run_curves(run)
    rob = _robust_rows(run)
    out = [f'<h2 id="{anchor}">{_e(run.name)}</h2>',
           f'<p class="sub">{" · ".join(facts)}<br><code>{_e(run.path)}</code></p>',
           "<h3>Summary</h3>", f'<div class="panels">{panels}</div>',
           "<h3>Over iterations</h3>",
           _img(curves, "left: loss and the method's metrics from log.jsonl; right: evaluated "
                        "accuracy (points: saved evaluations, at the summary's iteration)")
           if curves is not None else '<p class="sub">no log.jsonl and no evaluation</p>',
           "<h3>Evaluations (protocol stated per row)</h3>", _eval_table(run)]
    if rob:
        out += ["<h3>Robust scores</h3>", f"<table>{ROBUST_HEAD}{''.join(rob)}</table>"]
    out += ['<div class="cols"><div><h3>Method parameters</h3>',
            _kv_table(run.meta.get("params")), "</div><div><h3>Run options (how fast)</h3>",
            _kv_table(run.meta.get("run")), "</div><div><h3>Command (run.json)</h3>",
            _kv_table({k: v for k, v in run.command.items() if v not in (None, [], False)}),
            "</div></div>"]
    return "\n".join(out)


def cross_section(runs: Sequence[RunData]) -> str:
    pts = points(runs)
    if not pts:
        return ('<h2 id="compare">Across runs</h2><p class="sub">no evaluations to compare '
                "(run <code>datadistill evaluate RUN</code> on each run)</p>")
    out = ['<h2 id="compare">Across runs</h2>',
           '<p class="sub">Each point is one architecture evaluated on one summary, labelled '
           "with its run and the protocol it was evaluated under; error bars: std over fresh "
           "models.</p>", '<div class="panels">']
    for key, label, log in (("ipc", "examples per class", False),
                            ("stored_bytes", "stored bytes", True),
                            ("cpu_s", "distillation CPU-seconds", True)):
        png = comparison(pts, key, label, log_x=log)
        cap = f"accuracy vs {label}"
        if key == "cpu_s":
            hows = sorted({p["cpu_how"] for p in pts if p["cpu_s"] is not None})
            cap += (f" (CPU time: {', '.join(hows) or 'none recorded'}; measured = process CPU "
                    f"time from log.jsonl, else wall time x threads)")
        out.append(_img(png, cap if png is not None else f"{cap}: nothing to plot"))
    out.append("</div>")
    models = sorted({p["model"] for p in pts})
    head = "<tr><th>run</th><th>protocol</th>" + "".join(f"<th>{_e(m)}</th>" for m in models) + "</tr>"
    rows = []
    for run in runs:  # one row per run and protocol (evaluation files of one protocol merged)
        merged: dict[str, dict[str, Any]] = {}
        for ev in run.evaluations:
            row = merged.setdefault(protocol_label(ev), {})
            for m, r in ev["results"].items():
                row.setdefault(m, r)
        for label, res in merged.items():
            cells = "".join(f"<td class=num>{_pm(res.get(m))}</td>" for m in models)
            rows.append(f"<tr><td>{_e(run.name)}</td><td>{_e(label)}</td>{cells}</tr>")
    out += ["<h3>Cross-architecture table (transferability)</h3>",
            f"<table>{head}{''.join(rows)}</table>"]
    rob = [r for run in runs for r in _robust_rows(run)]
    if rob:
        out += ["<h3>Robust scores (DD-Ranking)</h3>", f"<table>{ROBUST_HEAD}{''.join(rob)}</table>",
                f'<p class="sub">{_e(ROBUST_NOTE)}</p>']
    return "\n".join(out)


def build_report(runs: Sequence[RunData], *, title: str | None = None,
                 real_for: Callable[[RunData], Any] | None = None) -> str:
    """The HTML text for ``runs``; ``real_for(run)`` gives the real data a drawing compares
    with (or None)."""
    from .. import __version__

    title = title or ("datadistill report: " + ", ".join(r.name for r in runs))
    anchors = [f"run{i}" for i in range(len(runs))]
    nav = "".join(f'<a href="#{a}">{_e(r.name)}</a>' for a, r in zip(anchors, runs))
    nav += '<a href="#compare">across runs</a>'
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [run_section(r, a, real_for(r) if real_for else None) for r, a in zip(runs, anchors)]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{len(runs)} run(s) · datadistill {_e(__version__)} · {when}</p>',
        f"<nav>{nav}</nav>", cross_section(runs), *sections,
        f"<script>{HOOK}</script>", "</body></html>"])


def _real_loader(load_real: bool) -> Callable[[RunData], Any]:
    """Real data for the drawings that compare with it (graphs, recommender data), loaded once
    per dataset without downloading; None where it cannot be loaded."""
    cache: dict[tuple, Any] = {}

    def real_for(run: RunData) -> Any:
        if not load_real or run.modality == "image":
            return None
        source = run.meta.get("dataset_source") or run.command.get("dataset") or run.dataset
        key = (source, run.command.get("data_dir"))
        if key not in cache:
            from ..data import load_dataset
            try:
                cache[key] = load_dataset(source, data_dir=run.command.get("data_dir"),
                                          download=False)
            except Exception:  # noqa: BLE001 — a drawing without the real data is still useful
                cache[key] = None
        return cache[key]

    return real_for


def write_report(paths: Sequence[str | Path], out: str | Path, *, title: str | None = None,
                 load_real: bool = True) -> Path:
    """Read the run folders ``paths``, write the report to ``out``; returns ``out``."""
    paths = [Path(p) for p in paths]
    names = unique_names(paths)
    runs = [load_run(p, n) for p, n in zip(paths, names)]
    text = build_report(runs, title=title, real_for=_real_loader(load_real))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
