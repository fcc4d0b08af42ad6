"""Exact infinite-width NNGP and NTK of the *pooled* ConvNet that KIP used for its ConvNet results.

Architecture (Nguyen, Novak, Xiao & Lee, NeurIPS'21; the neural-tangents ``stax`` ConvNet, as in
RFAD's ``DCConvNetKernel``): ``depth`` blocks of [3x3 "same" conv, ReLU, 2x2 average pool with
stride 2], then flatten and a dense readout; NTK parametrization, W_std = sqrt(2), b_std = 0.1,
i.e. ``w_var = 2``, ``b_var = 0.01`` (the defaults here). No normalization layers.

**Offset windows.** With iid conv weights a "same" convolution maps the covariance entry of
positions (p, p + delta) to neighbours (p + d, p + d + delta): the offset delta is preserved.
A 2x2 / stride-2 average pool maps coarse offset D to fine offsets 2D + {-1, 0, 1}^2. Working
back from the flatten readout (offset 0 after the last pool), block l only needs offsets in
[-r_l, r_l]^2 with r_depth = 1 and r_l = 2 r_{l+1} + 1 (at 32x32, depth 3: 7, 3, 1). So the
covariance of a pair is stored as [D_l, H_l, W_l] (D_l = (2 r_l + 1)^2 offsets) instead of
[(H W)^2]: 225*1024 + 49*256 + 9*64 = 243,856 entries per pair at 32x32 instead of 1,398,784
(neural-tangents' full spatial covariance). Zero padding: an entry whose partner position
p + delta is out of bounds is 0, and is kept 0 after every conv and ReLU (``mask``).

Recursion per block (``A`` = zero-padded 3x3 mean over p at fixed delta; rho from the
self-variances K(x,x)(p,p) and K(x',x')(p+delta, p+delta), which are propagated for each input
on its own with the same windows; k1, k0 the arc-cosine maps of ``kernels.py``):

    K <- mask (w_var A(K) + b_var),    T <- mask w_var A(T) + K     (T_1 = K_1)
    K, T <- sqrt(K11 K22) k1(rho),  T k0(rho)                         (ReLU, unit scale)
    K, T <- pool(K), pool(T)                                          (16-term 2x2 x 2x2 mean)
    readout: NNGP = w_var mean_p K(p, p) + b_var,  NTK = w_var mean_p T(p, p) + NNGP

Cost: O(n m H W (2^depth)^2 ) time and memory, dominated by the first block (225 offsets x
H W per pair at 32x32, about 240x the no-pooling ``conv_kernels``). Pairs are processed in
chunks of rows of ``x1`` (``chunk_pairs`` pairs each); when a gradient is needed each chunk is
recomputed in the backward pass (activation checkpointing), so peak memory is one chunk's graph
(~14 MB per pair at 32x32, depth 3: ~1.5 GB at the default 100 pairs) whatever the batch. For
K(x, x) only the blocks on and above the diagonal are computed (about half the pairs).

Inputs are [N, C, H, W]; ``first_padding`` > 1 zero-pads the image by ``first_padding - 1``
first (the library's finite ConvNet uses padding 3 on 1-channel 28x28 images, 28 -> 32). The
default 1 is neural-tangents' SAME convolution; its ``AvgPool`` (VALID padding) floors odd sizes,
28 -> 14 -> 7 -> 3, as ``nn.AvgPool2d(2)``: a pool drops the last row/column of an odd map (the
pooled positions never read it, and a coarse partner P + D out of bounds is masked as usual).
The image must keep at least one position after ``depth`` pools.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .fc import arccos_maps


def _radii(depth: int) -> list[int]:
    return [2 ** (depth - l) - 1 for l in range(depth)]  # block l (0-based): 2^(depth-l) - 1


def _shift(v: Tensor, r: int) -> Tensor:
    """[N, H, W] -> [N, D, H, W]: entry (delta, p) = v[p + delta], 0 out of bounds;
    delta = (dy, dx) in [-r, r]^2, index (dy + r)(2r + 1) + (dx + r)."""
    n, h, w = v.shape
    k = 2 * r + 1
    return F.unfold(F.pad(v[:, None], (r,) * 4), k).reshape(n, k * k, h, w)


def _nbr_mean(k: Tensor) -> Tensor:
    """3x3 zero-padded mean over positions, each offset separately: [..., D, H, W]."""
    s = k.shape
    out = F.avg_pool2d(k.reshape(-1, *s[-3:]), 3, 1, 1, count_include_pad=True)
    return out.reshape(s)


def _pool(k: Tensor, rf: int, rc: int) -> Tensor:
    """2x2 / stride-2 average pool of both positions: [..., Df, H, W] -> [..., Dc, H/2, W/2].
    K'(P, P + D) = 1/16 sum_{a, b in {0,1}^2} K(2P + a, offset 2D + b - a)."""
    kf = 2 * rf + 1
    d = torch.arange(-rc, rc + 1, device=k.device)
    hc, wc = k.shape[-2] // 2, k.shape[-1] // 2  # floor: an odd last row/column is dropped
    out = None
    for ay in (0, 1):
        for ax in (0, 1):
            sl = k[..., ay:2 * hc:2, ax:2 * wc:2]
            for by in (0, 1):
                for bx in (0, 1):
                    iy, ix = 2 * d + by - ay + rf, 2 * d + bx - ax + rf
                    t = sl.index_select(-3, (iy[:, None] * kf + ix[None, :]).reshape(-1))
                    out = t if out is None else out + t
    return out / 16


def _relu(k: Tensor, v1: Tensor, v2: Tensor, mask: Tensor):
    """Arc-cosine maps with the variances v1 (at p) and v2 (at p + delta), broadcast to k;
    out-of-bounds partners (mask 0) stay 0."""
    e_act, e_der = arccos_maps(k, torch.sqrt((v1 * v2).clamp_min(1e-30)))
    return e_act * mask, e_der


def _propagate(k: Tensor, masks, radii, w_var, b_var, *, v1s=None, v2s=None, ntk=True):
    """k: input covariance [n, m, D_0, H, W]. Cross mode: ``v1s[l]`` [n, H, W] and ``v2s[l]``
    [m, D_l, H, W] are the (shifted) pre-ReLU self-variances. Self mode (``v1s`` None, m = 1):
    variances are read off offset 0 and returned. Returns (nngp [n, m], ntk or None, variances)."""
    th, seen = None, []
    for l, r in enumerate(radii):
        mask = masks[l]
        k_new = (w_var * _nbr_mean(k) + b_var) * mask
        th = k_new if th is None else (w_var * _nbr_mean(th)) * mask + k_new
        k = k_new
        if v1s is None:
            v = k[:, :, (k.shape[2] - 1) // 2]  # [n, 1, H, W]: offset (0, 0)
            seen.append(v[:, 0])
            v1, v2 = v[:, :, None], _shift(v[:, 0], r)[:, None]
        else:
            v1, v2 = v1s[l][:, None, None], v2s[l][None]
        k, der = _relu(k, v1, v2, mask)
        th = th * der if ntk else None
        r_next = radii[l + 1] if l + 1 < len(radii) else 0
        k = _pool(k, r, r_next)
        th = _pool(th, r, r_next) if ntk else None
        if l + 1 < len(radii):  # floor pooling of an odd map: a coarse partner P + D just out
            k = k * masks[l + 1]  # of bounds pooled the dropped row (non-zero): zero it
            th = th * masks[l + 1] if ntk else None
    nngp = w_var * k[:, :, 0].mean((-2, -1)) + b_var
    return nngp, (w_var * th[:, :, 0].mean((-2, -1)) + nngp) if ntk else None, seen


def _input_cov(x1: Tensor, x2: Tensor, r: int) -> Tensor:
    """<x1_p, x2_{p+delta}> / C: [n, m, D, H, W]."""
    n, c, h, w = x1.shape
    m, k = x2.shape[0], 2 * r + 1
    u2 = F.unfold(F.pad(x2, (r,) * 4), k).reshape(m, c, k * k, h * w)
    return torch.einsum("nch,mcdh->nmdh", x1.reshape(n, c, h * w), u2).reshape(n, m, k * k, h, w) / c


def _self_input_cov(x: Tensor, r: int) -> Tensor:
    n, c, h, w = x.shape
    k = 2 * r + 1
    u = F.unfold(F.pad(x, (r,) * 4), k).reshape(n, c, k * k, h * w)
    return torch.einsum("nch,ncdh->ndh", x.reshape(n, c, h * w), u).reshape(n, 1, k * k, h, w) / c


def conv_pool_kernels(x1: Tensor, x2: Tensor | None = None, *, depth: int = 3, w_var: float = 2.0,
                      b_var: float = 0.01, first_padding: int = 1, ntk: bool = True,
                      chunk_pairs: int = 100) -> tuple[Tensor, Tensor | None]:
    """Exact (NNGP, NTK) [n, m] of the pooled ReLU ConvNet (module docstring); NTK is None when
    ``ntk=False`` (cheaper). Differentiable in both inputs; ``chunk_pairs`` bounds memory only."""
    if depth < 1:
        raise ValueError(f"depth (conv blocks) must be >= 1, got {depth}")
    if first_padding < 1:
        raise ValueError(f"first_padding must be >= 1 (a 'same' or wider first conv), got {first_padding}")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    if x1.dim() != 4 or (x2 is not None and x2.shape[1:] != x1.shape[1:]):
        raise ValueError(f"conv kernels need [N, C, H, W] inputs of one shape, got "
                         f"{tuple(x1.shape)} and {None if x2 is None else tuple(x2.shape)}")
    sym = x2 is None or x2 is x1  # K(x, x): only blocks on and above the diagonal are computed
    x2 = x1 if x2 is None else x2
    if first_padding > 1:
        x1, x2 = (F.pad(x, (first_padding - 1,) * 4) for x in (x1, x2))
    h, w = x1.shape[-2:]
    sizes = [(h, w)]
    for _ in range(depth):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    if min(sizes[-1]) < 1:
        raise ValueError(f"padded image size {h}x{w} is too small for {depth} 2x2 pools")
    radii = _radii(depth)
    masks = [_shift(torch.ones(1, hl, wl, dtype=x1.dtype, device=x1.device), r)[0]
             for (hl, wl), r in zip(sizes, radii)]
    grad = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad)

    def run(fn, *args):
        if not grad:
            return fn(*args)
        from torch.utils.checkpoint import checkpoint
        return checkpoint(fn, *args, use_reentrant=False)

    def self_vars(x):
        return _propagate(_self_input_cov(x, radii[0]), masks, radii, w_var, b_var, ntk=False)[2]

    def cross(xa, xb, *vs):
        v1s, v2s = vs[:depth], vs[depth:]
        return _propagate(_input_cov(xa, xb, radii[0]), masks, radii, w_var, b_var,
                          v1s=v1s, v2s=v2s, ntk=ntk)[:2]

    rows = max(1, chunk_pairs // x2.shape[0])
    v2 = [_shift(v, r) for v, r in zip(run(self_vars, x2), radii)]
    n, m = x1.shape[0], x2.shape[0]
    outs = []
    for i in range(0, n, rows):
        xa, j = x1[i:i + rows], (i if sym else 0)
        out = run(cross, xa, x2[j:], *run(self_vars, xa), *[v[j:] for v in v2])
        outs.append([F.pad(o, (j, 0)) if o is not None else None for o in out])
    res = [torch.cat([o[t] for o in outs]) if outs[0][t] is not None else None for t in (0, 1)]
    if sym:  # rows i hold columns >= their block start; mirror the rest
        start = torch.arange(n, device=x1.device) // rows * rows
        upper = torch.arange(m, device=x1.device)[None, :] >= start[:, None]
        res = [torch.where(upper, k, k.T) if k is not None else None for k in res]
    return res[0], res[1]


def conv_pool_ntk(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return conv_pool_kernels(x1, x2, **kw)[1]


def conv_pool_nngp(x1: Tensor, x2: Tensor | None = None, **kw) -> Tensor:
    return conv_pool_kernels(x1, x2, ntk=False, **kw)[0]


class PooledConvKernel:
    """``kernel(x1, x2) -> [n, m]``: the pooled ConvNet's NTK (``ntk=True``) or NNGP. It chunks
    and checkpoints over pairs itself (``self_chunking``: callers need not add checkpoints)."""

    self_chunking = True

    def __init__(self, *, ntk: bool = True, **kw):
        self.ntk, self.kw = ntk, kw

    def __call__(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        nngp, ntk = conv_pool_kernels(x1, x2, ntk=self.ntk, **self.kw)
        return ntk if self.ntk else nngp
