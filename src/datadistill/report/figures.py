"""Matplotlib, headless: every plot of the report is a PNG drawn here (the Agg backend, no
display, no network), returned as bytes so the HTML can inline it as base64."""
from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg", force=False)  # headless; a user's interactive backend is left alone once set

import matplotlib.pyplot as plt  # noqa: E402

#: one style for every figure: small, legible, the same palette across plots
STYLE = {"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8,
         "legend.frameon": False, "savefig.bbox": "tight"}
PALETTE = plt.get_cmap("tab10").colors
MARKERS = "osD^vP*Xh<>"


@contextmanager
def figure(width: float = 5.0, height: float = 3.2, ncols: int = 1) -> Iterator[tuple]:
    """A figure and its axes under the report's style; closed afterwards (no global state kept)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height))
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def to_png(fig) -> bytes:
    """The figure as PNG bytes (no metadata that varies between runs)."""
    buf = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def color(i: int):
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]
