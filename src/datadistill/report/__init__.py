"""Looking at results: pictures of summaries, curves, and the HTML report.

- ``image_grid`` / ``curve_png`` (``pictures.py``): PNG files of a summary and of a curve;
- ``write_report(runs, out)`` (``html.py``): one self-contained HTML file for run folders, with
  each summary drawn for its modality (``modality.DRAWERS``: images, graphs, recommender users,
  decoded text and tabular examples as tables), curves from ``log.jsonl``, parameters, run options, protocols,
  comparisons across runs and DD-Ranking's robust scores where evaluated;
- ``MetricsLog`` / ``TensorBoardLog`` (``progress.py``): distillation callbacks that log metrics.

matplotlib draws every plot (headless, Agg); it is imported when a plot is first drawn.
"""
from __future__ import annotations

from .pictures import curve_png, grid_array, image_grid, to_display  # noqa: F401
from .progress import MetricsLog, TensorBoardLog  # noqa: F401


def write_report(*args, **kw):
    """See ``datadistill.report.html.write_report``."""
    from .html import write_report as _write
    return _write(*args, **kw)


def __getattr__(name):  # DRAWERS, Panel, build_report, load_run without importing matplotlib early
    if name in ("DRAWERS", "Panel", "draw_summary"):
        from . import modality
        return getattr(modality, name)
    if name == "build_report":
        from .html import build_report
        return build_report
    if name in ("load_run", "RunData"):
        from . import runs
        return getattr(runs, name)
    raise AttributeError(name)
