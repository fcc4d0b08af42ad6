"""Graph summaries: one synthetic graph for node classification (``graph``), or a set of small
synthetic graphs for graph classification (``graphs``).

Both hold node features ``x`` (learnable), hard labels, and an adjacency that is one of

* ``pge``  — generated from the features, GCond's A'_ij = sigmoid(MLP_Φ([x_i; x_j]) sym.) with
  the MLP's first layer split as W_1 x_i + W_2 x_j (exactly the same map, n× cheaper), zero
  diagonal; ``threshold`` drops entries below it when the graph is used;
* ``bernoulli`` — a free parameter matrix Ω of edge logits (DosCond); a relaxed sample
  sigmoid((Ω_sym + log u - log(1-u)) / τ) with symmetric uniform noise u while distilling,
  the hard graph 1[sigmoid(Ω_sym) > 0.5] when used;
* ``fixed`` — the stored edge list itself (coreset baselines: induced subgraphs);
* ``none`` — no edges (GCond-X, structure-free).

On disk the summary is the usual ``summary.safetensors`` + ``summary.json``; besides the
parameters it always holds the graph as an edge list (``edge_index``, ``edge_weight``) baked at
save time, so the file carries the graph itself. ``stored_bytes`` counts what a user of the
summary needs — features, labels, edge list (and graph sizes) — not the PGE generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compact import nbytes
from ..errors import ConfigError
from ..models.gnn import dense_to_edges
from .base import SYNSETS, SyntheticSet

ADJACENCIES = ("pge", "bernoulli", "fixed", "none")



def node_budget(train_counts: list[int], num_nodes: int, ratio: float) -> list[int]:
    """Synthetic nodes per class for ``ratio`` of all ``num_nodes`` (GCond's allocation: each
    class gets max(1, int(n_c * r)) with r = n' / n_labelled; the largest class the remainder)."""
    labelled = sum(train_counts)
    if not 0 < ratio <= 1:
        raise ConfigError(f"ratio must be in (0, 1], got {ratio}")
    total = min(labelled, max(1, round(ratio * num_nodes)))
    rate = total / labelled
    order = sorted(range(len(train_counts)), key=lambda c: train_counts[c])
    counts = [0] * len(train_counts)
    for c in order[:-1]:
        counts[c] = max(1, int(train_counts[c] * rate))
    counts[order[-1]] = total - sum(counts)
    if counts[order[-1]] < 1:
        raise ConfigError(f"ratio {ratio} gives {total} nodes, fewer than one per class "
                          f"({len(train_counts)} classes)")
    return counts


class PGE(nn.Module):
    """GCond's pairwise MLP: [x_i; x_j] -> hidden (BatchNorm, ReLU) x (layers-1) -> 1.
    BatchNorm always uses the batch statistics of the n^2 pairs (as in the reference, which
    never switches it to eval mode), so A' is a deterministic function of X' and Φ."""

    def __init__(self, num_features: int, hidden: int = 128, layers: int = 3):
        super().__init__()
        if layers < 2:
            raise ValueError(f"PGE needs >= 2 layers, got {layers}")
        self.first_i = nn.Linear(num_features, hidden)
        self.first_j = nn.Linear(num_features, hidden, bias=False)
        self.mid = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 2))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden, track_running_stats=False)
                                 for _ in range(layers - 1))
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        h = (self.first_i(x)[:, None, :] + self.first_j(x)[None, :, :]).reshape(n * n, -1)
        for i, bn in enumerate(self.bns):
            h = F.relu(bn(h))
            if i < len(self.mid):
                h = self.mid[i](h)
        a = self.out(h).view(n, n)
        a = torch.sigmoid((a + a.t()) / 2)
        return a * (1 - torch.eye(n, device=x.device, dtype=a.dtype))


def symmetric_uniform(shape, generator: torch.Generator, device) -> Tensor:
    """Uniform(0,1) noise, symmetric in the last two dimensions."""
    u = torch.rand(shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    u = torch.triu(u) + torch.triu(u, 1).transpose(-1, -2)
    return u.to(device)


def bernoulli_adjacency(logits: Tensor, generator: torch.Generator | None = None,
                        temperature: float = 1.0) -> Tensor:
    """DosCond's structure: a relaxed Bernoulli sample (with ``generator``) or the hard graph."""
    m = logits.shape[-1]
    sym = (logits + logits.transpose(-1, -2)) / 2
    if generator is None:
        adj = (torch.sigmoid(sym) > 0.5).to(sym.dtype)
    else:
        u = symmetric_uniform(sym.shape, generator, sym.device)
        adj = torch.sigmoid((sym + torch.log(u) - torch.log1p(-u)) / temperature)
    return adj * (1 - torch.eye(m, device=sym.device, dtype=sym.dtype))


class _GraphSummary(SyntheticSet):
    """Edge-list buffers that follow the adjacency at save time and resize on load."""

    def _init_common(self, adjacency: str, threshold: float):
        if adjacency not in ADJACENCIES:
            raise ValueError(f"unknown adjacency {adjacency!r}; known: {', '.join(ADJACENCIES)}")
        self.adjacency_kind, self.threshold = adjacency, float(threshold)
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        for k in ("edge_index", "edge_weight"):
            if prefix + k in state_dict:
                setattr(self, k, torch.empty_like(state_dict[prefix + k]).to(getattr(self, k).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    def set_edges(self, edge_index: Tensor, edge_weight: Tensor | None = None) -> None:
        """Store a graph as the edge list (``fixed`` summaries; also what ``save`` writes)."""
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.shape[1])
        self.edge_index = edge_index.detach().long().to(self.edge_index.device)
        self.edge_weight = edge_weight.detach().float().to(self.edge_weight.device)

    @torch.no_grad()
    def bake(self) -> None:
        if self.adjacency_kind != "fixed":
            self.set_edges(*self.edges())

    def save(self, path):
        self.bake()
        return super().save(path)

    def stored_bytes(self) -> int:
        with torch.no_grad():
            ei, w = self.edges()
        tensors = [self.x, self.labels, ei, w] + ([self.sizes] if hasattr(self, "sizes") else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def bytes_breakdown(self) -> dict[str, int]:
        """``stored_bytes`` part by part (``total``), plus what is saved or could be stored
        instead but is not counted: the dense adjacency (float32) and the parameters that
        generate it (PGE's MLP, DosCond's edge logits), needed only to keep distilling."""
        with torch.no_grad():
            ei, w = self.edges()
        parts = {"features": nbytes(self.x), "labels": nbytes(self.labels),
                 "edge_index": nbytes(ei), "edge_weight": nbytes(w)}
        if hasattr(self, "sizes"):
            parts["sizes"] = nbytes(self.sizes)
        out = {**parts, "total": sum(parts.values()), "edges": int(w.numel())}
        n = self.x.shape[-2]
        out["uncounted_dense_adjacency"] = 4 * n * n * (self.x.shape[0] if self.x.dim() == 3 else 1)
        gen = [p for name, p in self.named_parameters() if name.startswith(("pge.", "adj_logits"))]
        out["uncounted_generator"] = nbytes(*gen)
        return out

    @property
    def class_ids(self) -> Tensor:
        return self.labels

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.x, self.labels

    def _dense(self, generator, temperature) -> Tensor:
        if self.adjacency_kind == "pge":
            a = self.pge(self.x)
            return a * (a >= self.threshold) if self.threshold > 0 else a
        if self.adjacency_kind == "bernoulli":
            return bernoulli_adjacency(self.adj_logits, generator, temperature)
        raise ValueError(f"a {self.adjacency_kind!r} adjacency has no dense parametrization")


@SYNSETS.register("graph")
class GraphSet(_GraphSummary):
    """One synthetic graph: ``counts[c]`` nodes of class ``c`` (contiguous), features [n, F]."""

    kind = "graph"

    def __init__(self, info, *, counts: list[int], adjacency: str = "pge", pge_hidden: int = 128,
                 pge_layers: int = 3, threshold: float = 0.0, label_format: str = "hard",
                 lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if label_format != "hard":
            raise ValueError("graph summaries use hard labels")
        if len(counts) != info.num_classes or min(counts) < 1:
            raise ValueError(f"counts must give >= 1 node for each of the {info.num_classes} "
                             f"classes, got {counts}")
        self._init_common(adjacency, threshold)
        self.counts = [int(c) for c in counts]
        self.pge_hidden, self.pge_layers = int(pge_hidden), int(pge_layers)
        n, f = sum(self.counts), int(info.shape[0])
        self.x = nn.Parameter(torch.zeros(n, f))
        self.register_buffer("labels", torch.arange(info.num_classes).repeat_interleave(
            torch.tensor(self.counts)))
        if adjacency == "pge":
            self.pge = PGE(f, pge_hidden, pge_layers)
        elif adjacency == "bernoulli":
            self.adj_logits = nn.Parameter(torch.zeros(n, n))

    def config(self):
        return {"counts": self.counts, "adjacency": self.adjacency_kind,
                "pge_hidden": self.pge_hidden, "pge_layers": self.pge_layers,
                "threshold": self.threshold}

    def class_slice(self, c: int) -> slice:
        s = sum(self.counts[:c])
        return slice(s, s + self.counts[c])

    def adjacency(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """The dense [n, n] adjacency (differentiable for ``pge`` and sampled ``bernoulli``)."""
        n = self.x.shape[0]
        if self.adjacency_kind == "none":
            return self.x.new_zeros(n, n)
        if self.adjacency_kind == "fixed":
            a = self.x.new_zeros(n, n)
            a[self.edge_index[1], self.edge_index[0]] = self.edge_weight.to(a.dtype)
            return a
        return self._dense(generator, temperature)

    def edges(self) -> tuple[Tensor, Tensor]:
        if self.adjacency_kind == "fixed":
            return self.edge_index, self.edge_weight
        return dense_to_edges(self.adjacency())

    def inputs(self, generator: torch.Generator | None = None, temperature: float = 1.0):
        """``(x, edge_index, edge_weight, batch, num_graphs)`` for a GNN's forward."""
        if generator is None or self.adjacency_kind in ("fixed", "none"):
            ei, w = self.edges()
        else:
            ei, w = dense_to_edges(self.adjacency(generator, temperature))
        return self.x, ei, w, None, None


@SYNSETS.register("graphs")
class GraphBatchSet(_GraphSummary):
    """``ipc`` synthetic graphs per class, each with up to ``nodes`` nodes: features [G, m, F]
    (rows past a graph's ``sizes[g]`` are padding), labels [G]."""

    kind = "graphs"

    def __init__(self, info, *, ipc: int, nodes: int, adjacency: str = "bernoulli",
                 threshold: float = 0.0, label_format: str = "hard", lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if label_format != "hard":
            raise ValueError("graph summaries use hard labels")
        if ipc < 1 or nodes < 1:
            raise ValueError(f"ipc and nodes must be >= 1, got {ipc}, {nodes}")
        if adjacency == "pge":
            raise ValueError("graph-set summaries support bernoulli, fixed or none adjacencies")
        self._init_common(adjacency, threshold)
        self.ipc_, self.nodes = int(ipc), int(nodes)
        g = info.num_classes * self.ipc_
        self.x = nn.Parameter(torch.zeros(g, self.nodes, int(info.shape[0])))
        self.register_buffer("labels", torch.arange(info.num_classes).repeat_interleave(self.ipc_))
        self.register_buffer("sizes", torch.full((g,), self.nodes, dtype=torch.long))
        if adjacency == "bernoulli":
            self.adj_logits = nn.Parameter(torch.zeros(g, self.nodes, self.nodes))

    def config(self):
        return {"ipc": self.ipc_, "nodes": self.nodes, "adjacency": self.adjacency_kind,
                "threshold": self.threshold}

    def class_slice(self, c: int) -> slice:
        return slice(c * self.ipc_, (c + 1) * self.ipc_)

    def adjacency(self, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """The dense [G, m, m] adjacencies (padded)."""
        g, m = self.x.shape[:2]
        if self.adjacency_kind in ("none", "fixed"):
            a = self.x.new_zeros(g, m, m)
            if self.adjacency_kind == "fixed":
                src, dst = self.edge_index
                a[dst // m, dst % m, src % m] = self.edge_weight.to(a.dtype)
            return a
        return self._dense(generator, temperature)

    def edges(self) -> tuple[Tensor, Tensor]:
        """Edge list over padded node ids (graph g's node i is g * nodes + i)."""
        if self.adjacency_kind == "fixed":
            return self.edge_index, self.edge_weight
        return dense_to_edges(self.adjacency())

    def inputs(self, generator: torch.Generator | None = None, temperature: float = 1.0):
        """``(x, edge_index, edge_weight, batch, num_graphs)`` with padding rows removed."""
        g, m, f = self.x.shape
        if generator is None:
            ei, w = self.edges()
        else:
            ei, w = dense_to_edges(self.adjacency(generator, temperature))
        mask = (torch.arange(m, device=self.x.device)[None] < self.sizes[:, None]).flatten()
        new_id = torch.cumsum(mask.long(), 0) - 1
        x = self.x.reshape(g * m, f)[mask]
        batch = torch.arange(g, device=x.device).repeat_interleave(self.sizes)
        return x, new_id[ei], w, batch, g
