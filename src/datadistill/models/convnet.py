"""The field's ConvNet (DC/DSA/DM/MTT): [conv3x3(width) - norm - ReLU - avgpool] x depth, linear.

1-channel inputs get padding 3 in the first conv (28x28 -> 32x32), as in the reference code
(``first_padding`` overrides it: RFAD's random networks pad by 1 everywhere, 28 -> 14 -> 7 -> 3);
a 1-channel first conv is a ``GrayStemConv2d`` (the same function and parameters as ``nn.Conv2d``, computed
as im2col + 1x1 conv because oneDNN's single-channel kernel is slow, see ``layers.py``).
Registered variants: depth ``convnet_d1..d4``, width ``convnet_w32..w256``, norm
``convnet_nn/bn/in/ln/gn``, pooling ``convnet_ap/mp/np``.

With ``fused = True`` (``create_model(..., fused=True)``, which ``RunOptions(fused=...)`` decides)
the first block (conv -> instance norm -> ReLU -> avg pool) runs as one fused CPU kernel and every
later ``instance norm -> ReLU -> avg pool`` as another (``perf/fused.py``; same function, same
parameters and state dict); the activations flow in channels-last memory, which the
convolutions also prefer.
"""
from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .layers import GrayStemConv2d, activation, norm_layer, pool_layer


class ConvNet(nn.Module):
    #: compute the blocks with the fused CPU kernels (a speed setting: the same function)
    fused: bool = False

    def __init__(self, info, *, width: int = 128, depth: int = 3, norm: str = "instance",
                 act: str = "relu", pool: str = "avg", first_padding: int | None = None):
        super().__init__()
        c, h, w = info.shape
        if first_padding is None:  # the field's choice: 28 -> 32 on 1-channel images
            first_padding = 3 if c == 1 else 1
        layers: list[nn.Module] = []
        acts: list[int] = []  # index of each block's activation in ``features``
        for d in range(depth):
            pad = first_padding if d == 0 else 1
            conv = GrayStemConv2d if c == 1 and d == 0 else nn.Conv2d  # same function, faster
            layers.append(conv(c if d == 0 else width, width, 3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            layers += [norm_layer(norm, width, (h, w)), activation(act)]
            acts.append(len(layers) - 1)
            if pool != "none" and min(h, w) >= 2:
                layers.append(pool_layer(pool))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self._acts = tuple(acts)
        # the blocks the fused kernel can take: indices of their norm layers
        self._fusable = frozenset(
            i for i, m in enumerate(layers[:-2]) if norm == "instance" and act == "relu"
            and pool == "avg" and isinstance(m, nn.GroupNorm)
            and isinstance(layers[i + 2], nn.AvgPool2d))
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self._fusable and self.fused:
            from ..perf.fused import applicable
            if applicable(x):  # (not under vmap, CPU, floating point)
                return self._fused_features(x).flatten(1)
        return self.features(x).flatten(1)

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The intermediate feature maps: every block's output after its activation (before its
        pooling), then the last block's pooled output (the embedding as a map, ``embed`` before
        flattening) — ``depth + 1`` tensors. Computed with the plain modules (the function of
        ``embed``; the fused kernels do not expose the activations)."""
        outs = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self._acts:
                outs.append(x)
        outs.append(x)
        return outs

    def _fused_features(self, x: torch.Tensor) -> torch.Tensor:
        from ..perf.fused import applicable, conv_norm_relu_pool, norm_relu_pool
        from ..perf.fused_conv import conv2d
        layers = list(self.features)
        i = 0
        conv = layers[0]
        if 1 in self._fusable and _stem_fusable(conv, x):
            # the first block with its convolution in one kernel (its output stays in cache)
            norm = layers[1]
            x = conv_norm_relu_pool(x, conv.weight, conv.bias, conv.padding[0], norm.weight,
                                    norm.bias, norm.eps)
            i = 4
        elif x.dim() == 4 and not isinstance(conv, GrayStemConv2d):
            x = x.contiguous(memory_format=torch.channels_last)  # convs then stay channels-last
        while i < len(layers):
            m = layers[i]
            if i in self._fusable and applicable(x):
                x = norm_relu_pool(x, m.weight, m.bias, m.eps)
                i += 3
                continue
            if isinstance(m, GrayStemConv2d):
                x = m(x, channels_last=True)
            elif _plain_conv(m) and applicable(x):  # its double backward without a slow term
                x = conv2d(x, m.weight, m.bias, m.padding[0])
            else:
                x = m(x)
            i += 1
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _plain_conv(m: nn.Module) -> bool:
    """A convolution ``fused_conv.conv2d`` computes: stride 1, no dilation or groups, symmetric zero
    padding."""
    return (type(m) is nn.Conv2d and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and m.padding[0] == m.padding[1])


def _stem_fusable(conv: nn.Module, x: torch.Tensor) -> bool:
    """A first layer the fused first-block kernel computes: 3x3, stride 1, symmetric zero
    padding, with a bias, on a float32/float64 image batch of at most 4 channels."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1] and conv.in_channels <= 4
            and x.dim() == 4 and x.dtype in (torch.float32, torch.float64))


MODELS.register("convnet", ConvNet)
for _d in (1, 2, 3, 4):
    MODELS.register(f"convnet_d{_d}", ConvNet, depth=_d)
for _w in (32, 64, 128, 256):
    MODELS.register(f"convnet_w{_w}", ConvNet, width=_w)
MODELS.register("convnet_w1024", ConvNet, width=1024)  # KIP/RFAD's wide evaluation network
for _tag, _norm in (("nn", "none"), ("bn", "batch"), ("in", "instance"), ("ln", "layer"),
                    ("gn", "group")):
    MODELS.register(f"convnet_{_tag}", ConvNet, norm=_norm)
for _tag, _pool in (("ap", "avg"), ("mp", "max"), ("np", "none")):
    MODELS.register(f"convnet_{_tag}", ConvNet, pool=_pool)
