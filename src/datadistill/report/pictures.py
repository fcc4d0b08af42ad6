"""Pictures of summaries as PNG files: image grids (one row per class) and training curves
(``datadistill distill`` writes ``grid.png`` and ``loss.png`` with these)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..synsets.base import SyntheticSet


def to_display(x: torch.Tensor, info) -> np.ndarray:
    """Undo normalization for display ([N,C,H,W] -> uint8 [N,H,W,C]); ZCA-space images are
    min-max scaled per image instead (there is no faithful inverse for display)."""
    x = x.detach().float().cpu()
    if info.zca or not info.mean:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    else:
        m = torch.tensor(info.mean).view(1, -1, 1, 1)
        s = torch.tensor(info.std).view(1, -1, 1, 1)
        x = (x * s + m).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def grid_array(syn: SyntheticSet, *, scale: int = 1, max_per_class: int = 20,
               pad: int = 2) -> np.ndarray:
    """The materialized summary as one uint8 RGB array [H, W, 3]: one row per class (at most
    ``max_per_class`` examples each), white padding between examples."""
    if syn.info.modality != "image":
        raise ValueError(f"no image grid for {syn.info.modality} summaries")
    with torch.no_grad():
        x, _ = syn.materialize()
    ids = syn.class_ids.cpu()
    imgs = to_display(x, syn.info)
    k = syn.info.num_classes
    h, w = imgs.shape[1:3]
    cols = max(1, min(max_per_class, max(int((ids == c).sum()) for c in range(k))))
    H, W = h * scale + pad, w * scale + pad
    canvas = Image.new("RGB", (cols * W + pad, k * H + pad), (255, 255, 255))
    for c in range(k):
        for j, i in enumerate(torch.nonzero(ids == c).flatten()[:cols].tolist()):
            a = imgs[i]
            im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")
            canvas.paste(im.resize((w * scale, h * scale), Image.NEAREST), (pad + j * W, pad + c * H))
    return np.asarray(canvas)


def image_grid(syn: SyntheticSet, path: str | Path, *, scale: int | None = None,
               max_per_class: int = 20, pad: int = 2) -> Path:
    """Save a PNG grid of the materialized summary: one row per class."""
    if syn.info.modality != "image":
        raise ValueError(f"no image grid for {syn.info.modality} summaries")
    h, w = syn.info.shape[1:3]
    scale = scale or max(1, 48 // max(h, w))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_array(syn, scale=scale, max_per_class=max_per_class, pad=pad)).save(path)
    return path


def curve_png(series: dict[str, list[tuple[float, float]]], path: str | Path, *,
              xlabel: str = "iteration", ylabel: str = "loss", size=(640, 400),
              log_y: bool = False) -> Path:
    """A line plot (matplotlib): one line per named series of (x, y) points; ``size`` in pixels."""
    from .figures import figure, to_png

    if not any(series.values()):
        raise ValueError("nothing to plot")
    with figure(size[0] / 100, size[1] / 100) as (fig, ax):
        for name, s in series.items():
            if s:
                xs, ys = zip(*s)
                ax.plot(xs, ys, label=name, marker="o" if len(s) == 1 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log_y and all(y > 0 for s in series.values() for _, y in s):
            ax.set_yscale("log")
        ax.legend()
        png = to_png(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
