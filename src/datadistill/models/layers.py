"""Normalization, activation and pooling layers by name, and the generator-driven init."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("none", "batch", "instance", "layer", "group")
POOLS = ("avg", "max", "none")


def norm_layer(norm: str, channels: int, spatial: tuple[int, int]) -> nn.Module:
    """The field's norms: instance norm is GroupNorm(C, C) with affine parameters (DC code)."""
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "layer":
        return nn.LayerNorm([channels, *spatial], elementwise_affine=True)
    if norm == "group":
        return nn.GroupNorm(4 if channels % 4 == 0 else 1, channels, affine=True)
    raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


class GrayStemConv2d(nn.Conv2d):
    """``nn.Conv2d(1, C, k, padding=p)`` (stride 1) computed as im2col + a 1x1 convolution.

    The same function with the same parameters (``weight`` is ``[C, 1, k, k]``; state dicts,
    ``functional_call`` and FLOP counts are those of the plain convolution), but on this CPU's
    oneDNN the direct kernel for a single input channel is memory-bound in its weight gradient:
    measured on the ConvNet's first layer (Fashion-MNIST, batch 100, forward + weight gradient,
    one thread) 24 GFLOP/s in fp32 and 12 in bf16 against 237/457 for the 128->128 layers, 38 %
    of the network's bf16 convolution time for 0.8 % of its FLOPs. As a 1x1 convolution over the
    k*k unfolded shifts it takes 12 instead of 39 ms in bf16 (the compiled bf16 training step:
    147 -> 91 ms; fp32: 187 -> 173 ms; ``bench/gm_roofline.py``). Only for one input channel,
    stride 1, zero padding: for RGB the direct kernel is the faster one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, **kw):
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        if in_channels != 1 or self.groups != 1 or self.stride != (1, 1) or \
                self.dilation != (1, 1) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("GrayStemConv2d is a 1-input-channel, stride-1, zero-padded convolution")

    def forward(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """``channels_last``: the output in channels-last memory (what the fused ConvNet
        blocks read; the im2col copy is made channels-last, 9 values per pixel)."""
        if x.dim() != 4 or x.shape[1] != 1:  # unbatched or wrong channels: nn.Conv2d's handling
            return super().forward(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, _, h, w = x.shape
        ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw)).view(n, kh * kw, ho, wo)
        if channels_last:
            cols = cols.contiguous(memory_format=torch.channels_last)
        return F.conv2d(cols, self.weight.reshape(self.out_channels, kh * kw, 1, 1), self.bias)


def pool_layer(pool: str) -> nn.Module:
    if pool == "avg":
        return nn.AvgPool2d(2, 2)
    if pool == "max":
        return nn.MaxPool2d(2, 2)
    if pool == "none":
        return nn.Identity()
    raise ValueError(f"unknown pooling {pool!r}; known: {', '.join(POOLS)}")


def activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "leakyrelu": lambda: nn.LeakyReLU(0.01),
            "gelu": nn.GELU}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(acts)}")
    return acts[name]()


#: ``init_parameters`` schemes
INIT_SCHEMES = ("default", "xavier")


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator,
                    scheme: str = "default") -> nn.Module:
    """Initialise ``model`` from ``generator`` (so runs are reproducible without touching the
    global RNG). ``scheme``: ``"default"`` is PyTorch's default initialisation (kaiming-uniform
    weights, uniform biases); ``"xavier"`` is xavier-normal weights (gain 1) and zero biases
    (DD's reference ``init_weights``, ``--init xavier --init_param 1``). Norm layers get weight 1,
    bias 0 either way."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            # drawn on CPU in logical (contiguous) order, then copied: the same values on any
            # device and for channels-last weights
            w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
            if scheme == "xavier":
                m.weight.copy_(nn.init.xavier_normal_(w, gain=1.0, generator=generator))
                if m.bias is not None:
                    m.bias.zero_()
                continue
            m.weight.copy_(nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator))
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                b = torch.empty(m.bias.shape, dtype=m.bias.dtype)
                m.bias.copy_(nn.init.uniform_(b, -bound, bound, generator=generator))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.reset_parameters()
    return model
