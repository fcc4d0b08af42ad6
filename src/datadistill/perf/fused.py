"""Fused CPU kernels for the ConvNet's blocks.

Chosen by ``RunOptions.fused`` (auto: on for CPU runs where they build; the CLI's
``--fused``). Kernels in a small C++ extension (``csrc/norm_relu_pool.cpp``):

* ``norm_relu_pool``: ``GroupNorm(C, C) -> ReLU -> AvgPool2d(2)``, reading each image's
  activations from memory once per direction instead of in several full passes;
* ``conv_norm_relu_pool``: the first block with its convolution (3x3, stride 1, 1-4 input
  channels). The convolution's output, the network's largest activation (52 MB per 100
  Fashion-MNIST images at width 128), is computed per image in a cache-resident buffer,
  normalised and pooled there and recomputed in the backward pass: it never goes to memory.

On the Fashion-MNIST ConvNet (one thread, batch 100) a training step takes ~134 ms instead of
~169 (compiled) or ~213 (eager); in bf16 ~75 instead of ~95 — the remaining time is almost all
the 128-channel convolutions (BENCHMARKS.md, issue 3's speed section).

* Built on first use with the system C++ compiler (the one ``torch.compile`` also needs) and
  ninja, then cached (``build_dir()``), keyed by the source, torch version and CPU;
  ``build()`` raises ``RuntimeError`` with the compiler's message when that fails — nothing
  falls back silently.
* First-order backward is the fused kernel. When a graph of the backward is requested
  (``create_graph=True``: MTT's and TESLA's unrolls, gradient matching's synthetic side) the
  backward kernel runs as a differentiable op whose own backward is a third kernel, the
  **double backward** of norm/ReLU/pool (two passes per image: its reductions, then the
  gradients w.r.t. the incoming gradient, the input and the norm weight); a third derivative
  runs the same formula in differentiable torch ops. The first block's graph-building backward
  materialises its convolution's output (im2col + a 1x1 convolution, channels-last) and uses
  that kernel pair. The 128-channel convolutions take ``fused_conv.conv2d``, whose double backward
  computes its weight-shaped term with oneDNN's weight-gradient kernel (PyTorch's computes it as
  a convolution whose "kernel" is an activation map, far slower on CPU).
* Works in eager mode and under ``torch.compile`` (custom ops with fake implementations). Inside
  ``torch.func`` transforms (``grad``, ``vmap``) the ConvNet uses the reference path: the
  kernels cannot be batched, and a compiled ``grad`` of ``grad`` cannot differentiate through an
  opaque kernel.
* float32, float64 and bfloat16 activations (bf16: math in float32, as autocast runs the
  reference norm; the first block computes in float32 and hands bf16 on); CPU tensors only.
* Measured (BENCHMARKS.md): an MTT iteration at IPC 10, syn_steps 20, takes 4.7 s instead of
  9.1–10.2 (82 % of the machine's fp32 convolution throughput, 2 threads), TESLA's 8.2 s
  instead of 21.7.
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import KernelBuildError
from .fused_conv import _Conv2dBackward

_SRC = Path(__file__).resolve().parent / "csrc" / "norm_relu_pool.cpp"
_lock = threading.Lock()
_ext = None
_error: str | None = None


def _cpu_id() -> str:
    """The CPU's feature flags (the kernel is built with -march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_dir() -> Path:
    """``$DATADISTILL_KERNELS`` (default ``$DATADISTILL_CACHE/kernels``, i.e.
    ~/.cache/datadistill/kernels), one folder per source, torch version and CPU."""
    key = hashlib.sha1(_SRC.read_bytes() + torch.__version__.encode() + _cpu_id().encode())
    root = os.environ.get("DATADISTILL_KERNELS") or os.path.join(
        os.environ.get("DATADISTILL_CACHE", "~/.cache/datadistill"), "kernels")
    return Path(root).expanduser() / f"norm_relu_pool_{key.hexdigest()[:16]}"


def build(verbose: bool = False):
    """The compiled extension (built once per machine and cached); ``RuntimeError`` if the
    C++ toolchain cannot build it."""
    global _ext, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        if _error is not None:
            raise KernelBuildError(_error)
        from torch.utils import cpp_extension
        d = build_dir()
        d.mkdir(parents=True, exist_ok=True)
        flags = ["-O3", "-fopenmp"] + (["-march=native"] if platform.machine() in
                                       ("x86_64", "AMD64", "aarch64") else [])
        try:
            _ext = cpp_extension.load(name="datadistill_norm_relu_pool", sources=[str(_SRC)],
                                      extra_cflags=flags, extra_ldflags=["-fopenmp"],
                                      build_directory=str(d), verbose=verbose)
        except Exception as e:  # compiler missing, ninja missing, build error
            _error = (f"could not build the fused CPU kernel ({type(e).__name__}: {e}). It needs "
                      f"a C++ compiler and ninja (Debian: apt-get install g++ ninja-build, or "
                      f"pip install ninja); run without fused kernels otherwise")
            raise KernelBuildError(_error) from e
    return _ext


def available() -> bool:
    """Whether the kernel builds (or is built) on this machine."""
    try:
        build()
        return True
    except KernelBuildError:
        return False


def reference(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The composition the kernel computes (what ``ConvNet`` runs without it)."""
    y = F.group_norm(x, x.shape[1], weight, bias, eps)
    return F.avg_pool2d(F.relu(y), 2)


# -- custom ops: opaque to torch.compile, with shapes for tracing -------------------------------
@torch.library.custom_op("datadistill::norm_relu_pool_fwd", mutates_args=())
def _fwd(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    out, mean, rstd = build().forward(x, weight, bias, eps)
    return out, mean, rstd


def _math_dtype(dt: torch.dtype) -> torch.dtype:
    return torch.float32 if dt == torch.bfloat16 else dt


@_fwd.register_fake
def _(x, weight, bias, eps):
    n, c, h, w = x.shape
    out = x.new_empty((n, c, h // 2, w // 2)).contiguous(memory_format=torch.channels_last)
    md = _math_dtype(x.dtype)
    return out, x.new_empty((n, c), dtype=md), x.new_empty((n, c), dtype=md)


@torch.library.custom_op("datadistill::norm_relu_pool_bwd", mutates_args=())
def _bwd(grad_out: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor,
         bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    gx, gw, gb = build().backward(grad_out, x, mean, rstd, weight, bias)
    return gx, gw.to(weight.dtype), gb.to(bias.dtype)


@_bwd.register_fake
def _(grad_out, x, mean, rstd, weight, bias):
    return (torch.empty_like(x, memory_format=torch.channels_last), weight.new_empty(weight.shape),
            bias.new_empty(bias.shape))


class _NormReluPool(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, eps):
        return _fwd(x, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        ctx.save_for_backward(x, weight, bias, output[1], output[2])
        ctx.eps = eps
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx, grad_out, _gm, _gr):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():
            # a graph of the backward is wanted (create_graph: MTT's unroll, gradient matching's
            # synthetic side): the backward kernel as a differentiable op, whose own backward is
            # the double-backward kernel
            return (*_NormReluPoolBackward.apply(grad_out, x, weight, bias, mean, rstd, ctx.eps),
                    None)
        gx, gw, gb = _bwd(grad_out, x, mean, rstd, weight, bias)
        return gx, gw, gb, None


@torch.library.custom_op("datadistill::norm_relu_pool_dbwd", mutates_args=())
def _dbwd(grad_out: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor, bias: Tensor,
          v_x: Tensor, v_w: Tensor, v_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dg, dx, dw = build().double_backward(grad_out, x, mean, rstd, weight, bias, v_x, v_w, v_b)
    return dg.to(grad_out.dtype), dx, dw.to(weight.dtype)


@_dbwd.register_fake
def _(grad_out, x, mean, rstd, weight, bias, v_x, v_w, v_b):
    return (torch.empty_like(grad_out, memory_format=torch.channels_last),
            torch.empty_like(x, memory_format=torch.channels_last), weight.new_empty(weight.shape))


class _NormReluPoolBackward(torch.autograd.Function):
    """The first-order backward ``(g, x, w, b) -> (dL/dx, dL/dw, dL/db)`` as a differentiable
    op: forward = the backward kernel, backward = the double-backward kernel (a third
    derivative, rarely wanted, runs as differentiable torch ops)."""

    @staticmethod
    def forward(grad_out, x, weight, bias, mean, rstd, eps):
        return _bwd(grad_out, x, mean, rstd, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_out, x, weight, bias, mean, rstd, eps = inputs
        ctx.save_for_backward(grad_out, x, weight, bias, mean, rstd)
        ctx.eps = eps
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, v_x, v_w, v_b):
        g, x, weight, bias, mean, rstd = ctx.saved_tensors
        v_x = torch.zeros_like(x) if v_x is None else v_x
        v_w = torch.zeros_like(weight) if v_w is None else v_w
        v_b = torch.zeros_like(bias) if v_b is None else v_b
        if torch.is_grad_enabled():  # a graph of this backward too: differentiable torch ops
            dg, dx, dw = _differentiable_double_backward(g, x, weight, bias, ctx.eps, v_x, v_w, v_b)
        else:
            dg, dx, dw = _dbwd(g, x, mean, rstd, weight, bias, v_x, v_w, v_b)
        return dg, dx, dw, None, None, None, None


def _differentiable_double_backward(g: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                                    eps: float, v_x: Tensor, v_w: Tensor, v_b: Tensor):
    """What the double-backward kernel computes (see ``csrc``), in differentiable torch ops:
    the gradients of ``<v_x, dL/dx> + <v_w, dL/dw> + <v_b, dL/db>`` with respect to ``g``,
    ``x`` and ``w`` (``b`` acts only through the ReLU mask: zero almost everywhere)."""
    dt = torch.promote_types(x.dtype, weight.dtype)
    xf, gf, vx = x.to(dt), g.to(dt), v_x.to(dt)
    h, wd = x.shape[2], x.shape[3]
    hw = h * wd
    var, mean = torch.var_mean(xf, dim=(2, 3), correction=0, keepdim=True)
    r = torch.rsqrt(var + eps)
    xh = (xf - mean) * r
    w, b = weight.to(dt).view(1, -1, 1, 1), bias.to(dt).view(1, -1, 1, 1)
    vw, vb = v_w.to(dt).view(1, -1, 1, 1), v_b.to(dt).view(1, -1, 1, 1)
    mask = (xh * w + b) > 0
    up = gf.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) * 0.25
    if up.shape[2] != h or up.shape[3] != wd:
        up = F.pad(up, (0, wd - up.shape[3], 0, h - up.shape[2]))
    gn = up * mask

    def s(t):
        return t.sum(dim=(2, 3), keepdim=True)

    ab, axb, sag, sg, sxg = s(vx) / hw, s(vx * xh) / hw, s(vx * gn), s(gn), s(xh * gn)
    a_, b_, s1 = axb * hw, w * sxg, w * (sag - ab * sg)
    dw = (r * (sag - ab * sg - axb * sxg)).sum(dim=(0, 2, 3))
    dg = F.avg_pool2d(mask * (w * r * vx + xh * (vw - w * r * axb) + (vb - w * r * ab)), 2)
    k = r * r / hw
    dx = (-k * b_) * vx + (-k * a_ * w + vw * r) * gn \
        + (k * (3 * b_ * axb - s1) - vw * r * sxg / hw) * xh \
        + k * (b_ * ab + a_ * w * sg / hw) - vw * r * sg / hw
    return dg.to(g.dtype), dx.to(x.dtype), dw.to(weight.dtype)


# -- the first block with its convolution --------------------------------------------------------
def conv_reference(x: Tensor, conv_weight: Tensor, conv_bias: Tensor, padding: int,
                   weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``conv3x3 (stride 1, zero padding) -> instance norm -> ReLU -> 2x2 avg pool``."""
    return reference(F.conv2d(x, conv_weight, conv_bias, padding=padding), weight, bias, eps)


@torch.library.custom_op("datadistill::conv_norm_relu_pool_fwd", mutates_args=())
def _stem_fwd(x: Tensor, conv_weight: Tensor, conv_bias: Tensor, padding: int, weight: Tensor,
              bias: Tensor, eps: float, out_bf16: bool) -> tuple[Tensor, Tensor, Tensor]:
    out, mean, rstd = build().stem_forward(x, conv_weight, conv_bias, padding, weight, bias, eps,
                                           out_bf16)
    return out, mean, rstd


@_stem_fwd.register_fake
def _(x, conv_weight, conv_bias, padding, weight, bias, eps, out_bf16):
    n, c = x.shape[0], conv_weight.shape[0]
    h, w = x.shape[2] + 2 * padding - 2, x.shape[3] + 2 * padding - 2
    out = x.new_empty((n, c, h // 2, w // 2), dtype=torch.bfloat16 if out_bf16 else x.dtype)
    out = out.contiguous(memory_format=torch.channels_last)
    return out, x.new_empty((n, c)), x.new_empty((n, c))


@torch.library.custom_op("datadistill::conv_norm_relu_pool_bwd", mutates_args=())
def _stem_bwd(grad_out: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, conv_weight: Tensor,
              conv_bias: Tensor, padding: int, weight: Tensor, bias: Tensor,
              input_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    gx, gcw, gcb, gw, gb = build().stem_backward(grad_out, x, mean, rstd, conv_weight, conv_bias,
                                                 padding, weight, bias, input_grad)
    return (gx, gcw.to(conv_weight.dtype), gcb.to(conv_bias.dtype), gw.to(weight.dtype),
            gb.to(bias.dtype))


@_stem_bwd.register_fake
def _(grad_out, x, mean, rstd, conv_weight, conv_bias, padding, weight, bias, input_grad):
    gx = torch.empty_like(x, memory_format=torch.contiguous_format) if input_grad else \
        x.new_empty((0,))
    return (gx, conv_weight.new_empty(conv_weight.shape), conv_bias.new_empty(conv_bias.shape),
            weight.new_empty(weight.shape), bias.new_empty(bias.shape))


class _ConvNormReluPool(torch.autograd.Function):
    @staticmethod
    def forward(x, conv_weight, conv_bias, padding, weight, bias, eps, out_bf16):
        return _stem_fwd(x, conv_weight, conv_bias, padding, weight, bias, eps, out_bf16)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, conv_weight, conv_bias, padding, weight, bias, eps, _ = inputs
        ctx.save_for_backward(x, conv_weight, conv_bias, weight, bias, output[1], output[2])
        ctx.padding, ctx.eps = padding, eps
        ctx.mark_non_differentiable(output[1], output[2])

    @staticmethod
    def backward(ctx, grad_out, _gm, _gr):
        x, cw, cb, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the backward: differentiable ops
            with torch.autocast("cpu", enabled=False):  # the forward ran in x's dtype
                return _stem_differentiable_backward(ctx, grad_out, x, cw, cb, weight, bias,
                                                     mean, rstd)
        gx, gcw, gcb, gw, gb = _stem_bwd(grad_out, x, mean, rstd, cw, cb, ctx.padding, weight,
                                         bias, bool(ctx.needs_input_grad[0]))
        return (gx if ctx.needs_input_grad[0] else None), gcw, gcb, None, gw, gb, None, None


def _stem_differentiable_backward(ctx, grad_out, x, cw, cb, weight, bias, mean, rstd):
    """The stem's backward with a graph. The convolution is written as im2col + a 1x1
    convolution on channels-last memory (as ``GrayStemConv2d``), so that its output, its
    gradient and their second-order terms stay channels-last, the layout of the kernels, with
    no conversion copies; the norm/ReLU/pool part is the backward kernel, differentiated by the
    double-backward kernel; the convolution's gradients are differentiable torch ops."""
    n, cin, h, w = x.shape
    c, k, p = cw.shape[0], cin * 9, ctx.padding
    hc, wc = h + 2 * p - 2, w + 2 * p - 2
    cols = F.unfold(x, 3, padding=p).view(n, k, hc, wc).contiguous(
        memory_format=torch.channels_last)
    w1 = cw.reshape(c, k, 1, 1)
    z = F.conv2d(cols, w1, cb)
    gz, gw, gb = _NormReluPoolBackward.apply(grad_out, z, weight, bias, mean, rstd, ctx.eps)
    # the 1x1 convolution's weight (and input) gradient in one call on the channels-last
    # tensors (torch.nn.grad.conv2d_input would convert gz to contiguous memory)
    gcols, gw1, _ = _Conv2dBackward.apply(gz, cols, w1, 0,
                                          (bool(ctx.needs_input_grad[0]), True, False))
    gcw = gw1.reshape(cw.shape)
    gx = None
    if ctx.needs_input_grad[0]:
        gx = F.fold(gcols.reshape(n, k, hc * wc), (h, w), 3, padding=p)
    # the conv bias feeds an instance norm: dL/db0 = sum(gz) is identically zero (each image's
    # and channel's gz has zero mean), and so are all its derivatives
    return gx, gcw, torch.zeros_like(cb), None, gw, gb, None, None


def conv_norm_relu_pool(x: Tensor, conv_weight: Tensor, conv_bias: Tensor, padding: int,
                        weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """The ConvNet's first block in one kernel: ``conv_reference`` (3x3 convolution with stride
    1 and zero ``padding``, then instance norm, ReLU, 2x2 average pooling). The convolution's
    output, the network's largest activation, never goes to memory: it is computed per image in
    a cache-resident buffer, and recomputed in the backward pass. ``x`` is ``[N, Cin, H, W]``
    float32/float64 on the CPU (under bf16 autocast this block runs in float32); the output is
    channels-last, and bfloat16 under CPU bf16 autocast (the next convolution's input type).
    For a first layer only: its cost grows with ``Cin``."""
    if x.dim() != 4 or conv_weight.shape[2:] != (3, 3) or conv_weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv_norm_relu_pool needs x [N, Cin, H, W] and a [C, Cin, 3, 3] "
                         f"weight, got {tuple(x.shape)} and {tuple(conv_weight.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"conv_norm_relu_pool supports float32 and float64, not {x.dtype}")
    if torch._C._functorch.maybe_current_level() is not None:
        return conv_reference(x, conv_weight, conv_bias, padding, weight, bias, eps)
    dt = x.dtype
    out_bf16 = (dt == torch.float32 and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    return _ConvNormReluPool.apply(x, conv_weight.to(dt), conv_bias.to(dt), int(padding),
                                   weight.to(dt), bias.to(dt), float(eps), out_bf16)[0]


def norm_relu_pool(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """``avg_pool2d(relu(group_norm(x, C, weight, bias, eps)), 2)`` by the fused kernel; the
    output is channels-last. ``x`` is ``[N, C, H, W]`` (H, W >= 2) on the CPU."""
    if x.dim() != 4 or x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"norm_relu_pool needs [N, C, H>=2, W>=2], got {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise ValueError("norm_relu_pool is a CPU kernel")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"norm_relu_pool supports float32, float64 and bfloat16, not {x.dtype}")
    if torch._C._functorch.maybe_current_level() is not None:
        return reference(x, weight, bias, eps)  # inside torch.func transforms (see applicable)
    return _NormReluPool.apply(x, weight, bias, float(eps))[0]


def applicable(x: Tensor) -> bool:
    """Whether ``x`` can take the fused path (otherwise the caller uses the reference): a CPU
    floating-point image batch, outside ``torch.func`` transforms. (Under ``vmap`` the kernel
    cannot batch; under ``grad`` its backward would run in differentiable ops anyway, and a
    compiled ``grad`` of ``grad`` could not see through the kernel: the reference is used.)"""
    return (x.device.type == "cpu" and x.dim() == 4 and x.shape[-2] >= 2 and x.shape[-1] >= 2
            and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and torch._C._functorch.maybe_current_level() is None)
