"""Initialising a summary: from random real examples or noise, and the shared IPC checks."""
from __future__ import annotations

import torch

from ..data.base import RealData
from ..errors import IPCError
from .base import SYNSETS, SyntheticSet

INITS = ("real", "noise")


def check_ipc(real: RealData, ipc: int) -> None:
    if ipc < 1:
        raise IPCError(f"ipc must be >= 1, got {ipc}")
    counts = real.class_counts()
    small = [(real.info.class_names[c] if real.info.class_names else c, n)
             for c, n in enumerate(counts) if n < ipc]
    if small:
        raise IPCError(f"ipc {ipc} is larger than these classes of {real.info.name}'s training split: "
                       + ", ".join(f"{c} ({n} examples)" for c, n in small))


def init_from(real: RealData, ipc: int, *, kind: str = "pixels", init: str = "real",
              generator: torch.Generator, label_format: str = "hard", lr: float | None = None,
              storage: str | None = None, **kw) -> SyntheticSet:
    """A summary of ``kind`` with ``ipc`` stored examples per class, filled from ``init``;
    ``storage``: its storage precision (``synsets/storage.py``; None: float32)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    check_ipc(real, ipc)
    syn = SYNSETS.get(kind)(real.info, ipc=ipc, label_format=label_format, lr=lr, **kw)
    syn.init_data(real, init, generator) if hasattr(syn, "init_data") else _init_pixels(syn, real, init, generator)
    if real.zca is not None:
        syn.preprocess = dict(real.zca.state())
    if storage is not None:
        syn.set_storage(storage)
    return syn


@torch.no_grad()
def _init_pixels(syn, real: RealData, init: str, generator: torch.Generator) -> None:
    for c in range(real.info.num_classes):
        sl = syn.class_slice(c)
        n = sl.stop - sl.start
        if init == "real":
            syn.x[sl] = real.sample_class(c, n, generator).to(syn.x.device)
        else:
            syn.x[sl] = torch.randn(n, *real.info.shape, generator=generator).to(syn.x.device)
