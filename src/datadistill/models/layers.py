"""Normalization, activation and pooling layers by name, and the generator-driven init."""
from __future__ import annotations

import math

import torch
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


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialisation, drawn from ``generator`` (so runs are reproducible
    without touching the global RNG). Norm layers get weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            # drawn on CPU in logical (contiguous) order, then copied: the same values on any
            # device and for channels-last weights
            w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
            m.weight.copy_(nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator))
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                b = torch.empty(m.bias.shape, dtype=m.bias.dtype)
                m.bias.copy_(nn.init.uniform_(b, -bound, bound, generator=generator))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.reset_parameters()
    return model
