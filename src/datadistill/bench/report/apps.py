"""Sections for the applications' own results files (``bench/results/apps-*.json``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .cells import _num, _table


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
