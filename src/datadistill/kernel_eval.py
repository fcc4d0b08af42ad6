"""Kernels by name, and the kernel-ridge-regression evaluation of a summary.

``KERNELS`` maps a name to a factory ``(info, *, generator, device, depth, width) -> kernel``
where ``kernel(x1, x2) -> [n, m]``. ``evaluate_krr`` is the second evaluation of the kernel
methods (KIP, RFAD): KRR with the summary as support set, predictions on the real test split,
accuracy of the arg-max. It is reported beside (never instead of) the finite-network protocol.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from .kernels import fc_kernels
from .kernels_conv import EmpiricalNTK, RandomFeatureNNGP, conv_kernels
from .kernels_pool import PooledConvKernel
from .krr import krr_predict_batched
from .registry import Registry
from .runtime import make_generator, resolve_device

KERNELS: Registry = Registry("kernel")


def _first_padding(info) -> int:
    return 3 if info.channels == 1 else 1  # as the field's ConvNet (28 -> 32 on 1 channel)


def _pick(which: int, fn):
    return lambda x1, x2=None: fn(x1, x2)[which]


@KERNELS.register("fc_ntk")
def _fc_ntk(info, *, depth=None, width=None, generator=None, device=None):
    return _pick(1, functools.partial(fc_kernels, depth=depth or 1))


@KERNELS.register("fc_nngp")
def _fc_nngp(info, *, depth=None, width=None, generator=None, device=None):
    return _pick(0, functools.partial(fc_kernels, depth=depth or 1))


@KERNELS.register("conv_ntk")
def _conv_ntk(info, *, depth=None, width=None, generator=None, device=None):
    return _pick(1, functools.partial(conv_kernels, depth=depth or 3, first_padding=_first_padding(info)))


@KERNELS.register("conv_nngp")
def _conv_nngp(info, *, depth=None, width=None, generator=None, device=None):
    return _pick(0, functools.partial(conv_kernels, depth=depth or 3, first_padding=_first_padding(info)))


@KERNELS.register("conv_pool_ntk")
def _conv_pool_ntk(info, *, depth=None, width=None, generator=None, device=None):
    return PooledConvKernel(ntk=True, depth=depth or 3, first_padding=_first_padding(info))


@KERNELS.register("conv_pool_nngp")
def _conv_pool_nngp(info, *, depth=None, width=None, generator=None, device=None):
    return PooledConvKernel(ntk=False, depth=depth or 3, first_padding=_first_padding(info))


@KERNELS.register("convnet_entk")
def _convnet_entk(info, *, depth=None, width=None, generator, device=None):
    return EmpiricalNTK.for_model("convnet", info, generator=generator, device=device,
                                  depth=depth or 3, width=width or 64)


@KERNELS.register("rf_nngp")
def _rf_nngp(info, *, depth=None, width=None, generator, device=None, n_models: int = 8):
    return RandomFeatureNNGP(info, n_models=n_models, width=width or 128, generator=generator,
                             device=device)


def make_kernel(name: str, info, *, generator: torch.Generator | None = None, device=None,
                depth: int | None = None, width: int | None = None, **kw):
    """Kernel ``name`` for data ``info`` (random kernels draw from ``generator``)."""
    gen = generator if generator is not None else make_generator(0)
    return KERNELS.get(name)(info, depth=depth, width=width, generator=gen, device=device, **kw)


def regression_targets(syn) -> torch.Tensor:
    """The summary's labels as KRR targets: regression labels as stored, soft labels as
    probabilities, hard labels one-hot."""
    _, y = syn.materialize()
    if syn.label_format == "regression":
        return y.detach().float()
    if syn.label_format == "soft":
        return F.softmax(y.detach().float(), dim=-1)
    return F.one_hot(y, syn.info.num_classes).float()


@torch.no_grad()
def evaluate_krr(syn, real, kernel: str | None = None, *, reg: float | None = None,
                 depth: int | None = None, width: int | None = None, seed: int = 0,
                 batch: int = 256, limit: int | None = None, device=None) -> dict[str, Any]:
    """Test accuracy (%) of KRR on the summary with ``kernel`` (default: the kernel the summary
    was distilled with, from its metadata) and regularizer ``reg`` (trace-scaled). ``limit``
    uses only the first ``limit`` test examples (a fixed subset, for expensive kernels)."""
    from .evaluate import matched_test_split

    params = syn.meta.get("params") or {}
    kernel = kernel or params.get("kernel")
    if kernel is None:
        raise ValueError("no kernel given and the summary's metadata names none; pass kernel=")
    reg = params.get("reg", 1e-6) if reg is None else reg
    depth = depth if depth is not None else params.get("kernel_depth")
    width = width if width is not None else params.get("kernel_width")
    dev = resolve_device(device)
    test = matched_test_split(syn, real)
    if limit is not None:
        test = type(test)(test.x[:limit], test.y[:limit])
    test = test.to(dev)
    x_s, _ = syn.materialize()
    x_s, y_s = x_s.detach().to(dev).float(), regression_targets(syn).to(dev)
    k = make_kernel(kernel, syn.info, generator=make_generator(seed), device=dev, depth=depth,
                    width=width)
    kern64 = lambda a, b: k(a, b).double()  # noqa: E731  (solve in float64: lambda is ~1e-6)
    pred = krr_predict_batched(kern64, x_s, y_s.double(), test.x.float(), reg, batch=batch)
    acc = 100.0 * float((pred.argmax(1) == test.y).float().mean())
    return {"kernel": kernel, "depth": depth, "width": width, "reg": reg, "seed": seed,
            "accuracy": acc, "num_support": int(x_s.shape[0]), "num_test": len(test)}
