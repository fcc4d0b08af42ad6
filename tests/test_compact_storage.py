"""Compact storage of recommender and graph summaries (issue 17, "bytes for every modality"):
top-k sparse rows with quantized values, sparse thresholded graphs with low-precision features;
round trips, honest byte counts, quantization-aware Distill-CF, errors, the CLI."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datadistill.cli import main as cli_main
from datadistill.compact import bytes_breakdown, compact, dequantize, index_dtype, quantize
from datadistill.data import DataInfo, load_dataset
from datadistill.data.recsys import Interactions, build
from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError
from datadistill.evaluation import evaluate
from datadistill.synsets import load_summary
from datadistill.synsets.compact_users import CompactUserSet
from datadistill.synsets.compact_graph import CompactGraphBatchSet, CompactGraphSet
from datadistill.synsets.graph import GraphBatchSet, GraphSet
from datadistill.synsets.users import GumbelUserSet, UserRowSet

RECSYS = DataInfo("r", "recsys", 1, (300,))
GRAPH = DataInfo("g", "graph", 3, (6,), task="node")
GRAPHS = DataInfo("t", "graph", 2, (5,), task="graph")


def soft_rows(users=7, items=300, seed=0, density=0.5):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(users, items, generator=g)
    return r * (torch.rand(users, items, generator=g) < density)


def topk_mask(rows, k):
    top = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, rows.topk(k, 1).indices, True)
    return top & (rows != 0)


@pytest.fixture(scope="module")
def clusters():
    """80 users in 4 taste groups over 40 items (the recommender tests' toy log)."""
    rng = np.random.default_rng(0)
    u, i = [], []
    for user in range(80):
        g = user % 4
        for it in rng.choice(np.arange(g * 10, (g + 1) * 10), 6, replace=False):
            u.append(f"u{user}")
            i.append(f"i{it}")
    return build("clusters", Interactions(np.array(u), np.array(i), np.ones(len(u)),
                                          np.arange(len(u))), k_core_min=2, split_seed=0)


# -- the encoding helpers ---------------------------------------------------------------------------
def test_index_dtype_is_the_smallest_that_holds_the_ids():
    assert index_dtype(256) == torch.uint8 and index_dtype(257) == torch.int16
    assert index_dtype(2414) == torch.int16 and index_dtype(1 << 15) == torch.int16
    assert index_dtype((1 << 15) + 1) == torch.int32


def test_uint8_quantization_is_affine_per_row_and_idempotent():
    v = torch.randn(4, 50) * torch.tensor([[1.0], [10.0], [0.01], [0.0]])
    q, rng = quantize(v, "uint8")
    assert q.dtype == torch.uint8 and rng.shape == (4, 2)
    back = dequantize(q, "uint8", rng)
    span = (v.amax(1) - v.amin(1))[:, None]
    assert ((back - v).abs() <= span / 510 + 1e-6).all()
    assert torch.equal(back[3], v[3])  # a constant row is exact
    q2, rng2 = quantize(back, "uint8")  # decoded values re-encode bit for bit
    assert torch.equal(dequantize(q2, "uint8", rng2), back)


# -- recommender rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "uint8", "binary"])
def test_topk_rows_round_trip_and_bytes(tmp_path, dtype):
    rows, k = soft_rows(), 5
    syn = CompactUserSet.from_rows(RECSYS, rows, topk=k, dtype=dtype)
    mask = topk_mask(rows, k)
    x, y = syn.materialize()
    assert x is y and x.shape == rows.shape and syn.layout == "sparse"
    assert torch.equal(x != 0, mask)  # exactly the top-k entries
    want = rows * mask
    if dtype == "float32":
        assert torch.equal(x, want)
    elif dtype == "binary":
        assert torch.equal(x, mask.float())
    elif dtype == "uint8":
        kept = torch.where(mask, rows, torch.nan)
        span = (kept.nan_to_num(-1).amax(1) - kept.nan_to_num(2).amin(1))[:, None]
        assert ((x - want).abs() <= span / 510 + 1e-6).all()
    else:
        assert torch.allclose(x, want, rtol=1e-2)
    # bytes: counts (uint8: k < 256) + item ids (int16: 300 items) + values + uint8 ranges
    value_bytes = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1, "binary": 0}[dtype]
    nnz = 7 * k
    expected = 7 + 2 * nnz + value_bytes * nnz + (8 * 7 if dtype == "uint8" else 0)
    assert syn.stored_bytes() == expected == bytes_breakdown(syn)["total"]
    # save -> load: the same rows, bit for bit; the file holds the compact tensors only
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    assert isinstance(back, CompactUserSet) and back.config() == syn.config()
    assert torch.equal(back.materialize()[0], x) and back.stored_bytes() == syn.stored_bytes()
    on_disk = load_file(str(tmp_path / "s" / "summary.safetensors"))
    assert sum(t.numel() * t.element_size() for t in on_disk.values()) <= expected
    assert on_disk["indices"].numel() == nnz and "rows" not in on_disk


def test_every_nonzero_sparse_or_dense_whichever_is_smaller():
    sparse = soft_rows(density=0.05)
    s = CompactUserSet.from_rows(RECSYS, sparse, dtype="float32")
    assert s.layout == "sparse" and torch.equal(s.rows, sparse)
    dense = torch.rand(7, 300) + 0.01  # soft Distill-CF rows: every entry > 0
    d = CompactUserSet.from_rows(RECSYS, dense, dtype="uint8")
    assert d.layout == "dense" and d.stored_bytes() == 7 * 300 + 8 * 7
    assert (d.rows - dense).abs().max() <= 1 / 255


def test_compact_conversion_keeps_metadata_and_leaves_the_source(tmp_path):
    src = UserRowSet(RECSYS, users=7)
    src.rows.copy_((soft_rows() > 0.6).float())
    src.meta.update({"method": "random", "seed": 3, "dataset_source": "r"})
    before = src.rows.clone()
    out = compact(src, dtype="binary")  # lossless for binary rows
    assert torch.equal(src.rows, before) and torch.equal(out.rows, before)
    assert out.meta["method"] == "random" and out.meta["seed"] == 3
    assert out.meta["compacted_from"] == {"kind": "user-rows", "stored_bytes": src.stored_bytes()}
    assert out.meta["compact"] == {"users": 7, "topk": None, "dtype": "binary"}
    assert out.stored_bytes() < src.stored_bytes()  # int16 ids, no values, uint16->uint8 counts


def test_bad_topk_and_dtype_are_config_errors():
    rows = soft_rows()
    for k in (0, -3, 1.5, True, "5"):
        with pytest.raises(ConfigError, match="topk"):
            CompactUserSet.from_rows(RECSYS, rows, topk=k)
    for dt in ("int8", "float64", "fp16", None):
        with pytest.raises(ConfigError, match="dtype"):
            CompactUserSet.from_rows(RECSYS, rows, topk=3, dtype=dt)
    src = UserRowSet(RECSYS, users=7)
    with pytest.raises(ConfigError, match="threshold"):
        compact(src, threshold=0.5)
    with pytest.raises(ConfigError, match="topk"):
        compact(GraphSet(GRAPH, counts=[1, 1, 1], adjacency="none"), topk=3)
    from datadistill.synsets.pixels import PixelSet
    with pytest.raises(ConfigError, match="no compact storage"):
        compact(PixelSet(DataInfo("i", "image", 2, (1, 4, 4)), ipc=1), topk=3)
    with pytest.raises(ConfigError, match="compact needs a summary"):
        compact(rows, topk=3)


# -- Distill-CF in compact storage ----------------------------------------------------------------------
def test_gumbel_users_compact_is_quantization_aware(tmp_path):
    syn = GumbelUserSet(RECSYS, users=7)
    with torch.no_grad():
        syn.logits.copy_(torch.randn(7, 300))
    syn.set_compact(topk=10, dtype="uint8")
    assert syn.config()["compact"] == {"topk": 10, "dtype": "uint8"}
    rs = syn.sample_mean(samples=50, tau=10.0)
    assert ((rs != 0).sum(1) == 10).all()  # the draw is what is stored ...
    (rs * torch.randn(rs.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert (syn.logits.grad.abs() > 1e-6).float().mean() > 0.9  # ... with a straight-through gradient
    syn.set_rows(rs)
    assert torch.equal(syn.rows, rs.detach())
    assert syn.stored_bytes() == 7 + 70 * 2 + 70 + 56 < 4 * 7 * 300  # dense soft rows: float32
    syn.save(tmp_path / "s")  # a compact run's summary is the topk-users summary
    back = load_summary(tmp_path / "s")
    assert back.kind == "topk-users" and torch.equal(back.rows, syn.rows)
    assert back.stored_bytes() == syn.stored_bytes()
    # the run parameter ``storage``: a precision; top-k from ``compact`` when set
    assert syn.set_storage("float16").compact == {"topk": 10, "dtype": "float16"}
    plain = GumbelUserSet(RECSYS, users=7)
    assert plain.set_storage("float32").compact is None
    assert plain.set_storage("uint8-channel").compact == {"topk": None, "dtype": "uint8"}
    with pytest.raises(ValueError, match="unknown storage"):
        plain.set_storage("int4")


def test_distill_cf_runs_in_compact_storage(clusters, tmp_path):
    d = create_distiller("distill-cf", "tiny", storage="uint8")
    syn = d.init_synset(clusters, users=8).set_compact(topk=6, dtype="uint8")
    d.distill(clusters, syn, workdir=tmp_path / "run")
    assert syn.compact == {"topk": 6, "dtype": "uint8"} and ((syn.rows != 0).sum(1) <= 6).all()
    back = load_summary(tmp_path / "run" / "summary")
    assert back.kind == "topk-users" and torch.equal(back.rows, syn.rows)
    assert back.meta["method"] == "distill-cf" and back.meta["params"]["storage"] == "uint8"
    rep = evaluate(back, clusters, models=["inf-ae"], protocol="smoke")
    assert rep.summary["stored_bytes"] == back.stored_bytes()
    assert math.isfinite(rep.results["inf-ae"]["mean"])


@pytest.mark.parametrize("storage,dtype", [(None, "float16"), ("uint8", "uint8")])
def test_distill_cf_topk_parameter_distils_in_the_top_k_layout(clusters, tmp_path, storage, dtype):
    """``--set topk=K`` (a method parameter, so a suite row can name it) is ``set_compact`` at
    the run's storage precision, float16 when none is given; the saved summary is top-k."""
    d = create_distiller("distill-cf", "tiny", topk=3, **({"storage": storage} if storage else {}))
    syn = d.init_synset(clusters, users=8)
    assert syn.compact == {"topk": 3, "dtype": dtype}
    d.distill(clusters, syn, workdir=tmp_path / "run")
    back = load_summary(tmp_path / "run" / "summary")
    assert back.kind == "topk-users" and ((back.rows != 0).sum(1) == 3).all()
    assert back.meta["params"]["topk"] == 3 and torch.equal(back.rows, syn.rows)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ConfigError, match="topk"):
            create_distiller("distill-cf", "tiny", topk=bad)

def test_movietweetings_lossless_compact_evaluates_identically(shared_data, tmp_path):
    """The test-sized form of the bytes-vs-nDCG measurement (docs/recommender.md): a 100-user
    subset stored as binary top-all evaluates exactly as the dense rows, in fewer bytes; its
    top-5 truncation costs fewer bytes still and evaluates."""
    src = shared_data / "recsys" / "movietweetings"
    if not src.is_dir():
        pytest.skip(f"{src} not available")
    shutil.copytree(src, tmp_path / "mt")
    real = load_dataset("movietweetings", data_dir=tmp_path / "mt")
    from datadistill.baselines.recsys import select_users
    sub = select_users(real, 100, "random", seed=0)
    lossless, top5 = compact(sub, dtype="binary"), compact(sub, topk=5, dtype="binary")
    assert torch.equal(lossless.rows, sub.rows) and lossless.indices.dtype == torch.int16
    assert top5.stored_bytes() < lossless.stored_bytes() < sub.stored_bytes()
    reps = [evaluate(s, real, models=["inf-ae"], protocol="smoke") for s in (sub, lossless, top5)]
    nd = [r.results["inf-ae"]["mean"] for r in reps]
    assert nd[0] == nd[1] and math.isfinite(nd[2])


# -- graphs ----------------------------------------------------------------------------------------
def _pge_graph(threshold=0.0):
    torch.manual_seed(0)
    syn = GraphSet(GRAPH, counts=[3, 3, 2], adjacency="pge", pge_hidden=8, threshold=threshold)
    with torch.no_grad():
        syn.x.copy_(torch.randn(8, 6))
    return syn


def test_graph_bytes_breakdown_counts_what_is_stored():
    syn = _pge_graph()
    b = syn.bytes_breakdown()
    assert b["total"] == syn.stored_bytes() == b["features"] + b["labels"] + b["edge_index"] + b["edge_weight"]
    assert b["edges"] == 8 * 7 and b["uncounted_dense_adjacency"] == 4 * 64
    assert b["uncounted_generator"] == 4 * sum(p.numel() for p in syn.pge.parameters())


@pytest.mark.parametrize("dtype,edge_dtype", [("float32", "float32"), ("float16", "float16"),
                                              ("uint8", "uint8"), ("bfloat16", "binary")])
def test_compact_graph_round_trip(tmp_path, dtype, edge_dtype):
    syn = _pge_graph()
    with torch.no_grad():
        adj, x = syn.adjacency(), syn.x.clone()
    out = compact(syn, dtype=dtype, threshold=0.5, edge_dtype=edge_dtype)
    kept = adj * (adj >= 0.5)
    assert isinstance(out, CompactGraphSet) and out.kind == "compact-graph" and out.symmetric
    assert out.pairs.shape[1] * 2 == int((kept != 0).sum())  # each undirected edge once
    assert torch.equal(out.adjacency() != 0, kept != 0)
    if dtype == "float32":
        assert torch.equal(out.x, x) and torch.equal(out.adjacency(), kept)
    elif dtype == "uint8":
        assert ((out.x - x).abs() <= (x.amax(1) - x.amin(1))[:, None] / 510 + 1e-6).all()
    if edge_dtype == "binary":
        assert torch.equal(out.adjacency(), (kept != 0).float())
    assert torch.equal(out.class_ids, syn.class_ids)
    b = out.bytes_breakdown()
    assert b["total"] == out.stored_bytes() == sum(v for k, v in b.items() if k not in ("total", "edges"))
    assert out.stored_bytes() < syn.stored_bytes()
    out.save(tmp_path / "g")
    back = load_summary(tmp_path / "g")
    for a, c in zip(back.inputs()[:3], out.inputs()[:3]):
        assert torch.equal(a, c)
    assert back.stored_bytes() == out.stored_bytes()
    # a GNN takes the compact inputs like any graph summary's
    from datadistill.models import create_model
    net = create_model("gcn", GRAPH, generator=torch.Generator().manual_seed(0))
    assert net(*back.inputs()[:3]).shape == (8, 3)


def test_compact_graph_at_float32_matches_the_source_gnn_output():
    syn = _pge_graph(threshold=0.3)
    out = compact(syn, dtype="float32", edge_dtype="float32")  # the summary's own threshold
    assert out.threshold == 0.3
    from datadistill.models import create_model
    net = create_model("gcn", GRAPH, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        a, b = net(*syn.inputs()[:3]), net(*out.inputs()[:3])
    assert torch.allclose(a, b, atol=1e-5)



def _graph_set(adjacency="bernoulli"):
    """Two classes x 3 graphs of up to 6 nodes; with ``fixed`` edges, graphs of 4 to 6 nodes."""
    torch.manual_seed(1)
    syn = GraphBatchSet(GRAPHS, ipc=3, nodes=6, adjacency=adjacency)
    with torch.no_grad():
        syn.x.copy_(torch.randn(6, 6, 5))
        if adjacency == "bernoulli":
            syn.adj_logits.copy_(torch.randn(6, 6, 6) * 2)
        else:
            sizes = torch.tensor([6, 4, 5, 6, 5, 4])
            syn.sizes.copy_(sizes)
            a = (torch.rand(6, 6, 6) > 0.5).float()
            a = torch.maximum(a, a.transpose(1, 2)) * (1 - torch.eye(6))
            real = torch.arange(6)[None] < sizes[:, None]
            a = a * (real[:, :, None] & real[:, None, :])
            syn.x.mul_(real[:, :, None])
            from datadistill.models.gnn import dense_to_edges
            syn.set_edges(*dense_to_edges(a))
    return syn


@pytest.mark.parametrize("adjacency", ["bernoulli", "fixed"])
@pytest.mark.parametrize("dtype,edge_dtype", [("float32", "binary"), ("float16", "float16"),
                                              ("uint8", "uint8")])
def test_compact_graph_set_round_trip(tmp_path, adjacency, dtype, edge_dtype):
    syn = _graph_set(adjacency)
    with torch.no_grad():
        adj, (x, y) = syn.adjacency(), syn.materialize()
        src_inputs = syn.inputs()
    sizes = syn.sizes
    out = compact(syn, dtype=dtype, edge_dtype=edge_dtype)
    assert isinstance(out, CompactGraphBatchSet) and out.kind == "compact-graphs" and out.symmetric
    assert out.pairs.shape[1] * 2 == int((adj != 0).sum())  # each undirected edge once
    assert out.features.shape[0] == int(sizes.sum())  # no padding rows stored
    assert torch.equal(out.adjacency(), adj) and torch.equal(out.class_ids, y)
    assert torch.equal(out.edges()[0].sort(1).values, syn.edges()[0].sort(1).values)
    xo, _ = out.materialize()
    if dtype == "float32":
        assert torch.equal(xo, x)
        # what a GNN trains on is the source's, node for node and edge for edge
        for a, b in zip(out.inputs()[:1] + out.inputs()[3:], src_inputs[:1] + src_inputs[3:]):
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
        key = lambda ei: set(map(tuple, ei.t().tolist()))
        assert key(out.inputs()[1]) == key(src_inputs[1])
    elif dtype == "uint8":
        real = torch.arange(6)[None] < sizes[:, None]
        span = (x[real].amax(1) - x[real].amin(1))[:, None]
        assert ((xo[real] - x[real]).abs() <= span / 510 + 1e-6).all()
    b = out.bytes_breakdown()
    assert b["total"] == out.stored_bytes() == sum(v for k, v in b.items() if k not in ("total", "edges"))
    e = out.pairs.shape[1]
    assert b["pairs"] == 2 * e and b["weights"] == e * {"binary": 0, "float16": 2, "uint8": 1}[edge_dtype]
    assert out.stored_bytes() < syn.stored_bytes()
    out.save(tmp_path / "g")
    back = load_summary(tmp_path / "g")
    for a, c in zip(back.inputs(), out.inputs()):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(c))
    assert back.stored_bytes() == out.stored_bytes()
    assert back.class_slice(1) == syn.class_slice(1) == slice(3, 6)
    from datadistill.models import create_model
    net = create_model("gcn", GRAPHS, generator=torch.Generator().manual_seed(0)).eval()
    assert net(*back.inputs()).shape == (6, 2)


def test_compact_graph_set_at_float32_gives_the_source_gnn_output():
    syn = _graph_set()
    out = compact(syn, dtype="float32", edge_dtype="binary")
    from datadistill.models import create_model
    net = create_model("gcn", GRAPHS, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        a, b = net(*syn.inputs()), net(*out.inputs())
    assert torch.allclose(a, b, atol=1e-5)


def test_compact_graph_set_refuses_edges_on_padding_and_bad_shapes():
    out = CompactGraphBatchSet(GRAPHS, graphs=2, nodes=3)
    x, y = torch.zeros(2, 3, 5), torch.tensor([0, 1])
    a = torch.zeros(2, 3, 3)
    a[0, 0, 2] = a[0, 2, 0] = 1
    with pytest.raises(ValueError, match="padding"):
        out.set_graphs(x, y, torch.tensor([2, 3]), a)
    with pytest.raises(ValueError, match="sizes"):
        out.set_graphs(x, y, torch.tensor([0, 3]), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="expected 2 graphs"):
        out.set_graphs(torch.zeros(3, 3, 5), y, torch.tensor([2, 3]), a)
    with pytest.raises(ValueError, match="graph classification"):
        CompactGraphBatchSet(GRAPH, graphs=2, nodes=3)
    with pytest.raises(ConfigError, match="topk"):
        compact(_graph_set(), topk=3)

def test_cli_compact(tmp_path, capsys):
    src = UserRowSet(RECSYS, users=7)
    src.rows.copy_(soft_rows())
    src.save(tmp_path / "run" / "summary")
    assert cli_main(["compact", str(tmp_path / "run"), "--topk", "4", "--dtype", "uint8",
                     "--out", str(tmp_path / "c"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    back = load_summary(tmp_path / "c" / "summary")
    assert rec["kind"] == "topk-users" and rec["stored_bytes"] == back.stored_bytes()
    assert rec["stored_bytes_before"] == src.stored_bytes() and ((back.rows != 0).sum(1) == 4).all()
    assert cli_main(["compact", str(tmp_path / "run"), "--topk", "0", "--out", str(tmp_path / "d")]) == 2
    assert "topk" in capsys.readouterr().err
    assert cli_main(["compact", str(tmp_path / "run"), "--dtype", "int4", "--out", str(tmp_path / "d")]) == 2
