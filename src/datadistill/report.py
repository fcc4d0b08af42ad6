"""Pictures of summaries: image grids (one row per class) and training curves, as PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .synsets.base import SyntheticSet


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


def image_grid(syn: SyntheticSet, path: str | Path, *, scale: int | None = None,
               max_per_class: int = 20, pad: int = 2) -> Path:
    """Save a PNG grid of the materialized summary: one row per class."""
    if syn.info.modality != "image":
        raise ValueError(f"no image grid for {syn.info.modality} summaries")
    with torch.no_grad():
        x, _ = syn.materialize()
    ids = syn.class_ids.cpu()
    imgs = to_display(x, syn.info)
    k = syn.info.num_classes
    h, w = imgs.shape[1:3]
    scale = scale or max(1, 48 // max(h, w))
    cols = min(max_per_class, max(int((ids == c).sum()) for c in range(k)))
    H, W = h * scale + pad, w * scale + pad
    canvas = Image.new("RGB", (cols * W + pad, k * H + pad), (255, 255, 255))
    for c in range(k):
        for j, i in enumerate(torch.nonzero(ids == c).flatten()[:cols].tolist()):
            a = imgs[i]
            im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).convert("RGB")
            canvas.paste(im.resize((w * scale, h * scale), Image.NEAREST), (pad + j * W, pad + c * H))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def curve_png(series: dict[str, list[tuple[float, float]]], path: str | Path, *,
              xlabel: str = "iteration", ylabel: str = "loss", size=(640, 400), log_y: bool = False) -> Path:
    """A minimal line plot (no matplotlib dependency): one polyline per named series."""
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    W, H = size
    L, R, T, B = 60, 20, 20, 40
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError("nothing to plot")
    tf = (lambda v: float(np.log10(max(v, 1e-12)))) if log_y else float
    xs = [p[0] for p in pts]
    ys = [tf(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.rectangle([L, T, W - R, H - B], outline="black")
    def px(x, y):
        return (L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (tf(y) - y0) / (y1 - y0) * (H - T - B))
    for i, (name, s) in enumerate(series.items()):
        col = colors[i % len(colors)]
        if len(s) > 1:
            d.line([px(x, y) for x, y in s], fill=col, width=2)
        d.text((L + 8, T + 6 + 14 * i), name, fill=col)
    d.text((L, H - B + 6), f"{x0:g}", fill="black")
    d.text((W - R - 40, H - B + 6), f"{x1:g}", fill="black")
    d.text((W // 2 - 20, H - 18), xlabel, fill="black")
    d.text((4, T), (f"1e{y1:.1f}" if log_y else f"{y1:.3g}"), fill="black")
    d.text((4, H - B - 10), (f"1e{y0:.1f}" if log_y else f"{y0:.3g}"), fill="black")
    d.text((4, H // 2), ylabel, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
