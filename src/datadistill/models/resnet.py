"""ResNet-18 as used in the DC/DM cross-architecture tables: 3x3 stem with stride 1, four
stages of two BasicBlocks, global average pooling; batch norm (``resnet18_in``: instance)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS
from .layers import norm_layer


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, hw: tuple[int, int]):
        super().__init__()
        out_hw = ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = norm_layer(norm, cout, out_hw)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = norm_layer(norm, cout, out_hw)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          norm_layer(norm, cout, out_hw))
        self.out_hw = out_hw

    def forward(self, x):
        out = F.relu(self.n1(self.conv1(x)))
        return F.relu(self.n2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, info, *, blocks=(2, 2, 2, 2), norm: str = "batch"):
        super().__init__()
        c, h, w = info.shape
        self.stem = nn.Sequential(nn.Conv2d(c, 64, 3, 1, 1, bias=False),
                                  norm_layer(norm, 64, (h, w)), nn.ReLU())
        layers, cin, hw = [], 64, (h, w)
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            for j in range(n):
                b = BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, norm, hw)
                layers.append(b)
                cin, hw = cout, b.out_hw
        self.layers = nn.Sequential(*layers)
        self.feature_dim = 512
        self.classifier = nn.Linear(512, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


MODELS.register("resnet18", ResNet)
MODELS.register("resnet18_in", ResNet, norm="instance")
