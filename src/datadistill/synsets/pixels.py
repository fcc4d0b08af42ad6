"""Learnable pixels: one stored image per synthetic example (the DC/DM/MTT summary)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SYNSETS, SyntheticSet


@SYNSETS.register("pixels")
class PixelSet(SyntheticSet):
    kind = "pixels"

    def __init__(self, info, *, ipc: int, label_format: str = "hard", lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {ipc}")
        k = info.num_classes
        self.ipc_ = int(ipc)
        self.x = nn.Parameter(torch.zeros(k * ipc, *info.shape))
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))
        if label_format != "hard":
            # soft: logits of the target distribution; regression: the regression targets
            init = F.one_hot(self.labels, k).float()
            self.y = nn.Parameter(init)
        else:
            self.y = None

    def config(self):
        return {"ipc": self.ipc_}

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.x, (self.labels if self.y is None else self.y)

    @property
    def class_ids(self) -> Tensor:
        return self.labels

    def class_slice(self, c: int) -> slice:
        return slice(c * self.ipc_, (c + 1) * self.ipc_)
