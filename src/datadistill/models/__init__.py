"""Model zoo: a registry of networks built from ``DataInfo``; each exposes ``embed(x)``
(features before the classifier), ``feature_dim`` and works with ``torch.func.functional_call``.
"""
from __future__ import annotations

import importlib
import pkgutil

import torch
from torch import nn

from ..registry import Registry

MODELS: Registry = Registry("model")

from .layers import init_parameters  # noqa: E402

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "layers":
        importlib.import_module(f"{__name__}.{_m.name}")


def create_model(name: str, info, *, generator: torch.Generator | None = None,
                 device=None, fused: bool = False, **kw) -> nn.Module:
    """Build model ``name`` for dataset ``info``; initialised from ``generator`` when given.
    ``fused`` lets the modules that have fused CPU kernels (``perf/fused.py``; the ConvNet's
    blocks) use them: the same function and state dict, faster (a ``RunOptions`` setting)."""
    model = MODELS.get(name)(info, **kw)
    if generator is not None:
        init_parameters(model, generator)
    if fused:
        for m in model.modules():
            if hasattr(m, "fused"):
                m.fused = True
    return model.to(device) if device is not None else model


def model_modality(name: str) -> str:
    """The data modality a registered model consumes (class attribute ``modality``; images by
    default)."""
    obj = MODELS.get(name)
    cls = getattr(obj, "func", obj)  # registrations with bound arguments are partials
    return getattr(cls, "modality", "image")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
