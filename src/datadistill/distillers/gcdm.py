"""GCDM — Liu et al., "Graph Condensation via Receptive Field Distribution Matching", 2022.

    min_{X', Φ}  E_θ  Σ_c  || mean_{v ∈ T_c} φ_θ(A, X)_v  -  mean_{v' ∈ S_c} φ_θ(A', X')_v' ||^2

φ_θ is a GNN's node embedding — each node's receptive field summarised by message passing —
on the real graph (labelled training nodes of class c) and on the synthetic graph (synthetic
nodes of class c); the distance between class means is the linear-kernel MMD that DM uses
(``objectives.class_means`` / ``mean_embedding_distance``). The summary and the loop are
GCond's (subclassed): the same PGE adjacency, per-iteration fresh θ trained ``inner_loop`` steps
on the synthetic graph between ``outer_loop`` matching steps, X' and Φ updated alternately.
Relay: a 2-layer GCN (hidden 256, no dropout); its embedding is the hidden layer. Other
defaults follow GCond's published settings (600 iterations, Adam lr 1e-4 on X' and Φ).
"""
from __future__ import annotations

import dataclasses

import torch

from ..objectives import class_means, mean_embedding_distance
from .base import DISTILLERS
from .gcond import GCond


@DISTILLERS.register("gcdm")
@dataclasses.dataclass(kw_only=True)
class GCDM(GCond):
    name = "gcdm"
    presets = {"cpu-100": {"iterations": 100}, "cpu-200": {"iterations": 200},
               "tiny": {"iterations": 3, "outer_loop": 2, "inner_loop": 1, "adj_every": 2,
                        "adj_steps": 1}}

    model: str = "gcn"

    def real_class_means(self, net, real) -> torch.Tensor:
        if getattr(net, "param_free_embed", False) and getattr(self, "real_means_", None) is not None:
            return self.real_means_
        with torch.no_grad():
            emb = net.embed(real.x_input, real.edge_index)[real.train_idx].float()
            means = class_means(emb, real.y[real.train_idx], real.info.num_classes)
        if getattr(net, "param_free_embed", False):
            self.real_means_ = means
        return means

    def matching_loss(self, net, real, syn, inputs) -> torch.Tensor:
        mr = self.real_class_means(net, real)
        ms = class_means(net.embed(*inputs[:3]).float(), syn.class_ids, real.info.num_classes)
        return mean_embedding_distance(mr, ms)

    def setup(self, real, syn):
        super().setup(real, syn)
        self.real_means_ = None
