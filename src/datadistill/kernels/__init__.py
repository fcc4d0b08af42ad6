"""Kernels for the meta-model-matching family and its KRR evaluation, in one registry.

``KERNELS`` maps a name to a factory ``(info, *, generator, device, depth, width) -> kernel`` where
``kernel(x1, x2) -> [n, m]``. Files by kind: ``fc.py`` (infinite-width fully connected NTK/NNGP,
arc-cosine recursions), ``conv.py`` (infinite-width convolutional kernels, the empirical NTK of a
finite ConvNet, random-feature NNGP), ``pool.py`` (the pooled convolutional kernel), ``krr.py``
(kernel ridge regression). The conv modules build networks, so they are imported when a factory
first needs them (the model zoo imports this package for its ∞-AE recommender).
"""
from __future__ import annotations

import functools

import torch

from ..registry import Registry
from ..runtime import make_generator
from .fc import fc_kernels

KERNELS: Registry = Registry("kernel")


#: the first convolution's padding of the infinite-width conv kernels: 1 = neural-tangents'
#: SAME padding, on every image (KIP's notebook and RFAD's ``DCConvNetKernel``). It used to be 3
#: on 1-channel images (28 -> 32, the field's finite ConvNet), which is not the published kernel.
FIRST_PADDING = 1


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
    from .conv import conv_kernels
    return _pick(1, functools.partial(conv_kernels, depth=depth or 3, first_padding=FIRST_PADDING))


@KERNELS.register("conv_nngp")
def _conv_nngp(info, *, depth=None, width=None, generator=None, device=None):
    from .conv import conv_kernels
    return _pick(0, functools.partial(conv_kernels, depth=depth or 3, first_padding=FIRST_PADDING))


@KERNELS.register("conv_pool_ntk")
def _conv_pool_ntk(info, *, depth=None, width=None, generator=None, device=None):
    from .pool import PooledConvKernel
    return PooledConvKernel(ntk=True, depth=depth or 3, first_padding=FIRST_PADDING)


@KERNELS.register("conv_pool_nngp")
def _conv_pool_nngp(info, *, depth=None, width=None, generator=None, device=None):
    from .pool import PooledConvKernel
    return PooledConvKernel(ntk=False, depth=depth or 3, first_padding=FIRST_PADDING)


@KERNELS.register("convnet_entk")
def _convnet_entk(info, *, depth=None, width=None, generator, device=None):
    from .conv import EmpiricalNTK
    return EmpiricalNTK.for_model("convnet", info, generator=generator, device=device,
                                  depth=depth or 3, width=width or 64)


@KERNELS.register("rf_nngp")
def _rf_nngp(info, *, depth=None, width=None, generator, device=None, n_models: int = 8):
    from .conv import RandomFeatureNNGP
    return RandomFeatureNNGP(info, n_models=n_models, width=width or 256, generator=generator,
                             device=device)


def make_kernel(name: str, info, *, generator: torch.Generator | None = None, device=None,
                depth: int | None = None, width: int | None = None, **kw):
    """Kernel ``name`` for data ``info`` (random kernels draw from ``generator``)."""
    gen = generator if generator is not None else make_generator(0)
    return KERNELS.get(name)(info, depth=depth, width=width, generator=gen, device=device, **kw)
