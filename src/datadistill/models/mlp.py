"""MLP (DC's 3-layer, width 128) and LeNet-5 (DC's cross-architecture version)."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    def __init__(self, info, *, width: int = 128):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(info.shape), width), nn.ReLU(),
                                  nn.Linear(width, width), nn.ReLU())
        self.feature_dim = width
        self.classifier = nn.Linear(width, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("lenet")
class LeNet(nn.Module):
    """conv5(6) - ReLU - maxpool - conv5(16) - ReLU - maxpool - fc120 - fc84 - fc; 1-channel
    inputs are padded by 2 (28 -> 32) as in the reference code. Needs images >= 16x16."""

    def __init__(self, info):
        super().__init__()
        c, h, w = info.shape
        pad = 2 if c == 1 else 0
        fh, fw = ((h + 2 * pad - 4) // 2 - 4) // 2, ((w + 2 * pad - 4) // 2 - 4) // 2
        if min(fh, fw) < 1:
            raise ValueError(f"lenet needs images of at least 16x16 (1-channel) or 18x18; got {h}x{w}")
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(16 * fh * fw, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.feature_dim = 84
        self.classifier = nn.Linear(84, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
