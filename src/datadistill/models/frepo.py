"""FRePO's published network (Zhou, Nezhadarya & Ba, NeurIPS'22; yongchaoz/FRePO ``Conv``,
README: ``--arch=conv --width=128 --depth=3 --normalization=batch``).

``depth`` blocks of [norm (not before the first conv) -> 3x3 conv of ``width * 2^i`` channels ->
ReLU -> 2x2 average pool], flatten, a linear readout. The first conv pads by 3 on 1-channel
images (28 -> 32), by 1 otherwise; the widths double per block (128 / 256 / 512), so the feature
dimension on 28x28x1 is 512 x 4 x 4 = 8192. Batch norm normalizes the input of convs 2 and 3;
the reference's flax ``BatchNorm(momentum=0.1, epsilon=1e-5)`` keeps 0.1 of the old running
statistics, i.e. PyTorch's ``momentum=0.9`` (flax tracks the biased batch variance, PyTorch the
unbiased one: a factor N/(N-1) over N = batch x H x W values). ``reset_published_(generator)``
draws flax's default initialisation (LeCun-normal weights: truncated normal at 2 sigma with
variance 1 / fan_in; zero biases), which FRePO's pool models use.

Registered: ``frepo_conv`` (batch norm, FRePO's distillation network) and ``frepo_conv_nn`` (no
normalization: the network FRePO evaluates with after distilling with batch norm).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import MODELS
from .layers import GrayStemConv2d, norm_layer


class FRePOConv(nn.Module):
    def __init__(self, info, *, width: int = 128, depth: int = 3, norm: str = "batch"):
        super().__init__()
        c, h, w = info.shape
        layers: list[nn.Module] = []
        cin = c
        for i in range(depth):
            if i > 0:
                layers.append(nn.BatchNorm2d(cin, eps=1e-5, momentum=0.9) if norm == "batch"
                              else norm_layer(norm, cin, (h, w)))
            pad = 3 if c == 1 and i == 0 else 1
            cout = width * 2 ** i
            conv = GrayStemConv2d if cin == 1 else nn.Conv2d  # same function, faster
            layers += [conv(cin, cout, 3, padding=pad), nn.ReLU()]
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers.append(nn.AvgPool2d(2, 2))
            h, w = h // 2, w // 2
            cin = cout
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin * h * w
        self.classifier = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))

    @torch.no_grad()
    def reset_published_(self, generator: torch.Generator) -> "FRePOConv":
        """flax's default init: LeCun-normal (truncated) weights, zero biases, BN weight 1 bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                # a standard normal truncated to [-2, 2] has std 0.87962566103423978
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
                nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.reset_running_stats()
        return self


MODELS.register("frepo_conv", FRePOConv, norm="batch")
MODELS.register("frepo_conv_nn", FRePOConv, norm="none")
