"""Networks evaluated at explicit parameters: ``FlatStudent`` (a module at one flat parameter
vector, for unrolled inner loops: MTT, TESLA, later HaBa/LinBa) and the custom instance norm it
can use (``fast_norm``, a ``RunOptions`` speed setting: the same values)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call


class _Standardize(torch.autograd.Function):
    """Instance standardisation (x - mean) * rsqrt(var + eps) over H, W, returning (xhat, r).

    Its backward is written in differentiable ops on the saved *outputs*, so the unroll's double
    backward costs a handful of elementwise passes instead of autograd's generic group-norm
    double backward (which was ~40% of an MTT iteration). Same values as ``nn.GroupNorm(C, C)``.
    """

    @staticmethod
    def forward(ctx, x, eps):
        n, c, h, w = x.shape
        xc = x - x.mean((2, 3), keepdim=True)
        ss = torch.linalg.vector_norm(xc.flatten(2), dim=-1).view(n, c, 1, 1)
        r = torch.rsqrt(ss * ss / (h * w) + eps)
        xhat = xc * r
        ctx.save_for_backward(xhat, r)
        return xhat, r

    @staticmethod
    def backward(ctx, g_xhat, g_r):
        xhat, r = ctx.saved_tensors
        gx = None
        if g_xhat is not None:  # r folded into the per-channel factors: fewer saved tensors
            m1 = g_xhat.mean((2, 3), keepdim=True) * r
            m2 = (g_xhat * xhat).mean((2, 3), keepdim=True) * r
            gx = g_xhat * r - m1 - xhat * m2
        if g_r is not None:  # dr/dx = -r^2 xhat / (H W)
            t = xhat * (g_r * r * r / (xhat.shape[2] * xhat.shape[3]))
            gx = -t if gx is None else gx - t
        return gx, None


class _InstanceNorm(nn.Module):
    """Drop-in for the ConvNet's instance norm (``GroupNorm(C, C)``): same parameter names."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.weight, self.bias, self.eps = gn.weight, gn.bias, gn.eps

    def forward(self, x):
        xhat, _ = _Standardize.apply(x, self.eps)
        c = (1, -1, 1, 1)
        return torch.addcmul(self.bias.view(c), xhat, self.weight.view(c))


def _fast_norms(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if (isinstance(child, nn.GroupNorm) and child.num_groups == child.num_channels
                and child.affine):
            setattr(module, name, _InstanceNorm(child))
        else:
            _fast_norms(child)
    return module


class FlatStudent:
    """A network evaluated at one flat parameter vector (``torch.func.functional_call`` on views
    of the vector: no module is rebuilt and nothing is copied per step). With ``fast_norm``
    instance norms are swapped for ``_InstanceNorm`` (same parameters and values, ~50% more
    memory per unrolled step; faster in a profile, slower in the A/B benchmark: see
    docs/trajectory-matching.md)."""

    def __init__(self, module: nn.Module, fast_norm: bool = True):
        order = [n for n, _ in module.named_parameters()]
        self.module = _fast_norms(module) if fast_norm else module
        named = list(module.named_parameters())
        if [n for n, _ in named] != order:
            raise RuntimeError("swapping the norm layers changed the parameter layout")
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        params = {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}
        return functional_call(self.module, params, (x,))
