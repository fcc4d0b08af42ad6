"""Coreset baselines: random, herding and k-center selection of real examples per class.

Herding and k-center work in the feature space of a ConvNet trained on the real data (the DC
paper's protocol); the features come from the cached full-data reference model. Each returns
the same ``SyntheticSet`` format as the distillers (``PixelSet``), so it saves and evaluates
the same way.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..data.base import RealData
from ..registry import Registry
from ..runtime import make_generator, resolve_device
from ..synsets import check_ipc
from ..synsets.pixels import PixelSet

#: name -> select(features [n, d] or None, n_pick, generator) -> indices into the class
CORESETS: Registry = Registry("coreset")


@CORESETS.register("random")
def select_random(feats: Tensor | None, n: int, count: int, generator: torch.Generator) -> Tensor:
    return torch.randperm(count, generator=generator)[:n]


@CORESETS.register("herding")
def select_herding(feats: Tensor, n: int, count: int, generator: torch.Generator) -> Tensor:
    """Welling's herding: greedily add the example that keeps the running mean of the selected
    features closest to the class mean."""
    mu = feats.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    avail = torch.ones(feats.shape[0], dtype=torch.bool)
    for t in range(n):
        cand = (running[None] + feats) / (t + 1)
        dist = (cand - mu[None]).norm(dim=1)
        dist[~avail] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        avail[i] = False
        running += feats[i]
    return torch.tensor(chosen)


@CORESETS.register("kcenter")
def select_kcenter(feats: Tensor, n: int, count: int, generator: torch.Generator) -> Tensor:
    """Greedy k-center (Sener & Savarese): start from the example nearest the class mean, then
    repeatedly add the example farthest from all chosen ones."""
    first = int((feats - feats.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    mind = (feats - feats[first]).norm(dim=1)
    for _ in range(n - 1):
        i = int(mind.argmax())
        chosen.append(i)
        mind = torch.minimum(mind, (feats - feats[i]).norm(dim=1))
    return torch.tensor(chosen)


NEEDS_FEATURES = {"herding", "kcenter"}


@torch.no_grad()
def _features(net, x: Tensor, batch: int = 1024) -> Tensor:
    return torch.cat([net.embed(x[i:i + batch]).float() for i in range(0, x.shape[0], batch)])


def select_coreset(real: RealData, ipc: int, method: str = "random", *, seed: int = 0,
                   model: str = "convnet", device=None,
                   feature_settings: dict | None = None,
                   log: Callable[[str], None] | None = None) -> PixelSet:
    """A ``PixelSet`` of ``ipc`` real training examples per class chosen by ``method``."""
    select = CORESETS.get(method)
    check_ipc(real, ipc)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    gen = make_generator(seed)
    net = None
    if method in NEEDS_FEATURES:
        from ..evaluation.reference import full_data_model
        if log:
            log(f"{method}: features from a {model} trained on the full training split (cached)")
        net, _ = full_data_model(real, model, device=dev, settings=feature_settings)
    syn = PixelSet(real.info, ipc=ipc)
    picked = []
    for c in range(real.info.num_classes):
        idx = real.class_indices(c)
        x = real.train.x[idx.to(real.device)]
        feats = _features(net, x.to(dev)).cpu() if net is not None else None
        sel = select(feats, ipc, len(idx), gen)
        with torch.no_grad():
            syn.x[syn.class_slice(c)] = x[sel.to(x.device)].to(syn.x.device)
        picked.append(idx[sel].tolist())
    if real.zca is not None:
        syn.preprocess = dict(real.zca.state())
    syn.meta.update({"method": method, "params": {"coreset": method, "model": model, "seed": seed},
                     "seed": seed, "iterations": 0, "selected": picked,
                     "wall_time_s": round(time.perf_counter() - t0, 3)})
    return syn
