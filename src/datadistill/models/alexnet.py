"""AlexNet and VGG11 in the batch-norm forms of the DC/DM cross-architecture tables."""
from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .layers import norm_layer


def _conv_stack(info, plan, first_kernel: int, first_pad_1ch: int, first_pad: int, norm: str):
    """Build conv/norm/ReLU/maxpool from ``plan`` (ints = conv widths, 'M' = maxpool); pooling
    is skipped once the map is 1x1, so small images still work."""
    c, h, w = info.shape
    layers: list[nn.Module] = []
    in_c, first = c, True
    for v in plan:
        if v == "M":
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            continue
        k, v = (first_kernel, v) if first else (v[1], v[0]) if isinstance(v, tuple) else (3, v)
        pad = (first_pad_1ch if c == 1 else first_pad) if first else k // 2
        layers.append(nn.Conv2d(in_c, v, k, padding=pad))
        h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        layers += [norm_layer(norm, v, (h, w)), nn.ReLU()]
        in_c, first = v, False
    return nn.Sequential(*layers), in_c * h * w


@MODELS.register("alexnet")
class AlexNet(nn.Module):
    def __init__(self, info, *, norm: str = "batch"):
        super().__init__()
        plan = [128, "M", (192, 5), "M", 256, 192, 192, "M"]
        self.features, self.feature_dim = _conv_stack(info, plan, 5, 4, 2, norm)
        self.classifier = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("vgg11")
class VGG11(nn.Module):
    def __init__(self, info, *, norm: str = "batch"):
        super().__init__()
        plan = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
        self.features, self.feature_dim = _conv_stack(info, plan, 3, 3, 1, norm)
        self.classifier = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


MODELS.register("alexnet_in", AlexNet, norm="instance")
MODELS.register("vgg11_in", VGG11, norm="instance")
