"""Graph neural networks: GCN, SGC, GraphSAGE and GAT, for node and graph classification.

Built from a graph ``DataInfo`` (``modality="graph"``, ``shape=(num_features,)``); the task,
``info.task`` (``"node"`` or ``"graph"``), picks the head and the published defaults:

* node classification (GCond's evaluation network): 2 layers, hidden 256, dropout 0.5; the last
  layer is a graph convolution to the classes; ``embed`` is the last hidden layer's output.
* graph classification (DosCond's network): 3 layers, hidden 128, no dropout, ReLU after every
  layer, mean pooling per graph, a linear classifier; ``embed`` is the pooled vector.

Forward signature (all four)::

    model(x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> logits
    model.embed(x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> features

``x`` [N, F] dense or sparse COO; ``edge_index`` [2, E] (PyG convention, source -> target, both
directions for undirected graphs, no self-loops needed); ``edge_weight`` [E] optional and
differentiable (the synthetic adjacency's entries); ``batch`` [N] graph index of every node for
graph classification. ``dense_to_edges`` turns a dense (possibly batched) adjacency into these.
Every weight lives in an ``nn.Linear`` so ``create_model(..., generator=g)`` initialises it
reproducibly; message passing uses ``index_add`` (twice differentiable, for gradient matching)
and PyG's segment ``softmax`` (GAT).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MODELS

NODE_DEFAULTS = {"hidden": 256, "layers": 2, "dropout": 0.5}
GRAPH_DEFAULTS = {"hidden": 128, "layers": 3, "dropout": 0.0}


def dense_to_edges(adj: Tensor, *, keep_zeros: bool = False) -> tuple[Tensor, Tensor]:
    """A dense adjacency [n, n] (or a batch [G, m, m], graphs numbered consecutively) -> the
    ``(edge_index, edge_weight)`` of its off-diagonal non-zero entries (all off-diagonal pairs with
    ``keep_zeros``); the weights stay differentiable."""
    if adj.dim() == 2:
        adj = adj[None]
    g, m, _ = adj.shape
    off = ~torch.eye(m, dtype=torch.bool, device=adj.device)
    keep = off[None].expand(g, m, m) if keep_zeros else (adj.detach() != 0) & off[None]
    b, i, j = torch.nonzero(keep, as_tuple=True)
    return torch.stack([b * m + j, b * m + i]), adj[b, i, j]  # message j -> i


def _sparse(x: Tensor) -> bool:
    return x.layout != torch.strided  # COO or CSR


def _linear(x: Tensor, weight: Tensor) -> Tensor:
    return torch.sparse.mm(x, weight.t()) if _sparse(x) else x @ weight.t()


def _propagate(h: Tensor, edge_index: Tensor, w: Tensor, n: int) -> Tensor:
    """sum_j w_ij h_j into node i. Constant weights on a 2-D ``h``: a sparse CSR product (several
    times faster on real graphs); differentiable weights: gather + ``index_add`` (twice
    differentiable in ``w``, which gradient matching through the synthetic adjacency needs)."""
    src, dst = edge_index
    if not w.requires_grad and h.dim() == 2 and h.device.type == "cpu":
        a = torch.sparse_coo_tensor(torch.stack([dst, src]), w.to(h.dtype), (n, h.shape[0]),
                                    check_invariants=False)
        return torch.sparse.mm(a.coalesce().to_sparse_csr(), h)
    msg = h[src] * w.view(-1, *([1] * (h.dim() - 1)))
    return torch.zeros(n, *h.shape[1:], dtype=h.dtype, device=h.device).index_add(0, dst, msg)


def _weights(edge_index: Tensor, edge_weight: Tensor | None, dtype, device) -> Tensor:
    if edge_weight is None:
        return torch.ones(edge_index.shape[1], dtype=dtype, device=device)
    return edge_weight.to(dtype)


def gcn_norm(edge_index: Tensor, edge_weight: Tensor | None, n: int, dtype=torch.float32):
    """Kipf & Welling's D^-1/2 (A + I) D^-1/2 as an edge list (self-loops of weight 1 added)."""
    dev = edge_index.device
    w = _weights(edge_index, edge_weight, dtype, dev)
    loop = torch.arange(n, device=dev)
    ei = torch.cat([edge_index, torch.stack([loop, loop])], 1)
    w = torch.cat([w, torch.ones(n, dtype=dtype, device=dev)])
    deg = torch.zeros(n, dtype=dtype, device=dev).index_add(0, ei[1], w)
    dinv = deg.clamp_min(1e-12).pow(-0.5)
    return ei, dinv[ei[0]] * w * dinv[ei[1]]


def mean_pool(h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    s = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device).index_add(0, batch, h)
    cnt = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(h.dtype)
    return s / cnt[:, None]


def graph_task(info) -> str:
    """``"node"`` or ``"graph"``; a clear error for non-graph data."""
    if getattr(info, "modality", None) != "graph":
        raise ValueError(f"graph models need a graph dataset (modality 'graph'), "
                         f"got {getattr(info, 'modality', None)!r}")
    task = info.task or "node"
    if task not in ("node", "graph"):
        raise ValueError(f"unknown graph task {task!r}; known: node, graph")
    return task


def _pool(h: Tensor, batch: Tensor | None, num_graphs: int | None) -> Tensor:
    if batch is None:
        batch = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
    return mean_pool(h, batch, int(num_graphs) if num_graphs is not None else int(batch.max()) + 1)


class GNN(nn.Module):
    """Shared skeleton: ``layers`` message-passing layers, ReLU + dropout between them; a node
    head (the last layer maps to the classes) or a graph head (mean pool + linear)."""

    modality = "graph"

    def __init__(self, info, *, hidden: int | None = None, layers: int | None = None,
                 dropout: float | None = None):
        super().__init__()
        self.task = graph_task(info)
        d = NODE_DEFAULTS if self.task == "node" else GRAPH_DEFAULTS
        self.hidden = int(hidden if hidden is not None else d["hidden"])
        self.num_layers = int(layers if layers is not None else d["layers"])
        self.dropout = float(dropout if dropout is not None else d["dropout"])
        if self.num_layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.num_layers}")
        f, k = int(info.shape[0]), info.num_classes
        node = self.task == "node"
        n_conv = self.num_layers - 1 if node else self.num_layers
        dims = [f] + [self.hidden] * n_conv
        self.convs = nn.ModuleList(self.make_layer(a, b, False) for a, b in zip(dims[:-1], dims[1:]))
        self.feature_dim = dims[-1]
        self.head = self.make_layer(dims[-1], k, True) if node else nn.Linear(dims[-1], k)

    def make_layer(self, d_in: int, d_out: int, last: bool) -> nn.Module:
        raise NotImplementedError

    def embed(self, x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x, edge_index, edge_weight))
            if self.task == "node":
                x = F.dropout(x, self.dropout, self.training)
        return _pool(x, batch, num_graphs) if self.task == "graph" else x

    def forward(self, x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> Tensor:
        h = self.embed(x, edge_index, edge_weight, batch, num_graphs)
        return self.head(h, edge_index, edge_weight) if self.task == "node" else self.head(h)


class GCNLayer(nn.Module):
    """h' = D^-1/2 (A+I) D^-1/2 h W + b."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x, edge_index, edge_weight=None):
        h = _linear(x, self.lin.weight)
        ei, w = gcn_norm(edge_index, edge_weight, h.shape[0], h.dtype)
        return _propagate(h, ei, w, h.shape[0]) + self.lin.bias


@MODELS.register("gcn")
class GCN(GNN):
    """Kipf & Welling (ICLR'17) graph convolutional network."""

    def make_layer(self, d_in, d_out, last):
        return GCNLayer(d_in, d_out)


@MODELS.register("sgc")
class SGC(nn.Module):
    """Wu et al. (ICML'19) simplified graph convolution: logits = A_hat^K X W + b with K = 2
    (GCond's ``nlayers=2``); ``embed`` is A_hat^K X (mean-pooled per graph for graph
    classification), so the only weights are the linear classifier's."""

    modality = "graph"

    #: ``embed`` has no parameters, so callers may cache it for a fixed graph.
    param_free_embed = True

    def __init__(self, info, *, k: int = 2):
        super().__init__()
        self.task = graph_task(info)
        self.k = int(k)
        self.feature_dim = int(info.shape[0])
        self.head = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> Tensor:
        x = x.to_dense() if _sparse(x) else x
        ei, w = gcn_norm(edge_index, edge_weight, x.shape[0], x.dtype)
        for _ in range(self.k):
            x = _propagate(x, ei, w, x.shape[0])
        return _pool(x, batch, num_graphs) if self.task == "graph" else x

    def forward(self, x, edge_index, edge_weight=None, batch=None, num_graphs=None) -> Tensor:
        if self.task == "graph":
            return self.head(self.embed(x, edge_index, edge_weight, batch, num_graphs))
        h = _linear(x, self.head.weight)  # the same linear map, W first (cheaper when F > K)
        ei, w = gcn_norm(edge_index, edge_weight, h.shape[0], h.dtype)
        for _ in range(self.k):
            h = _propagate(h, ei, w, h.shape[0])
        return h + self.head.bias


class SAGELayer(nn.Module):
    """h'_i = W_1 h_i + W_2 mean_{j in N(i)} h_j (edge-weighted mean) + b."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.lin_self = nn.Linear(d_in, d_out)
        self.lin_nbr = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x, edge_index, edge_weight=None):
        n = x.shape[0]
        h = _linear(x, self.lin_nbr.weight)
        w = _weights(edge_index, edge_weight, h.dtype, h.device)
        deg = torch.zeros(n, dtype=h.dtype, device=h.device).index_add(0, edge_index[1], w)
        agg = _propagate(h, edge_index, w, n) / deg.clamp_min(1e-12)[:, None]
        return _linear(x, self.lin_self.weight) + self.lin_self.bias + agg


@MODELS.register("graphsage")
class GraphSAGE(GNN):
    """Hamilton et al. (NeurIPS'17) GraphSAGE with mean aggregation (edge-weighted)."""

    def make_layer(self, d_in, d_out, last):
        return SAGELayer(d_in, d_out)


class GATLayer(nn.Module):
    """Velickovic et al.'s attention layer; an edge weight w_ij scales the attention before
    normalisation (alpha_ij ∝ w_ij exp(e_ij)), so weighted synthetic graphs are usable; for
    0/1 graphs it is plain GAT. Heads are concatenated (hidden layers) or averaged (output)."""

    def __init__(self, d_in: int, d_out: int, heads: int, concat: bool, dropout: float):
        super().__init__()
        self.heads, self.concat, self.dropout = heads, concat, dropout
        self.out = d_out // heads if concat else d_out
        self.lin = nn.Linear(d_in, heads * self.out, bias=False)
        self.att_src = nn.Linear(self.out, heads, bias=False)  # weight [heads, out]
        self.att_dst = nn.Linear(self.out, heads, bias=False)
        self.bias = nn.Linear(1, d_out if concat else self.out, bias=False)  # a learned bias

    def forward(self, x, edge_index, edge_weight=None):
        from torch_geometric.utils import softmax
        n = x.shape[0]
        h = _linear(x, self.lin.weight).view(n, self.heads, self.out)
        w = _weights(edge_index, edge_weight, h.dtype, h.device)
        loop = torch.arange(n, device=h.device)
        ei = torch.cat([edge_index, torch.stack([loop, loop])], 1)
        w = torch.cat([w, torch.ones(n, dtype=h.dtype, device=h.device)])
        a_s = (h * self.att_src.weight[None]).sum(-1)
        a_d = (h * self.att_dst.weight[None]).sum(-1)
        e = F.leaky_relu(a_s[ei[0]] + a_d[ei[1]], 0.2) + torch.log(w.clamp_min(1e-12))[:, None]
        alpha = F.dropout(softmax(e, ei[1], num_nodes=n), self.dropout, self.training)
        out = torch.zeros_like(h).index_add(0, ei[1], h[ei[0]] * alpha[..., None])
        out = out.reshape(n, -1) if self.concat else out.mean(1)
        return out + self.bias.weight[:, 0]


@MODELS.register("gat")
class GAT(GNN):
    """Velickovic et al. (ICLR'18) graph attention network; published Cora settings: 8 heads of
    8 hidden units (hidden 64), dropout 0.6 on features and attention, one output head."""

    def __init__(self, info, *, heads: int = 8, hidden: int | None = None,
                 dropout: float | None = None, **kw):
        self.heads = int(heads)
        task = info.task or "node" if getattr(info, "modality", None) == "graph" else None
        hidden = hidden if hidden is not None else (64 if task == "node" else None)
        dropout = dropout if dropout is not None else (0.6 if task == "node" else None)
        super().__init__(info, hidden=hidden, dropout=dropout, **kw)

    def make_layer(self, d_in, d_out, last):
        if not last and d_out % self.heads:
            raise ValueError(f"GAT hidden size {d_out} is not divisible by {self.heads} heads")
        return GATLayer(d_in, d_out, 1 if last else self.heads, not last, self.dropout)

    def embed(self, x, edge_index, edge_weight=None, batch=None, num_graphs=None):
        if self.task == "node":
            x = F.dropout(x.to_dense() if _sparse(x) else x, self.dropout, self.training)
        return super().embed(x, edge_index, edge_weight, batch, num_graphs)
