"""Baselines every summary is compared with: subsets of the real data chosen without learning.

One entry point for every modality, ``select_baseline(real, method, **budget)``: images take
``ipc`` (``images.py``: random / herding / k-center in a trained network's feature space), graphs
``ratio`` of the nodes or ``ipc`` graphs per class (``graphs.py``), recommender data ``users``
(``recsys.py``: random / active / herding users). The CLI's ``datadistill baseline`` calls it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .images import CORESETS, select_coreset  # noqa: F401
from . import tabular as _tabular, text as _text  # noqa: F401,E402 (register kmeans, ctgan)


def names(modality: str = "image") -> list[str]:
    """The baseline methods available for a modality."""
    if modality == "recsys":
        from .recsys import USER_SELECTIONS
        return USER_SELECTIONS.names()
    return CORESETS.names()


def select_baseline(real, method: str = "random", *, ipc: int | None = None,
                    ratio: float | None = None, users: int | None = None, seed: int = 0,
                    model: str | None = None, device=None,
                    log: Callable[[str], None] | None = None, **kw: Any):
    """A summary of real examples chosen by ``method`` within the budget of ``real``'s modality."""
    modality = real.info.modality
    if modality == "graph":
        from .graphs import select_graph_coreset
        if users is not None:
            raise ConfigError("graph baselines take --ratio (nodes) or --ipc (graphs), not --users")
        return select_graph_coreset(real, method, ratio=ratio, ipc=ipc, seed=seed,
                                    device=device, **({"model": model} if model else {}), **kw)
    if modality == "recsys":
        from .recsys import select_users
        if users is None or ipc is not None or ratio is not None:
            raise ConfigError("recommender baselines take --users (how many real users to keep)")
        return select_users(real, users, method, seed=seed, **kw)
    if ipc is None or ratio is not None or users is not None:
        raise ConfigError(f"{modality} baselines take --ipc (examples per class)")
    if modality == "text":
        return _text.select_text(real, ipc, method, seed=seed, log=log)
    if modality == "tabular":
        return _tabular.select_tabular(real, ipc, method, seed=seed, log=log)
    return select_coreset(real, ipc, method, seed=seed, model=model or "convnet", device=device,
                          log=log, **kw)
