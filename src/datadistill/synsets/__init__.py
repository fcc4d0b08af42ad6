"""Synthetic summary parametrizations (``SYNSETS`` registry) and their initialisation."""
from __future__ import annotations

import importlib
import pkgutil

from .base import SYNSETS, SummaryFormatError, SyntheticSet  # noqa: F401
from .init import INITS, IPCError, check_ipc, init_from  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "init"):
        importlib.import_module(f"{__name__}.{_m.name}")

load_summary = SyntheticSet.load
