"""Top-k ranking metrics on held-out interactions (items already in the context excluded).

For each user with at least one held-out item (the set T, |T| = n):

    HR@k   = |top-k ∩ T| / min(n, k)                       (the ∞-AE / Distill-CF definition)
    nDCG@k = sum_{r<k, item_r ∈ T} 1/log2(r+2)  /  sum_{r<min(n,k)} 1/log2(r+2)
    AUC    = P(score(t) > score(j)),  t ∈ T,  j any item neither in the context nor in T

Users' values are averaged (HR and nDCG in %, AUC in [0, 1]). The reference code computes AUC
on 50 sampled negatives per user; here every unseen item is a negative, so no sampling noise.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def batch_metrics(scores: Tensor, seen: Tensor, target: Tensor, k: int = 10, *,
                  auc: bool = True) -> dict[str, Tensor]:
    """Per-user HR@k, nDCG@k and (optionally) AUC for dense ``scores``/``seen``/``target`` [B, items]."""
    if scores.shape != seen.shape or scores.shape != target.shape:
        raise ValueError(f"shapes differ: scores {tuple(scores.shape)}, seen {tuple(seen.shape)}, "
                         f"target {tuple(target.shape)}")
    seen, target = seen.bool(), target.bool()
    if (seen & target).any():
        raise ValueError("held-out items overlap the context items")
    keep = target.any(1)
    scores, seen, target = scores[keep].float(), seen[keep], target[keep]
    s = scores.masked_fill(seen, float("-inf"))
    npos = target.sum(1)
    kk = min(k, s.shape[1])
    hits = target.gather(1, s.topk(kk, dim=1).indices).float()
    disc = 1.0 / torch.log2(torch.arange(kk, dtype=torch.float32) + 2)
    idcg = torch.cumsum(disc, 0)[(npos.clamp(max=kk) - 1)]
    auc = _auc(s, seen, target, npos) if auc else torch.full_like(npos, math.nan, dtype=torch.float32)
    return {"hr": hits.sum(1) / npos.clamp(max=kk), "ndcg": (hits * disc).sum(1) / idcg, "auc": auc}


def _auc(s: Tensor, seen: Tensor, target: Tensor, npos: Tensor) -> Tensor:
    """Mann-Whitney AUC per user (ties count 1/2), from each positive's rank among all items."""
    p = int(npos.max())
    order = torch.argsort(target.float(), dim=1, descending=True, stable=True)[:, :p]   # positives first
    valid = target.gather(1, order)
    pos = s.gather(1, order)                                                 # [B, P]
    srt = s.sort(1).values
    lower = torch.searchsorted(srt, pos, side="left").float()                # items scoring below
    ties = torch.searchsorted(srt, pos, side="right").float() - lower - 1    # excluding itself
    pos_lower = (pos[:, None, :] < pos[:, :, None]).float() * valid[:, None, :]
    pos_ties = (pos[:, None, :] == pos[:, :, None]).float() * valid[:, None, :]
    neg_lower = lower - seen.sum(1, keepdim=True) - pos_lower.sum(-1)        # seen items are -inf
    neg_ties = ties - (pos_ties.sum(-1) - 1)
    nneg = s.shape[1] - seen.sum(1) - npos
    wins = ((neg_lower + 0.5 * neg_ties) * valid).sum(1)
    return torch.where(nneg > 0, wins / (npos * nneg).clamp_min(1), torch.full_like(wins, math.nan))


def rank_metrics(scores: Tensor, context: sp.csr_matrix, heldout: sp.csr_matrix, k: int = 10,
                 batch: int = 512, *, auc: bool = True) -> dict[str, float]:
    """Mean HR@k (%), nDCG@k (%) and AUC over users with held-out items; ``scores`` [users, items]."""
    out: dict[str, list[Tensor]] = {"hr": [], "ndcg": [], "auc": []}
    for i in range(0, scores.shape[0], batch):
        sl = slice(i, i + batch)
        m = batch_metrics(scores[sl], _dense_bool(context[sl]), _dense_bool(heldout[sl]), k, auc=auc)
        for key in out:
            out[key].append(m[key])
    cat = {key: torch.cat(v) for key, v in out.items()}
    n = int(cat["hr"].numel())
    if n == 0:
        raise ValueError("no user has held-out interactions")
    auc = cat["auc"][~torch.isnan(cat["auc"])]
    return {f"hr@{k}": 100.0 * float(cat["hr"].mean()), f"ndcg@{k}": 100.0 * float(cat["ndcg"].mean()),
            "auc": float(auc.mean()) if auc.numel() else math.nan, "users": n}


def _dense_bool(m: sp.spmatrix) -> Tensor:
    return torch.from_numpy(np.asarray(m.todense()) != 0)
