"""``BENCHMARKS.md``, generated from the results files and nothing else.

It opens with one summary table (method × dataset × budget → accuracy, protocol, iterations
run / published, distillation CPU-seconds with threads, published figure, stored bytes,
parity, status), then the rows compared at a fixed number of stored bytes (rows that declare
``byte_budget``), then DD-Ranking's robust scores of the rows that computed them (``robust =
true``), then the accuracy-vs-CPU-time curves (rows with ``curve``), then one section per accuracy suite
with every row and its environment (and the suite's figure, ``bench/results/<suite>.png``, when
its TOML declares ``figure``: ``figure.py``), then the speed / memory suites. The status word
follows a fixed rule (``status``).
"""
# The parts: cells.py (how each cell is written), rules.py (status and parity words), stops.py
# (runs their method stopped), summary.py (the tables across suites), sections.py (one section
# per suite), figure.py (a suite's figure), apps.py (the applications' results files); this
# module puts them in order.
from __future__ import annotations

from pathlib import Path
from typing import Any

from .apps import APP_TITLES, app_sections
from .cells import stored_bytes
from .curves import CURVES_RULE, curves_table
from .rules import PARITY_RULE, STATUS_RULE, has_parity, parity_methods, parity_word, status
from .sections import suite_section
from .summary import (BYTES_RULE, IMAGE_DATASETS, ROBUST_RULE, fixed_bytes_table, robust_table,
                      summary_table)

__all__ = ["APP_TITLES", "BYTES_RULE", "CURVES_RULE", "curves_table", "HEADER", "IMAGE_DATASETS", "PARITY_RULE", "ROBUST_RULE",
           "STATUS_RULE", "app_sections", "fixed_bytes_table", "has_parity", "parity_methods",
           "parity_word", "render", "robust_table", "status", "stored_bytes", "suite_section",
           "suite_figures", "summary_table", "write_report"]

HEADER = ("<!-- GENERATED FILE: do not edit by hand. `python -m datadistill.bench report` writes "
          "it from bench/results/*.json; change a suite (bench/suites/*.toml) or rerun it. -->")


def render(data: list[dict[str, Any]], parity: dict[str, str | None],
           figures: dict[str, list[str]] | None = None) -> str:
    """The report's text; ``figures``: suite name -> the markdown lines showing its figure."""
    figures = figures or {}
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
    if any(r.get("curve") for s in data for r in s["rows"].values()):
        lines += ["## Accuracy against distillation CPU time (curves)", "", CURVES_RULE, ""] \
            + curves_table(data) + [""]
    speed_only = lambda s: all(r.get("kind") == "speed" for r in s["rows"].values())  # noqa: E731
    for s in data:
        if not speed_only(s):
            lines += suite_section(s, figure=figures.get(s["suite"]))
    if any(speed_only(s) for s in data):
        lines += ["## Speed and memory", ""]
        for s in data:
            if speed_only(s):
                lines += suite_section(s, "###", figure=figures.get(s["suite"]))
    return "\n".join(lines).rstrip() + "\n"


def suite_figures(data: list[dict[str, Any]], suites_dir: Path, results_dir: Path,
                  out: Path) -> dict[str, list[str]]:
    """Draw ``<results_dir>/<suite>.png`` for every results file whose suite file
    (``suites_dir/<suite>.toml``) declares a ``figure``; suite name -> the lines showing it in
    ``out``. A bad ``figure`` table is a ``SuiteError`` naming it."""
    from ..suites import suite_figure

    shown = {}
    by_name = {s["suite"]: s for s in data}
    for s in data:
        toml = suites_dir / f"{s['suite']}.toml"
        spec = suite_figure(toml) if toml.exists() else None
        if spec is None:
            continue
        from .figure import figure_lines, with_also, write_figure  # (matplotlib: only for a figure)

        s = with_also(s, spec, by_name)

        png = write_figure(s, spec, results_dir / f"{s['suite']}.png")
        if png is not None:
            shown[s["suite"]] = figure_lines(s, spec, png, out)
    return shown


def write_report(results_dir: Path, out: Path, parity_dir: Path | None = None,
                 suites_dir: Path | None = None) -> Path:
    """``out`` from every results file in ``results_dir``; the figures the suites in
    ``suites_dir`` (default: ``results_dir``'s sibling ``suites``) declare are drawn beside
    their results files."""
    from ..results import all_results

    data = all_results(results_dir)
    suites_dir = suites_dir if suites_dir is not None else results_dir.parent / "suites"
    text = render(data, parity_methods(parity_dir), suite_figures(data, suites_dir, results_dir, out))
    extra = app_sections(results_dir)
    if extra:
        head, sep, tail = text.partition("\n## Speed and memory\n")
        text = head.rstrip() + "\n\n" + "\n".join(extra).rstrip() + "\n" + (sep + tail if sep else "")
    out.write_text(text)
    return out
