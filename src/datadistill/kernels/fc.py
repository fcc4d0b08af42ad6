"""Infinite-width kernels of fully-connected ReLU networks (closed form, any depth).

NNGP and NTK by the standard recursion (Neal; Lee et al.; Jacot et al.; Arora et al.) for a
network with ``depth`` hidden ReLU layers and a linear readout, weights ~ N(0, w_var / fan_in),
biases ~ N(0, b_var):

    K_0(x, x') = w_var * <x, x'> / d + b_var,           T_0 = K_0
    K_l = w_var * sqrt(K_{l-1}(x,x) K_{l-1}(x',x')) * k1(rho) + b_var
    K'_l = w_var * k0(rho),     T_l = T_{l-1} * K'_l + K_l,   rho = normalized K_{l-1}
    k1(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi),  k0(rho) = (pi - arccos rho) / (2 pi)

``fc_kernels`` returns (NNGP, NTK) = (K_depth, T_depth). Convolutional kernels live with the
meta-model family.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def arccos_maps(k12: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
    """ReLU's arc-cosine expectations for covariance ``k12`` with ``norm`` = sqrt(var1 var2)
    (broadcastable): (E[relu relu] = norm k1(rho), E[relu' relu'] = k0(rho)), unit weight
    variance. The one implementation for the FC, conv and pooled-conv kernels."""
    # Values are exact, also at rho = +-1 (a self-pair: the support kernel's diagonal); the
    # gradient is taken at rho clamped to [-1 + 1e-7, 1 - 1e-7], because arccos'(+-1) is
    # infinite and an input-gradient through a self-pair would be NaN. (Clamping the values too
    # lowered k0 by 7e-5 at rho = 1: a ridge of -7e-5 K on the diagonal, larger than the
    # lambda tr(K)/n of a small reg, e.g. Distill-CF's 1e-5.)
    raw = (k12 / norm).clamp(-1.0, 1.0)
    safe = raw.clamp(-1.0 + 1e-7, 1.0 - 1e-7)

    def exact(f):  # f's value at raw, its gradient at safe
        fs = f(safe)
        return fs + (f(raw) - fs).detach()
    rho = exact(lambda r: r)
    theta = exact(torch.arccos)
    sine = exact(lambda r: torch.sqrt((1 - r * r).clamp_min(0)))
    k1 = (sine + (math.pi - theta) * rho) / (2 * math.pi)
    return norm * k1, (math.pi - theta) / (2 * math.pi)


def _relu_step(k12: Tensor, k11: Tensor, k22: Tensor, w_var: float, b_var: float):
    norm = torch.sqrt(k11[:, None] * k22[None, :]).clamp_min(1e-30)
    e_act, k0 = arccos_maps(k12, norm)
    new12 = w_var * e_act + b_var
    # diagonal: rho = 1 -> k1 = 1/2
    new11 = w_var * k11 / 2 + b_var
    new22 = w_var * k22 / 2 + b_var
    return new12, new11, new22, w_var * k0


def fc_kernels(x1: Tensor, x2: Tensor | None = None, *, depth: int = 1, w_var: float = 2.0,
               b_var: float = 0.01) -> tuple[Tensor, Tensor]:
    """(NNGP, NTK) between rows of ``x1`` [n, ...] and ``x2`` [m, ...] (flattened). Defaults:
    the KIP notebook's ``W_std = sqrt(2)``, ``b_std = 0.1`` (``w_var = 2``, ``b_var = 0.01``)."""
    if depth < 1:
        raise ValueError(f"depth (hidden layers) must be >= 1, got {depth}")
    x1 = x1.reshape(x1.shape[0], -1)
    x2 = x1 if x2 is None else x2.reshape(x2.shape[0], -1)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature sizes differ: {x1.shape[1]} vs {x2.shape[1]}")
    d = x1.shape[1]
    k12 = w_var * (x1 @ x2.T) / d + b_var
    k11 = w_var * (x1 * x1).sum(1) / d + b_var
    k22 = w_var * (x2 * x2).sum(1) / d + b_var
    ntk = k12
    for _ in range(depth):
        k12, k11, k22, dot = _relu_step(k12, k11, k22, w_var, b_var)
        ntk = ntk * dot + k12
    return k12, ntk


def fc_ntk(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return fc_kernels(x1, x2, **kw)[1]


def fc_nngp(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return fc_kernels(x1, x2, **kw)[0]
