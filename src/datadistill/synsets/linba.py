"""LinBa's addressable memories (Deng & Russakovsky, NeurIPS'22): shared bases in input space,
combined by learned linear addresses.

The summary stores ``n_bases`` bases ``B`` (images of ``C x H/d x W/d``, ``d`` = ``downsample``;
the reference's ``basis`` embedding) shared by every class, and ``addresses`` coefficient vectors
``a`` of length ``n_bases`` per class (the reference's ``imgs`` embedding: the label-conditioned
addressing, each class owning its own rows). A stored address decodes to one example::

    x = up_d( a @ B ),   y = its class (hard) or a learned soft label (``label_format="soft"``)

with ``up_d`` the bilinear upsampling (align_corners False) back to ``C x H x W`` (identity for
``d = 1``). In ``FactorizedSet`` terms the codes are the coefficient vectors and the one decoder
is the bases matrix.

Fixed budget (the paper's equal-storage comparison, the reference's ``--fixed_budget 1``,
``utils/Img_per_Cls_budget.py``): ``ipc`` is the budget in images per class, i.e. ``ipc K C H W``
stored numbers; the bases take ``n_bases C h w`` of them and the rest buys coefficient vectors::

    addresses = floor((ipc K C H W - n_bases C h w) / (K n_bases))

per class (Fashion-MNIST, 16 bases at 14x14: 29 per class at IPC 1, 470 at IPC 10). Pass
``addresses`` to set it directly (``ipc`` is then only recorded). Labels and a learned step size
are not in the paper's count; ``stored_bytes()`` counts them too (every tensor in the state).

Initialisation (``init_from(..., init=...)``): ``noise`` is the reference's (xavier-uniform
bases and coefficients); ``real`` (a library option) draws ``addresses`` real images per class,
takes the top ``n_bases`` right singular vectors of their least-squares fit at the bases'
resolution as the bases and their projections as coefficients, so every example starts as the
rank-``n_bases`` reconstruction of a real image of its class.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import IPCError
from .base import SYNSETS
from .factorized import FactorizedSet


def budget_addresses(ipc: float, shape: tuple[int, ...], num_classes: int, n_bases: int,
                     downsample: int = 1) -> int:
    """Coefficient vectors per class that fit the storage of ``ipc`` images per class beside
    ``n_bases`` bases (the paper's fixed budget)."""
    c, h, w = shape
    hb, wb = _base_size(h, w, downsample)
    total = ipc * num_classes * c * h * w
    return int(math.floor((total - n_bases * c * hb * wb) / (num_classes * n_bases)))


def _base_size(h: int, w: int, downsample: int) -> tuple[int, int]:
    return max(1, h // downsample), max(1, w // downsample)


@SYNSETS.register("linba")
class LinBaSet(FactorizedSet):
    """Bases shared across classes + per-class coefficient vectors (codes) addressing them."""

    kind = "linba"

    def __init__(self, info, *, ipc: float, n_bases: int = 16, downsample: int = 2,
                 addresses: int | None = None, label_format: str = "hard",
                 lr: float | None = None):
        if len(info.shape) != 3:
            raise ValueError(f"LinBa bases are images (C, H, W), got shape {tuple(info.shape)}")
        if n_bases < 1:
            raise ValueError(f"n_bases must be >= 1, got {n_bases}")
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        self.budget_ipc, self.n_bases, self.downsample = ipc, int(n_bases), int(downsample)
        self.fixed_addresses = None if addresses is None else int(addresses)
        n = self.fixed_addresses
        if n is None:
            n = budget_addresses(ipc, info.shape, info.num_classes, n_bases, downsample)
            if n < 1:
                raise IPCError(
                    f"a budget of {ipc} image(s) per class does not fit {n_bases} bases of "
                    f"{info.shape[0]}x{'x'.join(map(str, self.base_hw(info)))} plus one "
                    f"address per class; use fewer bases, a larger downsample or a larger ipc")
        super().__init__(info, ipc=n, code_shape=(self.n_bases,), label_format=label_format,
                         lr=lr)

    def base_hw(self, info=None) -> tuple[int, int]:
        _, h, w = (info or self.info).shape
        return _base_size(h, w, self.downsample)

    def build_decoders(self) -> None:
        c = self.info.shape[0]
        self.decoders = nn.ParameterList([nn.Parameter(torch.zeros(self.n_bases, c,
                                                                   *self.base_hw()))])

    @property
    def bases(self) -> nn.Parameter:
        return self.decoders[0]

    @property
    def addresses(self) -> int:
        """Coefficient vectors (materialized examples) per class."""
        return self.codes_per_class

    def decode(self, j: int, codes: Tensor) -> Tensor:
        b = self.decoders[j]
        return _up((codes @ b.flatten(1)).view(codes.shape[0], *b.shape[1:]), self.info.shape)

    def config(self):
        return {"ipc": self.budget_ipc, "n_bases": self.n_bases, "downsample": self.downsample,
                "addresses": self.fixed_addresses}

    def upsample_matrix(self) -> Tensor:
        """[C h w, C H W]: the (linear) upsampling of a flattened base, row by row."""
        c = self.info.shape[0]
        hb, wb = self.base_hw()
        eye = torch.eye(c * hb * wb, dtype=self.codes.dtype, device=self.codes.device)
        return _up(eye.view(-1, c, hb, wb), self.info.shape).flatten(1)

    @torch.no_grad()
    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        if init == "noise":  # the reference: torch.nn.init.xavier_uniform on both embeddings
            for p in (self.bases, self.codes):
                flat = p.view(p.shape[0], -1)
                bound = math.sqrt(6.0 / (flat.shape[0] + flat.shape[1]))
                u = torch.rand(flat.shape, generator=generator, dtype=p.dtype)
                p.copy_(((2 * u - 1) * bound).view_as(p).to(p.device))
            return
        n, k = self.addresses, self.info.num_classes
        imgs = []
        for c in range(k):
            x = real.sample_class(c, n, generator)
            if x.shape[0] < n:  # small classes: reuse images
                x = x.repeat(math.ceil(n / x.shape[0]), 1, 1, 1)[:n]
            imgs.append(x)
        x = torch.cat(imgs).flatten(1).to(torch.float64)
        up = self.upsample_matrix().to(torch.float64).cpu()
        # the best approximation of each image at the bases' resolution (least squares)
        z = x if up.shape[0] == up.shape[1] else torch.linalg.lstsq(up.T, x.T).solution.T
        _, _, vh = torch.linalg.svd(z, full_matrices=False)
        m = min(self.n_bases, vh.shape[0])
        bases = torch.zeros(self.n_bases, vh.shape[1], dtype=torch.float64)
        bases[:m] = vh[:m]
        if m < self.n_bases:  # fewer images than bases: the rest start as small noise
            extra = torch.randn(self.n_bases - m, vh.shape[1], generator=generator,
                                dtype=torch.float64)
            bases[m:] = extra / vh.shape[1] ** 0.5
        self.bases.copy_(bases.view_as(self.bases).to(self.bases))
        self.codes.copy_((z @ bases.T).to(self.codes))  # projections (0 on the noise bases)
        self.codes[:, m:] = 0


def _up(x: Tensor, shape) -> Tensor:
    """Bilinear upsampling of ``[n, C, h, w]`` to the data's ``H x W`` (identity when equal)."""
    if tuple(x.shape[-2:]) != tuple(shape[-2:]):
        x = F.interpolate(x, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return x
