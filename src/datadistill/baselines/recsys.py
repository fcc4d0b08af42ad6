"""Subset baselines for recommender summaries: keep ``n`` real users' training rows.

* ``random``  — n users drawn uniformly (seeded).
* ``active``  — the n users with the most training interactions.
* ``herding`` — Welling's herding (``coresets.select_herding``) on user vectors in the item-
  embedding space: a user is the mean of its items' embeddings, the embeddings being the top
  ``factors`` right singular vectors of the training matrix scaled by their singular values.

Each returns a ``UserRowSet``, so it saves, loads and evaluates like a distilled summary.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError, DataFormatError
from ..data.recsys import RecsysData
from ..registry import Registry
from ..runtime import make_generator
from ..synsets.users import UserRowSet
from .images import select_herding

USER_SELECTIONS: Registry = Registry("user selection")


@USER_SELECTIONS.register("random")
def select_random_users(real: RecsysData, n: int, generator: torch.Generator, **_) -> Tensor:
    return real.sample_users(n, generator)


@USER_SELECTIONS.register("active")
def select_active_users(real: RecsysData, n: int, generator: torch.Generator, **_) -> Tensor:
    counts = torch.from_numpy(real.train.getnnz(axis=1)).long()
    return torch.argsort(-counts, stable=True)[:n]


def item_embeddings(rows: Tensor, factors: int = 64) -> Tensor:
    """[items, factors]: top right singular vectors of ``rows`` times their singular values
    (from the item Gram matrix; exact and deterministic)."""
    evals, evecs = torch.linalg.eigh(rows.T.double() @ rows.double())
    top = torch.argsort(evals, descending=True)[:factors]
    return (evecs[:, top] * evals[top].clamp_min(0).sqrt()).float()


@USER_SELECTIONS.register("herding")
def select_herding_users(real: RecsysData, n: int, generator: torch.Generator, *, factors: int = 64) -> Tensor:
    rows = real.dense("train")
    active = torch.nonzero(rows.sum(1) > 0).flatten()
    x = rows[active]
    feats = (x @ item_embeddings(x, factors)) / x.sum(1, keepdim=True)
    return active[select_herding(feats, n, len(active), generator)]


def select_users(real: RecsysData, users: int, method: str = "random", *, seed: int = 0, **kw) -> UserRowSet:
    """A summary made of ``users`` real users' training rows, chosen by ``method``."""
    if not isinstance(real, RecsysData):
        raise DataFormatError(f"user selection needs recommender data, got {type(real).__name__}")
    if not 1 <= users <= real.num_users:
        raise ConfigError(f"users must be in 1..{real.num_users}, got {users}")
    idx = USER_SELECTIONS.get(method)(real, users, make_generator(seed), **kw)
    syn = UserRowSet(real.info, users=users)
    syn.rows.copy_(real.dense("train")[idx])
    syn.meta.update({"method": f"subset-{method}", "seed": seed, "params": {"method": method, **kw},
                     "users_selected": idx.tolist()})
    return syn
