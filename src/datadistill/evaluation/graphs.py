"""Evaluating graph summaries: ``evaluate`` imports this module on demand and it registers
``MODALITY_EVALUATORS["graph"]``, so ``evaluate(syn, real)`` and ``datadistill evaluate`` take
this path for graph summaries.

Node classification (GCond's ``test_with_val``): a fresh 2-layer GCN (hidden 256, dropout 0.5,
weight decay 5e-4) is trained full-batch with Adam (lr 0.01, x0.1 at half) on the synthetic
graph; after every epoch it is run on the whole real graph and the weights with the best
*validation* accuracy are kept; that model is tested once on the real test nodes.
Graph classification (DosCond's ``test_pyg_data``): a 3-layer GCN (hidden 128, mean pooling)
trained with Adam (lr 0.001, x0.1 at half, batch 128), best-validation weights, tested on the
real test graphs. No choice ever looks at the test split. Cross-architecture evaluation is
``models=("gcn", "sgc", "graphsage", "gat")``.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError, DataFormatError
from ..models import create_model
from ..runtime import RunOptions, derive_seed, make_generator, resolve_device, scoped_global_seed
from ..train import label_loss
from .base import EvalReport, accuracy_stats


@dataclasses.dataclass(frozen=True)
class GraphProtocol:
    name: str
    epochs: int
    num_models: int
    lr: float
    weight_decay: float
    batch_size: int = 128   # graph classification only
    decay_at: float = 0.5
    select: str = "val"     # keep the best-validation weights


#: (task, protocol name) -> protocol. ``paper`` = the GCond / DosCond evaluation code.
GRAPH_PROTOCOLS: dict[tuple[str, str], GraphProtocol] = {
    ("node", "paper"): GraphProtocol("paper", epochs=600, num_models=10, lr=0.01, weight_decay=5e-4),
    ("node", "fast"): GraphProtocol("fast", epochs=600, num_models=5, lr=0.01, weight_decay=5e-4),
    ("node", "smoke"): GraphProtocol("smoke", epochs=20, num_models=1, lr=0.01, weight_decay=5e-4),
    ("graph", "paper"): GraphProtocol("paper", epochs=500, num_models=10, lr=0.001, weight_decay=0.0),
    ("graph", "fast"): GraphProtocol("fast", epochs=300, num_models=5, lr=0.001, weight_decay=0.0),
    ("graph", "smoke"): GraphProtocol("smoke", epochs=10, num_models=1, lr=0.001, weight_decay=0.0),
}

#: Published whole-dataset accuracy (%) of a 2-layer GCN (GCond Table 2, "Whole Dataset").
PUBLISHED_FULL = {("cora", "gcn"): 81.2, ("citeseer", "gcn"): 71.7}


def graph_protocol(task: str, protocol) -> GraphProtocol:
    if isinstance(protocol, GraphProtocol):
        return protocol
    name = getattr(protocol, "name", protocol)
    if (task, name) not in GRAPH_PROTOCOLS:
        known = sorted({p for _, p in GRAPH_PROTOCOLS})
        raise ConfigError(f"unknown graph protocol {name!r}; known: {', '.join(known)}")
    return GRAPH_PROTOCOLS[(task, name)]


@torch.no_grad()
def node_accuracy(net, real, idx) -> float:
    net.eval()
    out = net(real.x_input, real.edge_index)
    return float((out[idx].argmax(1) == real.y[idx]).float().mean())


@torch.no_grad()
def graph_accuracy(net, real, idx, batch: int = 1024) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(idx), batch):
        x, ei, b, y = real.batch(idx[i:i + batch])
        correct += int((net(x, ei, None, b, len(y)).argmax(1) == y).sum())
    return correct / max(1, len(idx))


def train_node_model(net, inputs, y, real, *, epochs: int, lr: float, weight_decay: float,
                     decay_at: float = 0.5, train_idx=None, select: str = "val"):
    """Full-batch Adam on one graph (``inputs`` = (x, edge_index, edge_weight, ...)); loss on
    ``train_idx`` (all nodes when None); with ``select="val"`` keeps the weights of the epoch
    with the best accuracy on ``real``'s validation nodes. Returns (net, best val accuracy)."""
    x, ei, w = (t.detach() if t is not None else None for t in inputs[:3])
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, state = -1.0, None
    for ep in range(epochs):
        if ep == int(epochs * decay_at):
            for g in opt.param_groups:
                g["lr"] = lr * 0.1
        net.train()
        out = net(x, ei, w)
        loss = label_loss(out if train_idx is None else out[train_idx],
                          y if train_idx is None else y[train_idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if select == "val":
            acc = node_accuracy(net, real, real.val_idx)
            if acc > best:
                best, state = acc, copy.deepcopy(net.state_dict())
    if state is not None:
        net.load_state_dict(state)
    return net.eval(), best


def train_graph_model(net, syn_inputs, y, real, *, epochs: int, lr: float, weight_decay: float,
                      batch_size: int, generator: torch.Generator, decay_at: float = 0.5,
                      select: str = "val"):
    """Mini-batch Adam over synthetic graphs (``syn_inputs`` = (x, edge_index, edge_weight,
    batch, num_graphs)); best-validation weights. Returns (net, best val accuracy)."""
    x, ei, w, batch, g = syn_inputs
    x, w = x.detach(), (w.detach() if w is not None else None)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, state = -1.0, None
    node_of = [torch.nonzero(batch == i).flatten() for i in range(g)]
    for ep in range(epochs):
        if ep == int(epochs * decay_at):
            for grp in opt.param_groups:
                grp["lr"] = lr * 0.1
        net.train()
        perm = torch.randperm(g, generator=generator)
        for i in range(0, g, batch_size):
            sel = perm[i:i + batch_size].to(x.device)
            xb, eb, wb, bb = _subgraphs(x, ei, w, batch, node_of, sel)
            loss = label_loss(net(xb, eb, wb, bb, len(sel)), y[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if select == "val":
            acc = graph_accuracy(net, real, real.val_idx)
            if acc > best:
                best, state = acc, copy.deepcopy(net.state_dict())
    if state is not None:
        net.load_state_dict(state)
    return net.eval(), best


def _subgraphs(x, ei, w, batch, node_of, sel):
    """The disjoint union of graphs ``sel`` (renumbered)."""
    if len(sel) == len(node_of):
        order = torch.argsort(sel)
        if torch.equal(sel[order], torch.arange(len(sel), device=sel.device)):
            remap = torch.empty_like(sel)
            remap[sel] = torch.arange(len(sel), device=sel.device)
            return x, ei, w, remap[batch]
    nodes = torch.cat([node_of[int(i)] for i in sel])
    new = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    new[nodes] = torch.arange(len(nodes), device=x.device)
    keep = (new[ei[0]] >= 0) & (new[ei[1]] >= 0)
    gid = torch.full((int(batch.max()) + 1,), -1, dtype=torch.long, device=x.device)
    gid[sel] = torch.arange(len(sel), device=x.device)
    return x[nodes], new[ei[:, keep]], (w[keep] if w is not None else None), gid[batch[nodes]]


def _check(syn, real) -> str:
    si, ri = syn.info, real.info
    if (si.name, tuple(si.shape), si.num_classes) != (ri.name, tuple(ri.shape), ri.num_classes):
        raise DataFormatError(f"summary is for {si.name} {tuple(si.shape)} with {si.num_classes} classes "
                         f"but the data is {ri.name} {tuple(ri.shape)} with {ri.num_classes}")
    return ri.task or "node"


def full_graph_accuracy(real, model: str = "gcn", *, protocol="paper", num_models: int | None = None,
                        seed: int = 0, device=None) -> dict[str, Any]:
    """The whole-dataset reference: the same network and protocol trained on the real training
    nodes (node task, in the full graph) or training graphs (graph task)."""
    task = real.info.task or "node"
    proto = graph_protocol(task, protocol)
    dev = resolve_device(device)
    real = real.to(dev)
    accs = []
    for k in range(num_models or proto.num_models):
        gen = make_generator(derive_seed(seed, 7919 + k))
        net = create_model(model, real.info, generator=gen, device=dev)
        with scoped_global_seed(derive_seed(seed, 7919 + k, 1), dev):  # GNN dropout
            accs.append(_train_and_test_full(net, real, task, proto, gen))
    return {**accuracy_stats(accs),
            "settings": dataclasses.asdict(proto)}


def _train_and_test_full(net, real, task, proto, gen) -> float:
    if task == "node":
        train_node_model(net, (real.x_input, real.edge_index, None), real.y, real,
                         epochs=proto.epochs, lr=proto.lr, weight_decay=proto.weight_decay,
                         train_idx=real.train_idx, select=proto.select)
        return 100 * node_accuracy(net, real, real.test_idx)
    x, ei, b, y = real.batch(real.train_idx)
    train_graph_model(net, (x, ei, None, b, len(y)), y, real, epochs=proto.epochs,
                      lr=proto.lr, weight_decay=proto.weight_decay,
                      batch_size=proto.batch_size, generator=gen, select=proto.select)
    return 100 * graph_accuracy(net, real, real.test_idx)


def evaluate_graph(syn, real, *, models: Sequence[str] | None = None, protocol="fast",
                   num_models: int | None = None, seed: int = 0, full_reference: bool = False,
                   on_model=None, run: RunOptions | None = None) -> EvalReport:
    """Train ``num_models`` fresh GNNs per architecture on the summary; test on the real graph."""
    task = _check(syn, real)
    models = ("gcn",) if models is None else tuple(models)
    proto = graph_protocol(task, protocol)
    overrides: dict[str, Any] = {}
    if num_models is not None and num_models != proto.num_models:
        overrides["num_models"] = num_models
        proto = dataclasses.replace(proto, num_models=num_models)
    dev = resolve_device(run.device if run is not None else None)
    real = real.to(dev)
    syn = syn.to(dev)
    with torch.no_grad():
        inputs = syn.inputs()
    y = syn.class_ids
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        accs = []
        for k in range(proto.num_models):
            gen = make_generator(derive_seed(seed, mi, k))
            net = create_model(name, syn.info, generator=gen, device=dev)
            # GNN dropout draws from the global RNG: seeded per model, the caller's state kept
            with scoped_global_seed(derive_seed(seed, mi, k, 1), dev):
                if task == "node":
                    train_node_model(net, inputs, y, real, epochs=proto.epochs, lr=proto.lr,
                                     weight_decay=proto.weight_decay, decay_at=proto.decay_at,
                                     select=proto.select)
                    acc = 100 * node_accuracy(net, real, real.test_idx)
                else:
                    train_graph_model(net, inputs, y, real, epochs=proto.epochs, lr=proto.lr,
                                      weight_decay=proto.weight_decay, batch_size=proto.batch_size,
                                      generator=gen, decay_at=proto.decay_at, select=proto.select)
                    acc = 100 * graph_accuracy(net, real, real.test_idx)
            accs.append(acc)
            if on_model is not None:
                on_model({"model": name, "index": k, "accuracy": acc})
        r: dict[str, Any] = {**accuracy_stats(accs),
                             "published_full": PUBLISHED_FULL.get((syn.info.name, name))}
        if full_reference:
            full = full_graph_accuracy(real, name, protocol=proto.name, num_models=proto.num_models,
                                       seed=seed, device=dev)
            r["full_acc"], r["full_settings"] = full["mean"], full["settings"]
            r["pct_of_full"] = 100.0 * r["mean"] / full["mean"] if full["mean"] else float("nan")
        results[name] = r
    summary = {"dataset": syn.info.name, "ipc": syn.ipc, "num_examples": syn.num_examples,
               "stored_bytes": syn.stored_bytes(), "label_format": syn.label_format,
               "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
               "params": syn.meta.get("params"), "task": task,
               "ratio": syn.meta.get("ratio"), "ratio_of_labelled": syn.meta.get("ratio_of_labelled")}
    proto_d = {**dataclasses.asdict(proto), "dsa": False, "optimizer": "adam", "selection": "best validation"}
    return EvalReport(proto_d, summary, results, overrides, run.to_dict() if run else {})
