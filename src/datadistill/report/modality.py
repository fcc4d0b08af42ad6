"""How a summary is drawn in the report, one entry per modality (``DRAWERS``).

A drawer takes the summary and, when the report could load it, the real data (``None`` when
it could not: the drawing then shows the summary alone and says so) and returns ``Panel``s:
a titled PNG, a table (``table = (columns, rows)`` of strings, rendered as an HTML table), or a
text placeholder. Adding a modality is one registration::

    @DRAWERS.register("audio")
    def draw_audio(syn, real):
        return [Panel("spectrograms", png=...)]

Images are drawn as a grid per class, graphs as the condensed graph and its degree histogram,
recommender data as the fake users' item-popularity profile; text summaries as a table of
their decoded nearest tokens and nearest real sentences (the decoding ``datadistill show``
prints, ``synsets.text``; it needs the real data's encoder), tabular summaries as a table of
their decoded rows in the original columns and types (``synsets.tabular.decode_rows``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from ..registry import Registry
from ..synsets.base import SyntheticSet
from .figures import color, figure, to_png
from .pictures import grid_array

#: modality -> drawer(syn, real_or_None) -> list[Panel]
DRAWERS: Registry = Registry("summary drawing")


@dataclasses.dataclass
class Panel:
    """One drawing of a summary: a PNG (``png``), a table (``table``) or, for a placeholder,
    only ``text``."""

    title: str
    png: bytes | None = None
    text: str = ""
    #: (column names, rows of cell strings): drawn as an HTML table under ``title``
    table: tuple[list[str], list[list[str]]] | None = None


def draw_summary(syn: SyntheticSet, real: Any = None) -> list[Panel]:
    """The panels for ``syn``'s modality; an unknown modality gets a placeholder panel."""
    modality = syn.info.modality
    if modality not in DRAWERS:
        return [Panel("summary", text=f"No drawing for {modality!r} summaries yet (register "
                                       f"one in datadistill.report.modality.DRAWERS).")]
    return DRAWERS.get(modality)(syn, real)


# -- images ---------------------------------------------------------------------------------------
@DRAWERS.register("image")
def draw_images(syn: SyntheticSet, real: Any = None, *, max_per_class: int = 10) -> list[Panel]:
    """The summary's images, one row per class (at most ``max_per_class`` each), class names
    on the left."""
    info = syn.info
    h, w = info.shape[1:3]
    scale = max(1, 32 // max(h, w))
    pad = 2
    grid = grid_array(syn, scale=scale, max_per_class=max_per_class, pad=pad)
    k = info.num_classes
    names = list(info.class_names) if len(info.class_names) == k else [str(c) for c in range(k)]
    rows_px, cols_px = grid.shape[:2]
    with figure(min(9.0, 1.2 + cols_px / 40), min(12.0, 0.3 + rows_px / 40)) as (fig, ax):
        ax.imshow(grid, interpolation="nearest")
        ax.set_yticks([pad + (h * scale + pad) * (c + 0.5) for c in range(k)], names)
        ax.set_xticks([])
        ax.grid(False)
        for s in ax.spines.values():
            s.set_visible(False)
        png = to_png(fig)
    per = syn.num_examples / k
    return [Panel(f"{syn.num_examples} images ({per:g} per class; at most {max_per_class} shown "
                  f"per class)", png)]


# -- graphs ---------------------------------------------------------------------------------------
def _edges(syn) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        ei, w = syn.edges()
    return ei.detach().cpu().numpy(), w.detach().float().cpu().numpy()


def _layout(n: int, ei: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """2-D node positions: the Laplacian's two smallest non-trivial eigenvectors (spectral
    layout) when the graph has edges, nodes grouped by class on a circle otherwise; a little
    deterministic jitter separates coincident nodes."""
    order = np.argsort(labels, kind="stable")
    ang = np.empty(n)
    ang[order] = 2 * math.pi * np.arange(n) / max(n, 1)
    circle = np.stack([np.cos(ang), np.sin(ang)], 1)
    if ei.shape[1] == 0 or n < 4:
        return circle
    a = np.zeros((n, n))
    a[ei[0], ei[1]] = 1.0
    a = np.maximum(a, a.T)
    lap = np.diag(a.sum(1)) - a
    vals, vecs = np.linalg.eigh(lap + 1e-9 * np.eye(n))
    pos = vecs[:, 1:3]
    pos = pos / (np.abs(pos).max(0, keepdims=True) + 1e-12)
    return 0.8 * pos + 0.2 * circle


@DRAWERS.register("graph")
def draw_graph(syn: SyntheticSet, real: Any = None, *, max_nodes: int = 400) -> list[Panel]:
    """The condensed graph (nodes coloured by class, edges as stored) and its degree histogram
    (beside the real graph's, when the real data is at hand). A set of small graphs (graph
    classification) is drawn one graph per class."""
    ei, w = _edges(syn)
    labels = syn.class_ids.detach().cpu().numpy()
    panels = []
    if syn.kind in ("graphs", "compact-graphs"):  # one small graph per class
        m = int(syn.nodes)
        sizes = syn.sizes.detach().cpu().numpy()
        k = syn.info.num_classes
        cols = min(k, 5)
        rows = math.ceil(k / cols)
        with figure(2.0 * cols, 2.0 * rows) as (fig, _):
            fig.clf()
            for c in range(k):
                g = int(syn.class_slice(c).start)
                keep = (ei[0] // m == g) & (ei[1] // m == g)
                sub = ei[:, keep] % m
                n = int(sizes[g])
                ax = fig.add_subplot(rows, cols, c + 1)
                pos = _layout(n, sub, np.zeros(n, dtype=int))
                for s, t in sub.T:
                    if s < t:
                        ax.plot(pos[[s, t], 0], pos[[s, t], 1], color="0.6", lw=0.6)
                ax.scatter(pos[:, 0], pos[:, 1], s=12, color=color(c), zorder=3)
                ax.set_title(f"class {c}", fontsize=8)
                ax.axis("off")
            png = to_png(fig)
        panels.append(Panel(f"first synthetic graph of each class ({len(labels)} graphs, "
                            f"up to {m} nodes)", png))
        deg = np.bincount(ei[0], minlength=len(labels) * m)
        mask = (np.arange(m)[None] < sizes[:, None]).flatten()
        deg = deg[mask]
    else:
        n = len(labels)
        shown = np.arange(n) if n <= max_nodes else np.sort(
            np.random.default_rng(0).choice(n, max_nodes, replace=False))
        keep = np.isin(ei[0], shown) & np.isin(ei[1], shown) & (ei[0] < ei[1])
        remap = -np.ones(n, dtype=int)
        remap[shown] = np.arange(len(shown))
        sub = remap[ei[:, keep]]
        pos = _layout(len(shown), sub, labels[shown])
        with figure(4.6, 4.2) as (fig, ax):
            if sub.shape[1]:
                from matplotlib.collections import LineCollection
                wk = w[keep]
                lw = 0.3 + 1.2 * (wk / (wk.max() + 1e-12))
                ax.add_collection(LineCollection(pos[sub.T], colors="0.55", linewidths=lw,
                                                 alpha=0.6, zorder=1))
            for c in range(syn.info.num_classes):
                sel = labels[shown] == c
                if sel.any():
                    ax.scatter(pos[sel, 0], pos[sel, 1], s=18, color=color(c), label=str(c),
                               zorder=2, edgecolors="white", linewidths=0.3)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5))
            png = to_png(fig)
        und = int(((ei[0] < ei[1])).sum())
        panels.append(Panel(f"condensed graph: {n} nodes, {und} undirected edges"
                            + (f" ({max_nodes} nodes shown)" if n > max_nodes else ""), png))
        deg = np.bincount(ei[0], minlength=n)
    real_deg = None
    if real is not None and hasattr(real, "edge_index"):
        rei = real.edge_index.detach().cpu().numpy()
        real_deg = np.bincount(rei[0], minlength=int(real.num_nodes))
    with figure(4.2, 2.8) as (fig, ax):
        hi = int(max(deg.max(initial=0), np.percentile(real_deg, 99) if real_deg is not None else 0))
        bins = np.arange(0, hi + 2) - 0.5
        ax.hist(deg, bins=bins, density=True, alpha=0.7, label="condensed", color=color(0))
        if real_deg is not None:
            ax.hist(real_deg, bins=bins, density=True, alpha=0.5, label="real", color=color(1))
        ax.set_xlabel("degree")
        ax.set_ylabel("fraction of nodes")
        ax.legend()
        png = to_png(fig)
    panels.append(Panel("degree histogram" + ("" if real_deg is not None else
                                              " (real graph not loaded)"), png))
    return panels


# -- recommender data ---------------------------------------------------------------------------
@DRAWERS.register("recsys")
def draw_users(syn: SyntheticSet, real: Any = None) -> list[Panel]:
    """The fake users' item-popularity profile against the real users': items ranked by their
    real popularity (when the real data is at hand, else by the summary's own), the share of
    each group's interactions that falls on each item (log scale), and how many items a user
    interacts with."""
    with torch.no_grad():
        rows = syn.materialize()[0].detach().float().cpu().numpy()
    fake_pop = rows.sum(0)
    real_pop = real_len = None
    if real is not None and hasattr(real, "train"):
        import scipy.sparse as sp
        tr = real.train if sp.issparse(real.train) else None
        if tr is not None:
            real_pop = np.asarray(tr.sum(0)).ravel().astype(float)
            real_len = np.asarray((tr != 0).sum(1)).ravel()
    order = np.argsort(-(real_pop if real_pop is not None else fake_pop), kind="stable")
    rank = np.arange(1, len(order) + 1)
    with figure(8.4, 3.0, ncols=2) as (fig, (ax, ax2)):
        share = fake_pop[order] / max(fake_pop.sum(), 1e-12)
        ax.plot(rank, np.maximum(share, 1e-9), label=f"fake users ({rows.shape[0]})", color=color(0))
        if real_pop is not None:
            rs = real_pop[order] / max(real_pop.sum(), 1e-12)
            ax.plot(rank, np.maximum(rs, 1e-9), label=f"real users ({len(real_len)})",
                    color=color(1))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("item rank by " + ("real" if real_pop is not None else "summary")
                      + " popularity")
        ax.set_ylabel("share of interactions")
        ax.legend()
        fake_len = (rows > 0.5).sum(1) if rows.max(initial=0) > 0 else np.zeros(len(rows))
        bins = np.linspace(0, max(fake_len.max(initial=1),
                                  np.percentile(real_len, 99) if real_len is not None else 1), 30)
        ax2.hist(fake_len, bins=bins, density=True, alpha=0.7, color=color(0), label="fake")
        if real_len is not None:
            ax2.hist(real_len, bins=bins, density=True, alpha=0.5, color=color(1), label="real")
        ax2.set_xlabel("items per user (entries > 0.5)")
        ax2.set_ylabel("fraction of users")
        ax2.legend()
        png = to_png(fig)
    return [Panel("item-popularity profile of the fake users vs the real users"
                  + ("" if real_pop is not None else " (real data not loaded)"), png)]


# -- text ---------------------------------------------------------------------------------------
def _per_class(ids: torch.Tensor, num_classes: int, per_class: int) -> list[tuple[int, int, int]]:
    """(class, rank within the class, example index) of the first ``per_class`` of each class."""
    out = []
    for c in range(num_classes):
        sel = torch.nonzero(ids == c).flatten().tolist()[:per_class]
        out += [(c, n, i) for n, i in enumerate(sel)]
    return out


def _class_names(info) -> list[str]:
    k = info.num_classes
    return list(info.class_names) if len(info.class_names) == k else [str(c) for c in range(k)]


def _label_cell(y: torch.Tensor, i: int, c: int, names: list[str]) -> str:
    if y.dim() != 2:
        return names[c]
    p = torch.softmax(y[i].detach().float(), 0)  # soft labels: the learned distribution
    return ", ".join(f"{names[j]} {float(p[j]):.2f}" for j in p.argsort(descending=True)[:3].tolist())


@DRAWERS.register("text")
def draw_text(syn: SyntheticSet, real: Any = None, *, per_class: int = 3, k: int = 1) -> list[Panel]:
    """Up to ``per_class`` synthetic examples of every class decoded as ``datadistill show``
    decodes them: the nearest vocabulary token at every position (embedding-sequence summaries)
    and the ``k`` nearest real training sentences (cosine in the encoder's space). Decoding
    needs the real data's encoder: without it (or with another encoder) a placeholder says so."""
    from ..errors import DataFormatError
    from ..evaluation.text import check_text_match
    from ..synsets.text import nearest_sentences, nearest_tokens

    what = f"{syn.num_examples} examples in the encoder's embedding space"
    if real is None or not hasattr(real, "texts"):
        return [Panel("summary (text)", text=f"{what}; the real dataset (its encoder) was not "
                      "loaded, so they cannot be decoded to tokens and sentences here "
                      "(`datadistill show RUN` decodes them where the dataset is at hand).")]
    try:
        check_text_match(syn, real)
    except DataFormatError as e:
        return [Panel("summary (text)", text=f"{what}; not decoded: {e}")]
    with torch.no_grad():
        x, y = syn.materialize()
    names = _class_names(syn.info)
    table = getattr(real, "table", None)
    toks = nearest_tokens(x, table, real.vocab.tokens) if table is not None else None
    picked = _per_class(syn.class_ids, syn.info.num_classes, per_class)
    near = nearest_sentences(x[[i for _, _, i in picked]], real, k) if picked else []
    cols = ["class", "#", "label"] + (["nearest tokens"] if toks is not None else []) + \
        [f"nearest real sentence{'s' if k > 1 else ''} (cosine)"]
    rows = []
    for (c, n, i), sents in zip(picked, near):
        row = [names[c], str(n + 1), _label_cell(y, i, c, names)]
        if toks is not None:
            row.append(" ".join(toks[i]) or "(all <pad>)")
        row.append(" / ".join(f"{s} ({sim:.2f})" for s, sim in sents))
        rows.append(row)
    shown = f"first {per_class} per class" if syn.num_examples > len(rows) else "all"
    return [Panel(f"{what}, decoded ({shown}): "
                  + ("nearest vocabulary token per position and " if toks is not None else "")
                  + "nearest real training sentence", table=(cols, rows))]


# -- tables ---------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@DRAWERS.register("tabular")
def draw_tabular(syn: SyntheticSet, real: Any = None, *, per_class: int = 5) -> list[Panel]:
    """Up to ``per_class`` rows of every class decoded to valid records in the original column
    names and types, with the label column (``synsets.tabular.decode_rows``, as ``datadistill
    show --csv`` writes them); an empty cell is a missing value."""
    from ..synsets.tabular import decode_rows

    records = decode_rows(syn)
    if not records:
        return [Panel("summary (tabular)", text="the summary has no rows")]
    picked = _per_class(syn.class_ids, syn.info.num_classes, per_class)
    cols = list(records[0])
    rows = [[_cell(records[i].get(col)) for col in cols] for _, _, i in picked]
    shown = f"first {per_class} per class" if syn.num_examples > len(rows) else "all"
    return [Panel(f"{syn.num_examples} rows ({syn.ipc:g} per class), decoded to the original "
                  f"columns ({shown})", table=(cols, rows))]
