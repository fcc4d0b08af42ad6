"""Coreset baselines for graphs: random, herding and k-center (the selection rules of
``coresets.CORESETS``, reused) over real training nodes or training graphs.

* Node classification (GCond's baselines): per class, as many labelled nodes as the distilled
  summary has (``synsets.graph.node_budget`` of ``ratio``); the summary is the *induced
  subgraph* of the real graph on the selected nodes (their features, labels and the edges among
  them), a ``fixed``-adjacency ``GraphSet``.
* Graph classification: ``ipc`` real training graphs per class, a ``fixed``-adjacency
  ``GraphBatchSet`` (padded to the largest selected graph).

Herding and k-center work on the embeddings of a GCN trained on the real training labels (one
model, the evaluation protocol's optimiser; for graph classification ``feature_epochs`` epochs).
"""
from __future__ import annotations

import time

import torch

from ..errors import ConfigError, IPCError
from ..models import create_model
from ..runtime import make_generator, resolve_device
from ..synsets.graph import node_budget
from .images import CORESETS, NEEDS_FEATURES


def coreset_features(real, model: str = "gcn", *, seed: int = 0, device=None,
                     feature_epochs: int = 100):
    """Embeddings used by herding / k-center: all nodes (node task) or the training graphs in
    ``real.train_idx`` order (graph task), from a GCN trained on the real training labels."""
    return _feature_model(real.to(resolve_device(device)), model, seed, resolve_device(device),
                          feature_epochs).cpu()


def _feature_model(real, model: str, seed: int, dev, feature_epochs: int):
    from ..evaluation.graphs import graph_protocol, train_graph_model, train_node_model
    task = real.info.task or "node"
    proto = graph_protocol(task, "paper")
    gen = make_generator(seed)
    net = create_model(model, real.info, generator=gen, device=dev)
    if task == "node":
        train_node_model(net, (real.x_input, real.edge_index, None), real.y, real,
                         epochs=proto.epochs, lr=proto.lr, weight_decay=proto.weight_decay,
                         train_idx=real.train_idx)
        with torch.no_grad():
            return net.eval().embed(real.x_input, real.edge_index)
    x, ei, b, y = real.batch(real.train_idx)
    train_graph_model(net, (x, ei, None, b, len(y)), y, real, epochs=feature_epochs, lr=proto.lr,
                      weight_decay=0.0, batch_size=proto.batch_size, generator=gen)
    with torch.no_grad():
        return net.eval().embed(x, ei, None, b, len(y))  # rows follow real.train_idx


def select_graph_coreset(real, method: str = "random", *, ratio: float | None = None,
                         ipc: int | None = None, seed: int = 0, model: str = "gcn", device=None,
                         feature_epochs: int = 100, features=None):
    """A graph summary of real nodes (``ratio``) or real graphs (``ipc``) chosen by ``method``
    (``features``: precomputed ``coreset_features``, to share between calls)."""
    from ..synsets.graph import GraphBatchSet, GraphSet

    select = CORESETS.get(method)
    task = real.info.task or "node"
    dev = resolve_device(device)
    real = real.to(dev)
    t0 = time.perf_counter()
    gen = make_generator(seed)
    feats = None
    if method in NEEDS_FEATURES:
        feats = features if features is not None else \
            _feature_model(real, model, seed, dev, feature_epochs).cpu()
    k = real.info.num_classes
    if task == "node":
        from torch_geometric.utils import subgraph
        if ratio is None or ipc is not None:
            raise ConfigError("node-classification coresets take --ratio (fraction of all nodes)")
        counts = node_budget(real.class_counts(), real.num_nodes, ratio)
        picked = []
        for c in range(k):
            idx = real.class_indices(c)
            sel = select(feats[idx] if feats is not None else None, counts[c], len(idx), gen)
            picked.append(idx[sel])
        nodes = torch.cat(picked)
        ei, _ = subgraph(nodes.to(dev), real.edge_index, relabel_nodes=True, num_nodes=real.num_nodes)
        syn = GraphSet(real.info, counts=counts, adjacency="fixed")
        with torch.no_grad():
            syn.x.copy_(real.x[nodes.to(dev)].cpu())
        syn.set_edges(ei.cpu())
        syn.meta.update({"ratio": ratio, "num_nodes_real": real.num_nodes,
                         "ratio_of_labelled": round(len(nodes) / sum(real.class_counts()), 4)})
    else:
        from torch_geometric.utils import to_dense_batch
        if ipc is None or ratio is not None:
            raise ConfigError("graph-classification coresets take --ipc (graphs per class)")
        small = [(c, n) for c, n in enumerate(real.class_counts()) if n < ipc]
        if small:
            raise IPCError(f"ipc {ipc} is larger than these classes: {small}")
        pos = {int(g): i for i, g in enumerate(real.train_idx)}
        picked = []
        for c in range(k):
            idx = real.class_indices(c)
            f = feats[[pos[int(g)] for g in idx]] if feats is not None else None
            picked.append(idx[select(f, ipc, len(idx), gen)])
        nodes = torch.cat(picked)
        m = int(real.num_nodes(nodes).max())
        x, ei, b, _ = real.to("cpu").batch(nodes)
        sizes = torch.bincount(b, minlength=len(nodes))
        start = torch.cumsum(sizes, 0) - sizes
        padded = b * m + (torch.arange(len(b)) - start[b])
        syn = GraphBatchSet(real.info, ipc=ipc, nodes=m, adjacency="fixed")
        with torch.no_grad():
            syn.x.copy_(to_dense_batch(x, b, max_num_nodes=m)[0])
            syn.sizes.copy_(sizes)
        syn.set_edges(padded[ei])
    syn.meta.update({"method": method, "params": {"coreset": method, "model": model, "seed": seed},
                     "seed": seed, "iterations": 0, "selected": [p.tolist() for p in picked],
                     "wall_time_s": round(time.perf_counter() - t0, 3)})
    return syn
