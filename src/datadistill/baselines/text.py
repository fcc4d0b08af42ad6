"""Text baselines: random / herding / k-center / k-means subsets of real sentences, chosen in the
encoder's embedding space (the mean of a sentence's token embeddings for embedding sequences;
the sentence embedding itself for the sentence encoder). Returns a ``PixelSet`` of the chosen
real examples (the same format as a distilled text summary), with the chosen indices and
sentences in its metadata."""
from __future__ import annotations

import time

import torch

from ..runtime import make_generator
from ..synsets import check_ipc
from ..synsets.pixels import PixelSet
from .images import CORESETS, NEEDS_FEATURES


def text_features(x: torch.Tensor) -> torch.Tensor:
    """The encoder-space feature of each example: BoE mean over positions, or the embedding."""
    return x.float().mean(1) if x.dim() == 3 else x.float().flatten(1)


@CORESETS.register("kmeans")
def select_kmeans(feats: torch.Tensor, n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """k-means (scikit-learn, ``n`` clusters, k-means++ seeded from ``generator``) on the class's
    features; the real example nearest each centroid (distinct examples)."""
    from sklearn.cluster import KMeans

    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
    f = feats.double().numpy()
    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(f)
    d = torch.cdist(torch.as_tensor(km.cluster_centers_), feats.double())
    chosen: list[int] = []
    for row in d:
        order = row.argsort().tolist()
        chosen.append(next(i for i in order if i not in chosen))
    return torch.tensor(chosen)


NEEDS_FEATURES.add("kmeans")


def select_subset(real, ipc: int, method: str, *, seed: int, features, make_set, log=None):
    """Per class, ``method`` on ``features(x_class)``; ``make_set()`` builds the empty summary
    whose ``set_rows(slice, x)`` (or ``x`` parameter) receives the chosen examples."""
    select = CORESETS.get(method)
    check_ipc(real, ipc)
    t0 = time.perf_counter()
    gen = make_generator(seed)
    syn = make_set()
    picked = []
    for c in range(real.info.num_classes):
        idx = real.class_indices(c)
        x = real.train.x[idx]
        feats = features(x) if method in NEEDS_FEATURES else None
        sel = select(feats, ipc, len(idx), gen)
        with torch.no_grad():
            if hasattr(syn, "set_rows"):
                syn.set_rows(syn.class_slice(c), x[sel])
            else:
                syn.x[syn.class_slice(c)] = x[sel]
        picked.append(idx[sel].tolist())
    syn.meta.update({"method": method, "params": {"coreset": method, "space": "encoder", "seed": seed},
                     "seed": seed, "iterations": 0, "selected": picked,
                     "wall_time_s": round(time.perf_counter() - t0, 3)})
    return syn


def select_text(real, ipc: int, method: str = "random", *, seed: int = 0, log=None) -> PixelSet:
    syn = select_subset(real, ipc, method, seed=seed, features=text_features,
                        make_set=lambda: PixelSet(real.info, ipc=ipc))
    if getattr(real, "texts", None):
        syn.meta["sentences"] = [[real.texts["train"][i] for i in grp] for grp in syn.meta["selected"]]
    return syn
