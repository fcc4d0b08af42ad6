"""A 2-D convolution (stride 1, no dilation or groups) with a fast double backward on CPU.

Part of the fused-kernel path (``models/fused.py``): unrolls such as MTT's differentiate the
convolution's backward, and PyTorch's double backward computes one of its terms (the
weight-shaped gradient of the input gradient) as a convolution whose "kernel" is an activation
map, which oneDNN runs at a fraction of its usual speed; ``conv2d`` computes that term with the
regular weight-gradient kernel. The same function and derivatives as ``F.conv2d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _conv_bwd(grad_out: Tensor, x: Tensor, weight: Tensor, padding: int, mask: tuple):
    """``aten.convolution_backward`` for a stride-1, ungrouped convolution (what each entry of
    ``mask`` = (input, weight, bias) asks for, else ``None``)."""
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, [weight.shape[0]] if mask[2] else None, [1, 1], [padding, padding],
        [1, 1], False, [0, 0], 1, list(mask))


class _Conv2d(torch.autograd.Function):
    """``F.conv2d`` (stride 1, no groups) whose backward is a differentiable op with a direct
    backward (``_Conv2dBackward``). PyTorch's own double backward of a convolution computes
    one of its terms (the weight-shaped gradient of the input gradient) as a convolution whose
    "kernel" is an activation map (16x16 in the ConvNet's second block), which oneDNN runs at a
    fraction of its usual speed; here that term is a regular weight-gradient kernel."""

    @staticmethod
    def forward(x, weight, bias, padding):
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2])
        with torch.autocast("cpu", enabled=False):
            gx, gw, gb = _Conv2dBackward.apply(grad_out, x, weight, ctx.padding, need)
        return gx, gw, gb, None


class _Conv2dBackward(torch.autograd.Function):
    """``(g, x, w) -> (dL/dx, dL/dw, dL/db)`` of a convolution; its backward, for the incoming
    (vx, vw, vb): d/dg = conv(vx, w) + conv(x, vw) + vb, d/dx = input-gradient of g through vw,
    d/dw = weight-gradient of vx against g. Under grad mode (a third derivative) the same calls
    are recorded by autograd."""

    @staticmethod
    def forward(grad_out, x, weight, padding, need):
        return _conv_bwd(grad_out, x, weight, padding, need)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_out, x, weight, padding, need = inputs
        ctx.save_for_backward(grad_out, x, weight)
        ctx.padding, ctx.need = padding, need
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not zeros

    @staticmethod
    def backward(ctx, v_x, v_w, v_b):
        g, x, weight = ctx.saved_tensors
        p = ctx.padding
        want_g, want_x, want_w = ctx.needs_input_grad[:3]
        dg = dx = dw = None
        with torch.autocast("cpu", enabled=False):
            if want_g:
                if v_x is not None:
                    dg = F.conv2d(v_x, weight, None, padding=p)
                if v_w is not None:
                    t = F.conv2d(x, v_w, v_b, padding=p)
                    dg = t if dg is None else dg + t
                elif v_b is not None:
                    t = v_b.view(1, -1, 1, 1).expand_as(g)
                    dg = t if dg is None else dg + t
            if want_x and v_w is not None:
                dx = _conv_bwd(g, x, v_w, p, (True, False, False))[0]
            if want_w and v_x is not None:
                dw = _conv_bwd(g, v_x, weight, p, (False, True, False))[1]
        return dg, dx, dw, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, no dilation or groups) with
    the direct double backward of ``_Conv2dBackward``; under CPU autocast it runs in the
    autocast type, as ``F.conv2d`` would."""
    if torch._C._functorch.maybe_current_level() is not None:
        return F.conv2d(x, weight, bias, padding=padding)
    if torch.is_autocast_enabled("cpu"):
        dt = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _Conv2d.apply(x, weight, bias, int(padding))
    return _Conv2d.apply(x, weight, bias, int(padding))
