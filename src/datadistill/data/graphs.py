"""Graph datasets through PyTorch Geometric: node classification on one graph (Planetoid Cora and
CiteSeer with the public split; Ogbn-arxiv, Flickr, Reddit) and graph classification on sets of
small graphs (TU MUTAG, PROTEINS, NCI1).

``data_dir`` is the PyG ``root``: the folder holding ``Cora/raw`` (Planetoid) or ``MUTAG/raw``
(TU); PyG writes ``processed/`` beside ``raw/``, so it must be writable. Without ``data_dir`` the
root is ``<cache>/pyg`` and PyG's normal download applies. Both data classes carry ``info``
(``modality="graph"``, ``shape=(num_features,)``, ``task`` = ``"node"`` or ``"graph"``)
and never use the test split for anything but evaluation.

Planetoid features are row-normalized (GCond's ``normalize_features=True``); TU graphs keep
PyG's one-hot node labels (plus continuous attributes, ``use_node_attr=True`` as in DosCond) and
get a fixed-seed 80/10/10 train/validation/test split (DosCond's protocol).
"""
from __future__ import annotations

import contextlib
import io
import urllib.error
from pathlib import Path

import torch
from torch import Tensor

from .base import DATASETS, DataFormatError, DataInfo, DatasetNotFoundError
from .files import cache_root

PYG_HINT = "graph datasets need PyTorch Geometric: pip install 'datadistill[graph]'"


def _pyg():
    try:
        import torch_geometric  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(PYG_HINT) from e
    import torch_geometric.datasets as ds
    return ds


def _root(data_dir) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else cache_root() / "pyg"


def _open(name: str, make, raw_dir: Path, download: bool):
    """Build a PyG dataset quietly (PyG prints progress), with clear errors when the files are
    missing and cannot be downloaded."""
    if not download and not raw_dir.is_dir():
        raise DatasetNotFoundError(f"{name}: no raw files in {raw_dir} and download=False; pass "
                                   f"data_dir=<folder holding {raw_dir.parent.name}/raw>")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return make()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DatasetNotFoundError(
            f"{name}: files not found under {raw_dir} and the download failed ({e}); run once "
            f"with a network, or pass data_dir=<folder holding {raw_dir.parent.name}/raw>") from e


class GraphData:
    """One graph for transductive node classification: features ``x`` [N, F] (dense),
    ``edge_index`` [2, E] (both directions), labels ``y`` [N] and train/val/test node indices."""

    def __init__(self, info: DataInfo, x: Tensor, edge_index: Tensor, y: Tensor,
                 train_idx: Tensor, val_idx: Tensor, test_idx: Tensor):
        if x.shape[0] != y.shape[0]:
            raise DataFormatError(f"{info.name}: {x.shape[0]} feature rows but {y.shape[0]} labels")
        self.info, self.x, self.edge_index, self.y = info, x, edge_index, y
        self.train_idx, self.val_idx, self.test_idx = train_idx, val_idx, test_idx
        self._by_class: list[Tensor] | None = None
        self._x_input: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def x_input(self) -> Tensor:
        """The features as the models' first layer should take them: a sparse CSR tensor on CPU
        when fewer than 10% of the entries are non-zero (bag-of-words graphs), else dense."""
        if self._x_input is None:
            nnz = int((self.x != 0).sum())
            sparse = nnz < 0.1 * self.x.numel()
            if sparse and self.x.device.type == "cpu":
                self._x_input = self.x.to_sparse_csr()
            else:
                self._x_input = self.x.to_sparse().coalesce() if sparse else self.x
        return self._x_input

    def to(self, device) -> "GraphData":
        return GraphData(self.info, self.x.to(device), self.edge_index.to(device), self.y.to(device),
                         self.train_idx.to(device), self.val_idx.to(device), self.test_idx.to(device))

    def class_indices(self, c: int) -> Tensor:
        """Indices (into all nodes, on CPU) of the labelled training nodes of class ``c``."""
        if self._by_class is None:
            tr, y = self.train_idx.cpu(), self.y.cpu()
            self._by_class = [tr[y[tr] == k] for k in range(self.info.num_classes)]
        return self._by_class[c]

    def class_counts(self) -> list[int]:
        return [len(self.class_indices(c)) for c in range(self.info.num_classes)]

    def __repr__(self) -> str:
        return (f"GraphData({self.info.name}: {self.num_nodes} nodes, {self.edge_index.shape[1]} "
                f"directed edges, {self.info.shape[0]} features, {self.info.num_classes} classes; "
                f"train {len(self.train_idx)}, val {len(self.val_idx)}, test {len(self.test_idx)})")


class GraphSetData:
    """A set of small graphs for graph classification (a PyG in-memory dataset of ``Data``),
    with labels ``y`` [G] and train/val/test graph indices."""

    def __init__(self, info: DataInfo, graphs, train_idx: Tensor, val_idx: Tensor, test_idx: Tensor):
        self.info, self.graphs = info, graphs
        self.y = torch.tensor([int(g.y.view(-1)[0]) for g in graphs])
        self.train_idx, self.val_idx, self.test_idx = train_idx, val_idx, test_idx
        self._by_class: list[Tensor] | None = None
        self._device = torch.device("cpu")
        self._cache: dict[bytes, tuple[Tensor, ...]] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device) -> "GraphSetData":
        out = GraphSetData(self.info, self.graphs, self.train_idx, self.val_idx, self.test_idx)
        out._device = torch.device(device)
        if out._device == self._device:
            out._cache = self._cache  # same tensors: share the collation cache
        return out

    def class_indices(self, c: int) -> Tensor:
        """Indices of the training graphs of class ``c``."""
        if self._by_class is None:
            tr = self.train_idx
            self._by_class = [tr[self.y[tr] == k] for k in range(self.info.num_classes)]
        return self._by_class[c]

    def class_counts(self) -> list[int]:
        return [len(self.class_indices(c)) for c in range(self.info.num_classes)]

    def batch(self, idx: Tensor):
        """``(x, edge_index, batch, y)`` of graphs ``idx`` collated into one disjoint graph
        (collations of 64+ graphs, e.g. the validation split, are cached)."""
        from torch_geometric.data import Batch
        key = torch.as_tensor(idx).cpu().numpy().tobytes() if len(idx) >= 64 else None
        if key is not None and key in self._cache:
            return self._cache[key]
        b = Batch.from_data_list([self.graphs[int(i)] for i in idx])
        d = self._device
        out = b.x.float().to(d), b.edge_index.to(d), b.batch.to(d), b.y.view(-1).to(d)
        if key is not None:
            self._cache[key] = out
        return out

    def sample_class(self, c: int, n: int, generator: torch.Generator):
        """A batch of ``min(n, class size)`` random training graphs of class ``c``."""
        idx = self.class_indices(c)
        return self.batch(idx[torch.randperm(len(idx), generator=generator)[:n]])

    def num_nodes(self, idx: Tensor | None = None) -> Tensor:
        idx = self.train_idx if idx is None else idx
        return torch.tensor([self.graphs[int(i)].num_nodes for i in idx])

    def __repr__(self) -> str:
        return (f"GraphSetData({self.info.name}: {len(self.graphs)} graphs, "
                f"{self.info.shape[0]} node features, {self.info.num_classes} classes; train "
                f"{len(self.train_idx)}, val {len(self.val_idx)}, test {len(self.test_idx)})")


def _node_data(name: str, d, extra: dict) -> GraphData:
    idx = lambda m: torch.nonzero(m).flatten()  # noqa: E731
    y = d.y.view(-1).long()
    k = int(y.max()) + 1
    info = DataInfo(name=name, modality="graph", num_classes=k, shape=(int(d.x.shape[1]),),
                    flip=False, task="node", extra={"num_nodes": int(d.num_nodes),
                                       "num_edges": int(d.edge_index.shape[1]), **extra})
    return GraphData(info, d.x.float(), d.edge_index, y, idx(d.train_mask), idx(d.val_mask),
                     idx(d.test_mask))


def _planetoid(name: str, pyg_name: str):
    def load(data_dir=None, download=True) -> GraphData:
        ds = _pyg()
        import torch_geometric.transforms as T
        root = _root(data_dir)
        d = _open(name, lambda: ds.Planetoid(str(root), pyg_name, split="public",
                                             transform=T.NormalizeFeatures()),
                  root / pyg_name / "raw", download)[0]
        return _node_data(name, d, {"split": "public", "features": "row-normalized"})
    load.__doc__ = f"Planetoid {pyg_name}, public split (20 labelled nodes per class, 500 val, 1000 test)."
    return load


DATASETS.register("cora", _planetoid("cora", "Cora"))
DATASETS.register("citeseer", _planetoid("citeseer", "CiteSeer"))


def _large(name: str, cls_name: str):
    def load(data_dir=None, download=True) -> GraphData:
        ds = _pyg()
        root = _root(data_dir) / cls_name
        d = _open(name, lambda: getattr(ds, cls_name)(str(root)), root / "raw", download)[0]
        return _node_data(name, d, {"split": "pyg"})
    load.__doc__ = f"PyG {cls_name} (downloads on first use; needs a network)."
    return load


DATASETS.register("flickr", _large("flickr", "Flickr"))
DATASETS.register("reddit", _large("reddit", "Reddit"))


@DATASETS.register("ogbn-arxiv")
def load_arxiv(data_dir=None, download=True) -> GraphData:
    """OGB's ogbn-arxiv with its official time split (needs ``pip install ogb`` and a network);
    edges are made undirected as GCond does."""
    _pyg()
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError as e:
        raise DatasetNotFoundError("ogbn-arxiv needs the OGB package: pip install ogb") from e
    from torch_geometric.utils import to_undirected
    root = _root(data_dir)
    dset = _open("ogbn-arxiv", lambda: PygNodePropPredDataset("ogbn-arxiv", root=str(root)),
                 root / "ogbn_arxiv" / "raw", download)
    d, split = dset[0], dset.get_idx_split()
    mask = lambda i: torch.zeros(d.num_nodes, dtype=torch.bool).index_fill_(0, i, True)  # noqa: E731
    d.edge_index = to_undirected(d.edge_index, num_nodes=d.num_nodes)
    d.train_mask, d.val_mask, d.test_mask = (mask(split[k]) for k in ("train", "valid", "test"))
    return _node_data("ogbn-arxiv", d, {"split": "ogb-time"})


def _tu(name: str, pyg_name: str):
    def load(data_dir=None, download=True, split_seed: int = 0) -> GraphSetData:
        ds = _pyg()
        root = _root(data_dir)
        dset = _open(name, lambda: ds.TUDataset(str(root), pyg_name, use_node_attr=True),
                     root / pyg_name / "raw", download)
        if dset.num_node_features == 0:
            raise DataFormatError(f"{name}: graphs have no node features")
        g = len(dset)
        perm = torch.randperm(g, generator=torch.Generator().manual_seed(split_seed))
        n = (g + 9) // 10  # DosCond: first 10% test, next 10% validation, the rest train
        test, val, train = perm[:n], perm[n:2 * n], perm[2 * n:]
        sizes = torch.tensor([dset[i].num_nodes for i in range(g)], dtype=torch.float)
        info = DataInfo(name=name, modality="graph", num_classes=int(dset.num_classes),
                        shape=(int(dset.num_node_features),), flip=False,
                        task="graph", extra={"num_graphs": g,
                               "mean_nodes": round(float(sizes.mean()), 2),
                               "max_nodes": int(sizes.max()), "split_seed": split_seed})
        graphs = [dset[i] for i in range(g)]
        return GraphSetData(info, graphs, train.sort().values, val.sort().values, test.sort().values)
    load.__doc__ = f"TU {pyg_name} (graph classification), 80/10/10 split with ``split_seed``."
    return load


for _n, _p in (("mutag", "MUTAG"), ("proteins", "PROTEINS"), ("nci1", "NCI1")):
    DATASETS.register(_n, _tu(_n, _p))
