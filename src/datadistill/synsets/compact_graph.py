"""Graph summaries stored compactly: what ``datadistill.compact.compact`` makes of a ``graph``
summary (node classification, kind ``compact-graph``, ``CompactGraphSet``) and of a ``graphs``
summary (graph classification, kind ``compact-graphs``, ``CompactGraphBatchSet``)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..compact import (FEATURE_DTYPES, VALUE_DTYPES, check_dtype, dequantize, index_dtype,
                       nbytes, quantize)
from ..errors import ConfigError
from .base import SYNSETS, SyntheticSet

_STORED_TYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "uint8": torch.uint8, "binary": torch.uint8}
_GRAPH_LAYOUT = ("features", "feature_ranges", "labels", "pairs", "weights", "weight_ranges")


def _encode_weights(w: Tensor, edge_dtype: str) -> tuple[Tensor, Tensor]:
    """Edge weights as stored: ``uint8`` with one range for every edge, others as ``quantize``."""
    if edge_dtype == "uint8":
        return quantize(w, "uint8", torch.zeros(w.shape[0], dtype=torch.long), 1)
    return quantize(w, edge_dtype)


def _decode_weights(syn) -> Tensor:
    """The float32 weights of ``syn.weights`` (one per stored edge)."""
    e = int(syn.pairs.shape[1])
    return dequantize(syn.weights, syn.edge_dtype, syn.weight_ranges, count=e,
                      segments=torch.zeros(e, dtype=torch.long, device=syn.pairs.device))


def _resize_stored(syn, state_dict, prefix: str, keys: tuple[str, ...]) -> None:
    """Give the buffers ``keys`` the shapes they were saved with (their length is the number of
    stored edges or nodes) before ``load_state_dict`` copies into them."""
    for k in keys:
        if prefix + k in state_dict:
            cur = getattr(syn, k)
            setattr(syn, k, torch.empty(state_dict[prefix + k].shape, dtype=cur.dtype,
                                        device=cur.device))


@SYNSETS.register("compact-graph")
class CompactGraphSet(SyntheticSet):
    """A node-classification graph summary stored compactly (``datadistill.compact.compact``):

    * ``features`` [n, F] as ``dtype`` (``float32``, ``float16``, ``bfloat16``; ``uint8``
      affine per node, ranges [n, 2]);
    * ``labels`` [n] in the smallest integer type holding the classes;
    * ``pairs`` [2, E] node ids in the smallest integer type holding n — each undirected edge
      once (i < j) when the adjacency is ``symmetric``, else each directed one (i <- j);
    * ``weights`` [E] as ``edge_dtype`` (``uint8``: one affine range; ``binary``: none, all 1).

    The adjacency is the source's baked at a ``threshold`` (entries below it dropped). ``x``,
    ``edge_index`` and ``edge_weight`` are the decoded tensors the GNNs train on (not saved);
    ``stored_bytes`` is the sum of the stored tensors."""

    kind = "compact-graph"

    def __init__(self, info, *, nodes: int, dtype: str = "float16", edge_dtype: str = "float16",
                 symmetric: bool = True, threshold: float = 0.0, label_format: str = "hard",
                 lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if label_format != "hard":
            raise ValueError("graph summaries use hard labels")
        if info.modality != "graph" or (info.task or "node") != "node":
            raise ValueError(f"{self.kind} summaries are for node classification graphs")
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.nodes, self.symmetric, self.threshold = int(nodes), bool(symmetric), float(threshold)
        self.dtype = check_dtype(dtype, FEATURE_DTYPES, "feature dtype")
        self.edge_dtype = check_dtype(edge_dtype, VALUE_DTYPES, "edge dtype")
        f = int(info.shape[0])
        self.register_buffer("features", torch.zeros(nodes, f, dtype=_STORED_TYPES[dtype]))
        self.register_buffer("feature_ranges", torch.zeros(nodes if dtype == "uint8" else 0, 2))
        self.register_buffer("labels", torch.zeros(nodes, dtype=index_dtype(info.num_classes)))
        self.register_buffer("pairs", torch.zeros(2, 0, dtype=index_dtype(nodes)))
        self.register_buffer("weights", torch.zeros(0, dtype=_STORED_TYPES[edge_dtype]))
        self.register_buffer("weight_ranges", torch.zeros(1 if edge_dtype == "uint8" else 0, 2))
        for k, v in {"x": torch.zeros(nodes, f), "edge_index": torch.zeros(2, 0, dtype=torch.long),
                     "edge_weight": torch.zeros(0)}.items():
            self.register_buffer(k, v, persistent=False)

    def config(self):
        return {"nodes": self.nodes, "dtype": self.dtype, "edge_dtype": self.edge_dtype,
                "symmetric": self.symmetric, "threshold": self.threshold}

    @classmethod
    @torch.no_grad()
    def from_graph(cls, syn, *, dtype: str = "float16", threshold: float | None = None,
                   edge_dtype: str = "float16") -> "CompactGraphSet":
        """The compact form of a ``graph`` summary: its (baked) adjacency with entries below
        ``threshold`` (default: the summary's own) dropped."""
        threshold = float(getattr(syn, "threshold", 0.0) if threshold is None else threshold)
        if threshold < 0:
            raise ConfigError(f"threshold must be >= 0, got {threshold}")
        adj = syn.adjacency().detach().float().cpu()
        if threshold > 0:
            adj = adj * (adj >= threshold)
        symmetric = bool(torch.equal(adj, adj.t()))
        x = syn.materialize()[0].detach().float().cpu()
        out = cls(syn.info, nodes=int(x.shape[0]), dtype=dtype, edge_dtype=edge_dtype,
                  symmetric=symmetric, threshold=threshold)
        out.set_graph(x, syn.class_ids.cpu(), adj)
        return out

    @torch.no_grad()
    def set_graph(self, x: Tensor, labels: Tensor, adj: Tensor) -> None:
        """Store features [n, F], labels [n] and a dense adjacency [n, n] (A[i, j]: j -> i)."""
        adj = adj.detach().float().cpu()
        keep = (adj != 0) & ~torch.eye(self.nodes, dtype=torch.bool)
        if self.symmetric:
            keep &= torch.ones_like(keep).triu(1)
        i, j = keep.nonzero(as_tuple=True)
        feats, franges = quantize(x, self.dtype)  # uint8: one (lo, hi) per node
        w = adj[i, j]
        weights, wr = _encode_weights(w, self.edge_dtype)
        dev = self.x.device
        stored = {"features": feats, "feature_ranges": franges,
                  "labels": labels.to(self.labels.dtype), "pairs": torch.stack([i, j]).to(self.pairs.dtype),
                  "weights": weights, "weight_ranges": wr}
        for k, v in stored.items():
            setattr(self, k, v.to(dev))
        self._decode()

    def _decode(self) -> None:
        self.x = dequantize(self.features, self.dtype, self.feature_ranges)
        i, j = self.pairs.long()
        w = _decode_weights(self)
        if self.symmetric:
            i, j, w = torch.cat([i, j]), torch.cat([j, i]), torch.cat([w, w])
        self.edge_index, self.edge_weight = torch.stack([j, i]), w  # message j -> i

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        _resize_stored(self, state_dict, prefix, ("pairs", "weights"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        self._decode()

    @property
    def class_ids(self) -> Tensor:
        return self.labels.long()

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.x, self.class_ids

    def adjacency(self, generator=None, temperature: float = 1.0) -> Tensor:
        a = self.x.new_zeros(self.nodes, self.nodes)
        a[self.edge_index[1], self.edge_index[0]] = self.edge_weight
        return a

    def edges(self) -> tuple[Tensor, Tensor]:
        return self.edge_index, self.edge_weight

    def inputs(self, generator=None, temperature: float = 1.0):
        return self.x, self.edge_index, self.edge_weight, None, None

    def bytes_breakdown(self) -> dict[str, int]:
        parts = {k: nbytes(getattr(self, k)) for k in _GRAPH_LAYOUT}
        return {**parts, "total": sum(parts.values()), "edges": int(self.edge_weight.numel())}

    def stored_bytes(self) -> int:
        return self.bytes_breakdown()["total"]


_BATCH_LAYOUT = ("features", "feature_ranges", "labels", "sizes", "edge_counts", "pairs",
                 "weights", "weight_ranges")


@SYNSETS.register("compact-graphs")
class CompactGraphBatchSet(SyntheticSet):
    """A graph-classification summary (a set of small graphs, kind ``graphs``: DosCond, coreset
    baselines) stored compactly (``datadistill.compact.compact``):

    * ``features`` [N, F], the rows of the graphs' real nodes only (N = sum of ``sizes``; no
      padding), as ``dtype`` (``uint8``: affine per node, ranges [N, 2]);
    * ``labels`` [G] and ``sizes`` [G] in the smallest integer types that hold them;
    * ``pairs`` [2, E] each graph's edges as *local* node ids (smallest type holding the largest
      graph), each undirected edge once (i < j) when every adjacency is ``symmetric``, graph
      after graph, with ``edge_counts`` [G] edges per graph;
    * ``weights`` [E] as ``edge_dtype`` (``binary``: none, all 1, as DosCond's hard graphs are).

    ``x``, ``edge_index``, ``edge_weight`` and ``batch`` are the decoded tensors the GNNs train
    on (not saved); ``stored_bytes`` is the sum of the stored tensors. ``edges()`` numbers nodes
    as the source did (graph g's node i is g * ``nodes`` + i)."""

    kind = "compact-graphs"

    def __init__(self, info, *, graphs: int, nodes: int, dtype: str = "float16",
                 edge_dtype: str = "binary", symmetric: bool = True, threshold: float = 0.0,
                 label_format: str = "hard", lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if label_format != "hard":
            raise ValueError("graph summaries use hard labels")
        if info.modality != "graph" or (info.task or "node") != "graph":
            raise ValueError(f"{self.kind} summaries are for graph classification")
        if graphs < 1 or nodes < 1:
            raise ValueError(f"graphs and nodes must be >= 1, got {graphs}, {nodes}")
        self.graphs, self.nodes = int(graphs), int(nodes)
        self.symmetric, self.threshold = bool(symmetric), float(threshold)
        self.dtype = check_dtype(dtype, FEATURE_DTYPES, "feature dtype")
        self.edge_dtype = check_dtype(edge_dtype, VALUE_DTYPES, "edge dtype")
        f = int(info.shape[0])
        size_t = index_dtype(self.nodes + 1)
        self.register_buffer("features", torch.zeros(0, f, dtype=_STORED_TYPES[dtype]))
        self.register_buffer("feature_ranges", torch.zeros(0, 2))
        self.register_buffer("labels", torch.zeros(graphs, dtype=index_dtype(info.num_classes)))
        self.register_buffer("sizes", torch.zeros(graphs, dtype=size_t))
        most = self.nodes * (self.nodes - 1) // (2 if self.symmetric else 1)  # edges per graph
        self.register_buffer("edge_counts", torch.zeros(graphs, dtype=index_dtype(most + 1)))
        self.register_buffer("pairs", torch.zeros(2, 0, dtype=index_dtype(self.nodes)))
        self.register_buffer("weights", torch.zeros(0, dtype=_STORED_TYPES[edge_dtype]))
        self.register_buffer("weight_ranges", torch.zeros(1 if edge_dtype == "uint8" else 0, 2))
        for k, v in {"x": torch.zeros(0, f), "edge_index": torch.zeros(2, 0, dtype=torch.long),
                     "edge_weight": torch.zeros(0), "batch": torch.zeros(0, dtype=torch.long),
                     "padded_index": torch.zeros(2, 0, dtype=torch.long)}.items():
            self.register_buffer(k, v, persistent=False)

    def config(self):
        return {"graphs": self.graphs, "nodes": self.nodes, "dtype": self.dtype,
                "edge_dtype": self.edge_dtype, "symmetric": self.symmetric,
                "threshold": self.threshold}

    @classmethod
    @torch.no_grad()
    def from_graphs(cls, syn, *, dtype: str = "float16", threshold: float | None = None,
                    edge_dtype: str = "binary") -> "CompactGraphBatchSet":
        """The compact form of a ``graphs`` summary: its hard adjacencies (what evaluation
        trains on) with entries below ``threshold`` (default: the summary's own) dropped."""
        threshold = float(getattr(syn, "threshold", 0.0) if threshold is None else threshold)
        if threshold < 0:
            raise ConfigError(f"threshold must be >= 0, got {threshold}")
        adj = syn.adjacency().detach().float().cpu()
        if threshold > 0:
            adj = adj * (adj >= threshold)
        symmetric = bool(torch.equal(adj, adj.transpose(-1, -2)))
        x = syn.materialize()[0].detach().float().cpu()
        out = cls(syn.info, graphs=int(x.shape[0]), nodes=int(x.shape[1]), dtype=dtype,
                  edge_dtype=edge_dtype, symmetric=symmetric, threshold=threshold)
        out.set_graphs(x, syn.class_ids.cpu(), syn.sizes.cpu(), adj)
        return out

    @torch.no_grad()
    def set_graphs(self, x: Tensor, labels: Tensor, sizes: Tensor, adj: Tensor) -> None:
        """Store padded features [G, m, F], labels [G], sizes [G] and dense adjacencies
        [G, m, m] (A[g, i, j]: j -> i); rows and columns past a graph's size must be empty."""
        g, m = self.graphs, self.nodes
        if x.shape[:2] != (g, m) or adj.shape != (g, m, m) or labels.shape != (g,) \
                or sizes.shape != (g,):
            raise ValueError(f"expected {g} graphs of up to {m} nodes, got features "
                             f"{tuple(x.shape)}, adjacency {tuple(adj.shape)}, labels "
                             f"{tuple(labels.shape)}, sizes {tuple(sizes.shape)}")
        sizes = sizes.long()
        if int(sizes.min()) < 1 or int(sizes.max()) > m:
            raise ValueError(f"graph sizes must lie in 1..{m}, got {sizes.tolist()}")
        real = torch.arange(m)[None] < sizes[:, None]  # [G, m]
        adj = adj.detach().float().cpu()
        if bool((adj * ~(real[:, :, None] & real[:, None, :])).any()):
            raise ValueError("an adjacency has edges on padding nodes (past the graph's size)")
        keep = (adj != 0) & ~torch.eye(m, dtype=torch.bool)[None]
        if self.symmetric:
            keep &= torch.ones(m, m, dtype=torch.bool).triu(1)[None]
        b, i, j = keep.nonzero(as_tuple=True)  # graph-major order
        feats, franges = quantize(x[real], self.dtype)  # uint8: one (lo, hi) per node
        w = adj[b, i, j]
        weights, wr = _encode_weights(w, self.edge_dtype)
        counts = torch.bincount(b, minlength=g)
        stored = {"features": feats, "feature_ranges": franges,
                  "labels": labels.to(self.labels.dtype), "sizes": sizes.to(self.sizes.dtype),
                  "edge_counts": counts.to(self.edge_counts.dtype),
                  "pairs": torch.stack([i, j]).to(self.pairs.dtype), "weights": weights,
                  "weight_ranges": wr}
        dev = self.x.device
        for k, v in stored.items():
            setattr(self, k, v.to(dev))
        self._decode()

    def _decode(self) -> None:
        sizes = self.sizes.long()
        self.x = dequantize(self.features, self.dtype, self.feature_ranges)
        b = torch.arange(self.graphs, device=sizes.device).repeat_interleave(
            self.edge_counts.long())
        i, j = self.pairs.long()
        w = _decode_weights(self)
        if self.symmetric:
            b, i, j, w = torch.cat([b, b]), torch.cat([i, j]), torch.cat([j, i]), torch.cat([w, w])
        start = torch.cumsum(sizes, 0) - sizes  # first node of each graph among the real ones
        self.edge_index = torch.stack([start[b] + j, start[b] + i])  # message j -> i
        self.padded_index = torch.stack([b * self.nodes + j, b * self.nodes + i])
        self.edge_weight = w
        self.batch = torch.arange(self.graphs, device=sizes.device).repeat_interleave(sizes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        _resize_stored(self, state_dict, prefix, ("features", "feature_ranges", "pairs", "weights"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        self._decode()

    @property
    def class_ids(self) -> Tensor:
        return self.labels.long()

    def class_slice(self, c: int) -> slice:
        idx = (self.class_ids == c).nonzero().flatten()
        if idx.numel() == 0:
            return slice(0, 0)
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo != idx.numel():
            raise ValueError(f"the graphs of class {c} are not contiguous")
        return slice(lo, hi)

    def materialize(self) -> tuple[Tensor, Tensor]:
        """Padded features [G, m, F] (zero rows past each graph's size) and labels [G], as the
        source's ``materialize`` gave them."""
        sizes = self.sizes.long()
        real = torch.arange(self.nodes, device=sizes.device)[None] < sizes[:, None]
        x = self.x.new_zeros(self.graphs, self.nodes, self.x.shape[-1])
        x[real] = self.x
        return x, self.class_ids

    def adjacency(self, generator=None, temperature: float = 1.0) -> Tensor:
        a = self.x.new_zeros(self.graphs, self.nodes, self.nodes)
        src, dst = self.padded_index
        m = self.nodes
        a[dst // m, dst % m, src % m] = self.edge_weight
        return a

    def edges(self) -> tuple[Tensor, Tensor]:
        """The edge list over padded node ids (graph g's node i is g * nodes + i)."""
        return self.padded_index, self.edge_weight

    def inputs(self, generator=None, temperature: float = 1.0):
        return self.x, self.edge_index, self.edge_weight, self.batch, self.graphs

    def bytes_breakdown(self) -> dict[str, int]:
        parts = {k: nbytes(getattr(self, k)) for k in _BATCH_LAYOUT}
        return {**parts, "total": sum(parts.values()), "edges": int(self.edge_weight.numel())}

    def stored_bytes(self) -> int:
        return self.bytes_breakdown()["total"]
