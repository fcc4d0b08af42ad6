"""Multi-formation (Kim et al., IDC, ICML'22): each stored image holds ``factor**2`` examples.

A stored image of the full size ``(C, H, W)`` is cut into a ``factor x factor`` grid of
``ceil(H/factor) x ceil(W/factor)`` cells (padded at the bottom/right when the size is not
divisible, with 0.5 in [0, 1] pixels as the reference, i.e. ``(0.5 - mean) / std`` in the
normalized space the summary is stored in); each cell is upsampled
bilinearly back to ``(H, W)`` and is one training example with the label of its stored image.
``materialize()`` decodes (differentiably); the stored bytes are those of the stored tensor,
so at the same stored ``ipc`` the summary holds ``factor**2`` times more examples than pixels.
``factor=1`` is the plain pixel summary (IDC-I). Any method can use it (``synset_kind``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SYNSETS, SyntheticSet


def decode_zoom(x: Tensor, factor: int, pad_value: Tensor | None = None) -> Tensor:
    """[N, C, H, W] -> [N * factor**2, C, H, W]: the grid cells of each image, upsampled; the
    cells of image ``i`` are rows ``i*factor**2 ... (i+1)*factor**2 - 1`` (row-major grid).
    ``pad_value`` [C]: the value of the bottom/right padding when ``factor`` does not divide the
    size (the reference pads with 0.5 in [0, 1] pixels: ``pad_value_for``); default 0."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    sh, sw = math.ceil(h / factor), math.ceil(w / factor)
    pad = (0, sw * factor - w, 0, sh * factor - h)
    x = F.pad(x, pad)
    if pad_value is not None and any(pad):
        outside = 1 - F.pad(x.new_ones(1, 1, h, w), pad)
        x = x + outside * pad_value.to(x).view(1, c, 1, 1)
    cells = x.reshape(n, c, factor, sh, factor, sw).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(n * factor * factor, c, sh, sw)
    return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)


def pad_value_for(info) -> Tensor:
    """[C]: 0.5 in [0, 1] pixels (the reference's padding) in the data's normalized space."""
    c = info.shape[0]
    mean = torch.tensor(info.mean or (0.0,) * c, dtype=torch.float64)
    std = torch.tensor(info.std or (1.0,) * c, dtype=torch.float64)
    return (0.5 - mean) / std


@torch.no_grad()
def encode_zoom(imgs: Tensor, factor: int) -> Tensor:
    """The inverse used for initialisation (IDC's ``mix`` init): ``factor**2`` images per stored
    image [N * factor**2, C, H, W] -> [N, C, H, W], each downsampled (nearest, as the reference)
    into its grid cell."""
    if factor == 1:
        return imgs.clone()
    m, c, h, w = imgs.shape
    n, f2 = m // (factor * factor), factor * factor
    sh, sw = math.ceil(h / factor), math.ceil(w / factor)
    small = F.interpolate(imgs, size=(sh, sw), mode="nearest")
    grid = small.reshape(n, factor, factor, c, sh, sw).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, c, sh * factor, sw * factor)[:, :, :h, :w].contiguous()


@SYNSETS.register("multiformation")
class MultiFormationSet(SyntheticSet):
    kind = "multiformation"

    def __init__(self, info, *, ipc: int, factor: int = 2, label_format: str = "hard",
                 lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {ipc}")
        if factor < 1:
            raise ValueError(f"multi-formation factor must be >= 1, got {factor}")
        if len(info.shape) != 3 or min(info.shape[1:]) < factor:
            raise ValueError(f"multi-formation needs images (C, H, W) of at least {factor} pixels, "
                             f"got shape {tuple(info.shape)}")
        if label_format == "regression":
            raise ValueError("multi-formation supports hard or soft labels")
        k = info.num_classes
        self.stored_ipc, self.factor = int(ipc), int(factor)
        self.x = nn.Parameter(torch.zeros(k * ipc, *info.shape))
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))
        self.y = nn.Parameter(F.one_hot(self.labels, k).float()) if label_format == "soft" else None

    def config(self):
        return {"ipc": self.stored_ipc, "factor": self.factor}

    @property
    def pad_value(self) -> Tensor:
        """[C] float64: the padding of a non-divisible grid (0.5 in [0, 1] pixels), from info."""
        return pad_value_for(self.info)

    def materialize(self) -> tuple[Tensor, Tensor]:
        rep = self.factor ** 2
        y = self.labels if self.y is None else self.y
        return decode_zoom(self.x, self.factor, self.pad_value), y.repeat_interleave(rep, dim=0)

    @property
    def class_ids(self) -> Tensor:
        return self.labels.repeat_interleave(self.factor ** 2)

    def class_slice(self, c: int) -> slice:
        """Stored images of class ``c``."""
        return slice(c * self.stored_ipc, (c + 1) * self.stored_ipc)

    @torch.no_grad()
    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        """``real``: every stored image tiles ``factor**2`` random real images of its class
        (IDC's ``mix``); ``noise``: standard normal pixels."""
        f2 = self.factor ** 2
        for c in range(self.info.num_classes):
            sl = self.class_slice(c)
            n = sl.stop - sl.start
            if init == "real":
                imgs = real.sample_class(c, n * f2, generator)
                if imgs.shape[0] < n * f2:  # small classes: reuse images
                    reps = math.ceil(n * f2 / imgs.shape[0])
                    imgs = imgs.repeat(reps, 1, 1, 1)[:n * f2]
                self.x[sl] = encode_zoom(imgs, self.factor).to(self.x.device)
            else:
                self.x[sl] = torch.randn(n, *self.info.shape, generator=generator).to(self.x.device)
