"""Pure matching losses shared by the distillers (no state, no models, no randomness)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GRADIENT_METRICS = ("ours", "mse", "nmse", "cos", "l1")


def class_means(emb: Tensor, class_ids: Tensor, num_classes: int) -> Tensor:
    """Per-class mean of ``emb`` [N, D] grouped by ``class_ids`` [N] -> [K, D]."""
    sums = torch.zeros(num_classes, emb.shape[1], dtype=emb.dtype, device=emb.device)
    sums.index_add_(0, class_ids, emb)
    counts = torch.bincount(class_ids, minlength=num_classes).clamp_min(1).to(emb.dtype)
    return sums / counts[:, None]


def mean_embedding_distance(mean_real: Tensor, mean_syn: Tensor) -> Tensor:
    """DM's objective: sum over classes of || mean phi(T_c) - mean phi(S_c) ||^2 (rows = classes)."""
    return ((mean_real.float() - mean_syn.float()) ** 2).sum()


def _layer_distance_ours(gr: Tensor, gs: Tensor) -> Tensor:
    """DC's layer-wise distance: sum over output channels of 1 - cos; biases/norms skipped."""
    if gr.dim() == 1:  # bias and normalization parameters: ignored, as published
        return gr.new_zeros(())
    gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
    cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
    return (1 - cos).sum()


def gradient_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor], metric: str = "ours") -> Tensor:
    """Distance between two lists of per-parameter gradients (DC eq. 7 and its variants).

    ``ours`` = the published layer-wise cosine distance; ``mse`` = squared Euclidean over all
    parameters; ``nmse`` = that squared error relative to the real gradient's squared norm,
    sum (g_s - g_r)^2 / sum g_r^2 over all parameters (what DosCond's ``--dis mse`` computes);
    ``cos`` = 1 - cosine of the concatenated gradient vectors; ``l1`` = sum of absolute
    differences over all parameters (IDC's MNIST-like metric).
    """
    if metric == "ours":
        return sum((_layer_distance_ours(r, s) for r, s in zip(g_real, g_syn)),
                   g_syn[0].new_zeros(()))
    if metric in ("mse", "nmse", "cos", "l1"):
        r = torch.cat([t.reshape(-1) for t in g_real])
        s = torch.cat([t.reshape(-1) for t in g_syn])
        if metric == "mse":
            return ((r - s) ** 2).sum()
        if metric == "nmse":
            return ((r - s) ** 2).sum() / (r ** 2).sum()
        if metric == "l1":
            return (r - s).abs().sum()
        return 1 - (r * s).sum() / (r.norm() * s.norm() + 1e-6)
    raise ValueError(f"unknown gradient metric {metric!r}; known: {', '.join(GRADIENT_METRICS)}")


def parameter_distance(theta: Tensor, target: Tensor, start: Tensor) -> Tensor:
    """MTT eq. (10): || theta - theta*_{t+M} ||^2 / || theta*_t - theta*_{t+M} ||^2 (flat vectors),
    the student's distance to the expert normalised by the expert's own displacement."""
    return ((theta.float() - target) ** 2).sum() / ((start - target) ** 2).sum().clamp_min(1e-12)
