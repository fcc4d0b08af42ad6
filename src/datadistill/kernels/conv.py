"""Convolutional kernels for the meta-model family: exact infinite-width, empirical, random-feature.

Three kernels, each ``kernel(x1, x2) -> [n, m]`` and differentiable in both inputs:

* ``conv_kernels`` — the **exact** infinite-width NNGP and NTK of a ReLU ConvNet of 3x3 "same"
  convolutions with a flattened linear readout and no pooling/normalization (the CNN-GP of
  Novak et al., ICLR'19; the vanilla CNTK of Arora et al., NeurIPS'19). With a flatten readout
  only same-position covariances enter the recursion, so the cost is O(n m H W depth) — cheap on
  CPU. The ConvNet's average pooling would couple all position pairs (O(n m (HW)^2)), which is
  not practical here; for the *actual* ConvNet (instance norm + pooling) use the empirical NTK.
  Recursion (per position p, ``A`` = 3x3 zero-padded mean over neighbours, C_0 = input channels):

      K_1 = w_var A(<x_p, x'_p> / C_0) + b_var,                    T_1 = K_1
      K_{l+1} = w_var A(sqrt(K_l(x,x) K_l(x',x')) k1(rho_l)) + b_var
      T_{l+1} = w_var A(T_l k0(rho_l)) + K_{l+1}
      readout: NNGP = w_var mean_p(...) + b_var on the last layer, NTK likewise.

* ``EmpiricalNTK`` — J(x1) J(x2)^T of a finite registered model (a single-output copy, whose
  NTK is an unbiased estimate of the per-output kernel), computed with ``torch.func``
  (``vmap(jacrev)``); differentiable in x1 and x2 (double backward).
* ``RandomFeatureNNGP`` — RFAD's approximation: features of ``n_models`` random finite
  ConvNets (weights N(0, 2 / fan_in), biases N(0, 0.1^2)), Phi = the concatenated features
  / sqrt(M D), K ~ 2 Phi(x1) Phi(x2)^T + 0.01 — the Monte-Carlo NNGP including the readout
  layer (w_var 2, b_var 0.01), as RFAD's ``distill_dataset``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fc import arccos_maps
from ..models import create_model


def _neighbour_mean(maps: Tensor, padding: int) -> Tensor:
    """3x3 mean over zero-padded neighbours of [B, H, W] maps (a conv's fan-in average)."""
    x = maps[:, None]
    if padding > 1:  # avg_pool2d pads at most 1: add the rest as zeros
        x = F.pad(x, (padding - 1,) * 4)
        padding = 1
    # (avg_pool2d with count_include_pad is ~7x faster than a 1-channel conv2d here)
    return F.avg_pool2d(x, 3, 1, padding, count_include_pad=True)[:, 0]


def _relu_maps(k12: Tensor, k11: Tensor, k22: Tensor):
    """Arc-cosine expectations per position: E[relu relu] and E[relu' relu'] (unit w_var)."""
    return arccos_maps(k12, torch.sqrt((k11[:, None] * k22[None, :]).clamp_min(1e-30)))


def conv_kernels(x1: Tensor, x2: Tensor | None = None, *, depth: int = 3, w_var: float = 2.0,
                 b_var: float = 0.01, first_padding: int = 1) -> tuple[Tensor, Tensor]:
    """Exact (NNGP, NTK) [n, m] of a depth-``depth`` 3x3 ReLU ConvNet with flatten readout.

    Defaults: the KIP notebook's 'Conv' architecture (neural-tangents ``stax.Conv`` with
    ``padding='SAME'``, ``W_std = sqrt(2)``, ``b_std = 0.1``). ``first_padding`` is the first
    convolution's padding (1 = SAME; 3 would be the field's finite ConvNet on 1-channel images,
    28 -> 32); later layers keep their size (padding 1).
    """
    if depth < 1:
        raise ValueError(f"depth (conv layers) must be >= 1, got {depth}")
    if x1.dim() != 4 or (x2 is not None and x2.shape[1:] != x1.shape[1:]):
        raise ValueError(f"conv kernels need [N, C, H, W] inputs of one shape, got "
                         f"{tuple(x1.shape)} and {None if x2 is None else tuple(x2.shape)}")
    x2 = x1 if x2 is None else x2
    n, m, c = x1.shape[0], x2.shape[0], x1.shape[1]
    h, w = x1.shape[2:]
    # same-position channel inner products: [n, m, H, W] and the two diagonals [n, H, W]
    s12 = torch.einsum("nchw,mchw->nmhw", x1, x2) / c
    s11 = (x1 * x1).sum(1) / c
    s22 = (x2 * x2).sum(1) / c

    def lift(maps12, maps11, maps22, pad):
        hh, ww = maps12.shape[-2:]
        k12 = w_var * _neighbour_mean(maps12.reshape(n * m, hh, ww), pad) + b_var
        k11 = w_var * _neighbour_mean(maps11, pad) + b_var
        k22 = w_var * _neighbour_mean(maps22, pad) + b_var
        return k12.reshape(n, m, *k12.shape[-2:]), k11, k22

    k12, k11, k22 = lift(s12, s11, s22, first_padding)
    ntk = k12
    for layer in range(1, depth + 1):
        e_act, e_der = _relu_maps(k12, k11, k22)
        d11, d22 = k11 / 2, k22 / 2  # E[relu(u)^2] = K/2 on the diagonal
        if layer == depth:  # flatten readout: mean over positions (fan-in C*H*W)
            nngp = w_var * e_act.mean((-2, -1)) + b_var
            return nngp, w_var * (ntk * e_der).mean((-2, -1)) + nngp
        hh, ww = e_act.shape[-2:]
        k12, k11, k22 = lift(e_act, d11, d22, 1)
        ntk = w_var * _neighbour_mean((ntk * e_der).reshape(n * m, hh, ww), 1).reshape(k12.shape) + k12
    raise AssertionError("unreachable")


def conv_ntk(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return conv_kernels(x1, x2, **kw)[1]


def conv_nngp(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return conv_kernels(x1, x2, **kw)[0]


class EmpiricalNTK:
    """Finite-width NTK  K(x1, x2) = <d f(x1)/d theta, d f(x2)/d theta>  of one random network.

    ``model`` must have a single output (see ``for_model``); ``chunk`` bounds the number of
    per-example Jacobians held at once when no gradient is needed.
    """

    def __init__(self, model: nn.Module, *, chunk: int = 256):
        from torch.func import functional_call

        self.model, self.chunk = model.eval(), chunk
        self.params = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}

        def f(params, x):
            return functional_call(self.model, (params, self.buffers), (x[None],)).reshape(())
        self._f = f

    @classmethod
    def for_model(cls, name: str, info, *, generator: torch.Generator, device=None, **kw):
        """A single-output copy of registered model ``name`` (e.g. ``convnet``), randomly
        initialised from ``generator``; its NTK estimates the per-logit NTK of ``name``."""
        model_kw = {k: kw.pop(k) for k in list(kw) if k in ("width", "depth", "norm", "pool")}
        net = create_model(name, info.replace(num_classes=1), generator=generator, device=device,
                           **model_kw)
        return cls(net, **kw)

    def jacobian(self, x: Tensor) -> Tensor:
        """Per-example parameter gradients, flattened: [N, P]."""
        from torch.func import jacrev, vmap

        jac = vmap(jacrev(self._f), in_dims=(None, 0))(self.params, x)
        return torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)

    features = jacobian  # K = Phi Phi^T with Phi = J (lets callers reuse J of a fixed set)

    def __call__(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        j1 = self.jacobian(x1)
        if x2 is None:
            return j1 @ j1.T
        if torch.is_grad_enabled() and x2.requires_grad:
            return j1 @ self.jacobian(x2).T
        with torch.no_grad():
            j2 = torch.cat([self.jacobian(x2[i:i + self.chunk]) for i in range(0, x2.shape[0], self.chunk)])
        return j1 @ j2.T


def he_normal_(model: nn.Module, generator: torch.Generator, w_var: float = 2.0,
               b_std: float = 0.1) -> nn.Module:
    """Weights ~ N(0, w_var / fan_in), biases ~ N(0, b_std^2): the parametrization the NNGP
    assumes (RFAD's ``Conv2d_gaussian``: W_std sqrt(2), b_std 0.1)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                std = math.sqrt(w_var / mod.weight[0].numel())
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=generator) * std)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=generator) * b_std)
    return model


class RandomFeatureNNGP:
    """RFAD's kernel: Phi(x) = concatenated penultimate features of ``n_models`` random finite
    networks (``model`` without normalization, ``he_normal_``) / sqrt(M D), and
    K = ``w_var`` Phi1 Phi2^T + ``b_var`` (the readout layer's NNGP: 2 and 0.01 in RFAD).
    ``first_padding`` is passed to the model (1: RFAD's ``ConvNet_wide`` pads every conv by 1,
    also on 1-channel images: 28 -> 14 -> 7 -> 3); ``None`` leaves the model's own choice."""

    def __init__(self, info, *, n_models: int = 8, model: str = "convnet_nn", width: int = 256,
                 generator: torch.Generator, device=None, first_padding: int | None = 1,
                 w_var: float = 2.0, b_var: float = 0.01, **model_kw):
        if n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {n_models}")
        if first_padding is not None:
            model_kw["first_padding"] = first_padding
        self.w_var, self.b_var = w_var, b_var
        self.nets = [he_normal_(create_model(model, info, width=width, **model_kw), generator)
                     .to(device).eval().requires_grad_(False) for _ in range(n_models)]

    def features(self, x: Tensor) -> Tensor:
        phi = torch.cat([net.embed(x) for net in self.nets], dim=1)
        return phi / math.sqrt(phi.shape[1])

    def gram(self, f1: Tensor, f2: Tensor) -> Tensor:
        """The kernel between two feature matrices: ``w_var f1 f2^T + b_var``."""
        return self.w_var * f1 @ f2.T + self.b_var

    def __call__(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        f1 = self.features(x1)
        return self.gram(f1, f1 if x2 is None else self.features(x2))
