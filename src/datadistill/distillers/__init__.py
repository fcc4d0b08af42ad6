"""Distillation methods: one file per method, each registered by name in ``DISTILLERS``."""
from __future__ import annotations

import importlib
import pkgutil

from .base import DISTILLERS, ConfigError, Distiller, NonFiniteLossError  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def create_distiller(name: str, preset: str | None = None, **params) -> Distiller:
    """Method ``name`` from a named preset plus parameter overrides (unknown keys rejected)."""
    return DISTILLERS.get(name).from_config(preset, **params)


from ..apps import privacy as _privacy  # noqa: E402,F401 (registers dp-dm and dp-dc, apps/privacy.py)
