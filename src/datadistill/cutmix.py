"""CutMix (Yun et al., ICCV'19) as IDC's authors train with it (Kim et al., ICML'22).

Per mini-batch, with probability ``p``: draw ``lam ~ Beta(beta, beta)``, a permutation ``perm``
of the batch and a box centre ``(cx, cy)`` (uniform over the rows and columns); paste the box of
the permuted batch into the batch and train on

    loss = lam' * l(f(x_mix), y) + (1 - lam') * l(f(x_mix), y[perm]),

with ``lam'`` corrected to the box's area. The box rule (reference ``misc/utils.py``
``rand_bbox``, used by ``train.py`` ``train_epoch``), for an ``h x w`` image (rows x columns):

    r = sqrt(1 - lam);  bh = int(h * r);  bw = int(w * r)
    rows [clip(cx - bh // 2, 0, h), clip(cx + bh // 2, 0, h)),
    cols [clip(cy - bw // 2, 0, w), clip(cy + bw // 2, 0, w))
    lam' = 1 - (box rows * box cols) / (h * w)

(the box side is ``2 * (bh // 2)``, one short of ``bh`` when ``bh`` is odd, and the box is
clipped at the borders: ``lam'`` is what the pasted area makes it, not ``lam``). Every draw
comes from the ``torch.Generator`` passed in, in this order: the coin ``u ~ U[0, 1)`` (applied
when ``u < p``), then, only when applied, ``lam``, ``perm``, ``cx``, ``cy``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError

Box = tuple[int, int, int, int]  # (row0, col0, row1, col1): rows row0:row1, columns col0:col1


def cutmix_box(h: int, w: int, lam: float, cx: int, cy: int) -> Box:
    """The reference's ``rand_bbox`` for an ``h x w`` image, centre row ``cx``, column ``cy``."""
    r = math.sqrt(1.0 - lam)
    bh, bw = int(h * r), int(w * r)
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return (clip(cx - bh // 2, h), clip(cy - bw // 2, w),
            clip(cx + bh // 2, h), clip(cy + bw // 2, w))


def box_lambda(h: int, w: int, box: Box) -> float:
    """The weight of the batch's own labels: 1 - (pasted area) / (image area)."""
    r0, c0, r1, c1 = box
    return 1 - ((r1 - r0) * (c1 - c0) / (w * h))


def sample_gamma(shape: float, generator: torch.Generator) -> float:
    """One Gamma(shape, 1) draw from ``generator`` (Marsaglia & Tsang, 2000; shape < 1 by
    Gamma(shape + 1) * U^(1/shape))."""
    rand = lambda: float(torch.rand((), generator=generator, dtype=torch.float64))  # noqa: E731
    if shape < 1:
        return sample_gamma(shape + 1.0, generator) * rand() ** (1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=generator, dtype=torch.float64))
        v = (1.0 + c * z) ** 3
        if v <= 0:
            continue
        u = rand()
        if u > 0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v


def sample_beta(a: float, b: float, generator: torch.Generator) -> float:
    """One Beta(a, b) draw from ``generator``: G_a / (G_a + G_b) with G ~ Gamma(., 1)."""
    ga = sample_gamma(a, generator)
    gb = sample_gamma(b, generator)
    return ga / (ga + gb)


@dataclass(frozen=True)
class CutMixDraw:
    """One applied CutMix: the Beta draw, the permutation, the box and the corrected weight."""
    lam: float
    perm: Tensor
    box: Box
    ratio: float  # lam' = box_lambda(...): the weight of the batch's own labels

    def mix(self, x: Tensor) -> Tensor:
        """``x`` with the box of ``x[perm]`` pasted in (a new tensor; ``x`` is not changed)."""
        r0, c0, r1, c1 = self.box
        out = x.clone()
        out[:, :, r0:r1, c0:c1] = x[self.perm.to(x.device), :, r0:r1, c0:c1]
        return out

    def loss(self, out: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``loss_fn(out, y) * lam' + loss_fn(out, y[perm]) * (1 - lam')`` (the reference's
        order of terms)."""
        yb = y[self.perm.to(y.device)]
        return loss_fn(out, y) * self.ratio + loss_fn(out, yb) * (1.0 - self.ratio)


@dataclass(frozen=True)
class CutMix:
    """CutMix with probability ``p`` per mini-batch and ``lam ~ Beta(beta, beta)``."""
    p: float = 0.5
    beta: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"CutMix probability must be in [0, 1], got {self.p}")
        if not self.beta > 0:
            raise ConfigError(f"CutMix beta must be > 0, got {self.beta}")

    def sample(self, n: int, size: tuple[int, int],
               generator: torch.Generator) -> CutMixDraw | None:
        """The draws for a batch of ``n`` images of ``size`` (h, w); None when the coin says no."""
        if not float(torch.rand((), generator=generator, dtype=torch.float64)) < self.p:
            return None
        h, w = int(size[0]), int(size[1])
        lam = sample_beta(self.beta, self.beta, generator)
        perm = torch.randperm(n, generator=generator)
        cx = int(torch.randint(h, (), generator=generator))
        cy = int(torch.randint(w, (), generator=generator))
        box = cutmix_box(h, w, lam, cx, cy)
        return CutMixDraw(lam, perm, box, box_lambda(h, w, box))
