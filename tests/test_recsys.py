"""Recommender data, ∞-AE / EASE / MF, ranking metrics, user summaries and Distill-CF."""
import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from datadistill.data import DataFormatError, DatasetNotFoundError, load_dataset
from datadistill.data.recsys import Interactions, build, k_core
from datadistill.distillers import ConfigError, create_distiller
from datadistill.evaluation import evaluate
from datadistill.evaluation.recsys import RECSYS_PROTOCOLS, select_and_test
from datadistill.evaluation.ranking import batch_metrics, rank_metrics
from datadistill.models.recsys import create_recommender
from datadistill.baselines.recsys import select_users
from datadistill.synsets import load_summary
from datadistill.synsets.users import GumbelUserSet, _MultiGumbel


def cluster_log(users=80, items=40, per_user=6, groups=4, seed=0, timestamps=True):
    """Taste groups: a user of group g takes ``per_user`` of the items of block g (one taste)."""
    rng = np.random.default_rng(seed)
    size = items // groups
    u, i = [], []
    for user in range(users):
        g = user % groups
        for it in rng.choice(np.arange(g * size, (g + 1) * size), per_user, replace=False):
            u.append(f"u{user}")
            i.append(f"i{it}")
    ts = np.arange(len(u)) if timestamps else None
    return Interactions(np.array(u), np.array(i), np.ones(len(u)), ts)


@pytest.fixture(scope="module")
def clusters():
    return build("clusters", cluster_log(), k_core_min=2, split_seed=0)


def test_k_core_is_iterative():
    # k=2: z (1 item) goes first; then c has one user left (w), goes; then w has one item, goes
    u = np.array(["x", "x", "y", "y", "z", "w", "w"])
    i = np.array(["a", "b", "a", "b", "c", "a", "c"])
    out = k_core(Interactions(u, i), 2)
    assert set(out.users) == {"x", "y"} and set(out.items) == {"a", "b"}


def test_splits_are_disjoint_per_user_and_seeded(clusters):
    tr, va, te = (m.toarray() for m in (clusters.train, clusters.val, clusters.test))
    assert ((tr + va + te) <= 1).all()                       # no interaction in two splits
    assert (te.sum(1) >= 1).all() and (va.sum(1) >= 1).all()  # every user has held-out items
    again = build("clusters", cluster_log(), k_core_min=2, split_seed=0)
    other = build("clusters", cluster_log(), k_core_min=2, split_seed=1)
    assert (again.test != clusters.test).nnz == 0 and (other.test != clusters.test).nnz > 0
    assert clusters.info.modality == "recsys" and clusters.info.shape == (40,)


def test_leave_last_out_uses_timestamps():
    d = build("c", cluster_log(), k_core_min=2, holdout="last")
    assert (d.test.getnnz(1) == 1).all() and (d.val.getnnz(1) == 1).all()
    log = cluster_log()
    last_item = {}
    for u, i, t in zip(log.users, log.items, log.timestamps):
        last_item[u] = i  # timestamps increase with position
    row = int(np.flatnonzero(d.user_ids == "u3")[0])
    assert d.item_ids[d.test[row].indices[0]] == last_item["u3"]
    with pytest.raises(DataFormatError, match="timestamps"):
        build("c", cluster_log(timestamps=False), k_core_min=2, holdout="last")


def test_csv_loader_with_and_without_header(tmp_path):
    log = cluster_log(users=30)
    lines = [f"{u},{i},4" for u, i in zip(log.users, log.items)]
    (tmp_path / "h.csv").write_text("user_id,item_id,rating\n" + "\n".join(lines))
    (tmp_path / "n.csv").write_text("\n".join(lines))
    a = load_dataset(str(tmp_path / "h.csv"), k_core=2)
    b = load_dataset(str(tmp_path / "n.csv"), k_core=2)
    assert a.num_users == b.num_users == 30 and a.train.nnz == b.train.nnz
    (tmp_path / "bad.csv").write_text("user,item\nonlyone\n")
    with pytest.raises(DataFormatError):
        load_dataset(str(tmp_path / "bad.csv"))
    with pytest.raises(DatasetNotFoundError):
        load_dataset(str(tmp_path / "missing.csv"))


def test_movielens_offline_error_and_extracted_copy(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_dataset("movielens-1m", data_dir=tmp_path / "none", download=False)
    log = cluster_log(users=20)
    uid = {u: k + 1 for k, u in enumerate(sorted(set(log.users)))}
    rows = [f"{uid[u]}\t{i[1:]}\t5\t{t}" for u, i, t in zip(log.users, log.items, log.timestamps)]
    (tmp_path / "u.data").write_text("\n".join(rows))
    d = load_dataset("movielens-100k", data_dir=tmp_path, download=False)
    assert d.num_users == 20 and d.info.name == "movielens-100k"


def test_metrics_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5, 0.3]])
    seen = torch.tensor([[True, False, False, False, False]])
    target = torch.tensor([[False, False, True, True, False]])
    m = batch_metrics(scores, seen, target, k=2)
    # ranking of unseen items: 1 (0.8), 3 (0.5), 4 (0.3), 2 (0.1); top-2 hits item 3 at rank 2
    assert math.isclose(float(m["hr"][0]), 1 / 2)
    assert math.isclose(float(m["ndcg"][0]), (1 / math.log2(3)) / (1 + 1 / math.log2(3)), rel_tol=1e-6)
    # negatives 1 (0.8), 4 (0.3): item 3 beats 4, item 2 beats none -> 1 of 4 pairs
    assert math.isclose(float(m["auc"][0]), 0.25)
    with pytest.raises(ValueError, match="overlap"):
        batch_metrics(scores, target, target)


def test_multi_gumbel_gradient_and_hard_samples():
    logits = torch.randn(3, 7, dtype=torch.double, requires_grad=True)
    f = lambda x: _MultiGumbel.apply(x, 2.0, 5, torch.Generator().manual_seed(1), 2)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (logits,))
    info = build("c", cluster_log(), k_core_min=2).info
    s = GumbelUserSet(info, users=4)
    with torch.no_grad():
        s.logits.normal_(generator=torch.Generator().manual_seed(0))
    hard = s.sample(torch.Generator().manual_seed(0), samples=6, tau=1.0, hard=True)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0} and (hard.detach().sum(1) <= 6).all()
    hard.sum().backward()
    assert s.logits.grad is not None and torch.isfinite(s.logits.grad).all() and s.logits.grad.abs().sum() > 0
    s.logits.grad = None
    e = s.sample_expected(torch.Generator().manual_seed(0), samples=6)
    assert set(e.detach().unique().tolist()) <= {0.0, 1.0} and (e.detach().sum(1) <= 6).all()
    e.sum().backward()  # the gradient of the expected number of distinct items
    assert torch.isfinite(s.logits.grad).all() and s.logits.grad.abs().sum() > 0
    a = s.sample(torch.Generator().manual_seed(3), samples=6, tau=1.0, hard=False)
    b = s.sample(torch.Generator().manual_seed(3), samples=6, tau=1.0, hard=False)
    assert torch.equal(a, b) and 0 <= float(a.detach().min()) and float(a.detach().max()) <= 1


@pytest.mark.parametrize("name,kw", [("inf-ae", {}), ("ease", {}), ("mf", {"factors": 8, "iterations": 6})])
def test_recommenders_learn_the_clusters(clusters, name, kw):
    def test_ndcg_auc(rows):
        model = create_recommender(name, **kw).fit(rows, **create_recommender(name).default)
        m = rank_metrics(model.scores(clusters.dense("test-context")), clusters.context("test"), clusters.test)
        return m["ndcg@10"], m["auc"]
    ndcg, auc = test_ndcg_auc(clusters.dense("train"))
    assert auc > 0.7, auc  # the user's block ranked above the other blocks (chance: 0.5)
    if name == "inf-ae":  # one all-ones fake user carries no taste information
        assert ndcg > test_ndcg_auc(torch.ones(1, clusters.num_items))[0] + 10


def test_subsets_and_evaluator_dispatch(clusters, tmp_path):
    s = select_users(clusters, 10, "active")
    counts = clusters.train.getnnz(1)
    assert sorted(counts[s.meta["users_selected"]].tolist()) == sorted(np.sort(counts)[-10:].tolist())
    h = select_users(clusters, 10, "herding")
    assert len(set(h.meta["users_selected"])) == 10 and h.binary
    s.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    rep = evaluate(back, clusters, protocol="smoke", full_reference=True)
    r = rep.results["inf-ae"]
    assert 0 <= r["mean"] <= 100 and r["pct_of_full"] > 0 and "HR@10" in rep.table()
    other = build("other", cluster_log(items=30), k_core_min=2)
    with pytest.raises(ValueError, match="items"):
        evaluate(back, other, protocol="smoke")


def test_distill_cf_budget_errors(clusters):
    d = create_distiller("distill-cf", "tiny")
    with pytest.raises(ConfigError, match="users"):
        d.init_synset(clusters)
    with pytest.raises(ConfigError, match="users"):
        d.init_synset(clusters, ipc=2)
    with pytest.raises(ConfigError):
        create_distiller("distill-cf", model="convnet")


def test_distill_cf_lowers_its_loss_and_hard_stays_binary(clusters):
    d = create_distiller("distill-cf", iterations=15, samples_per_user=10, tau=1.0, reg=0.1,
                         lr_data=0.2, init="noise", hard=True, seed=0)
    syn = d.init_synset(clusters, users=4)
    seen = []
    d.distill(clusters, syn, [seen.append])
    first, last = np.mean([e["reconstruction"] for e in seen[:3]]), np.mean([e["reconstruction"] for e in seen[-3:]])
    assert last < first
    assert syn.binary and syn.stored_bytes() == 4 * (int(syn.rows.sum()) + 5)


def test_distill_cf_keeps_the_best_validated_soft_sample(clusters, tmp_path):
    # published defaults apart from size: soft multi-Gumbel rows, λ from ∞-AE's grid on validation
    d = create_distiller("distill-cf", iterations=50, samples_per_user=20, lr_data=0.5, seed=0)
    syn = d.init_synset(clusters, users=4)
    seen = []
    d.distill(clusters, syn, [seen.append], workdir=tmp_path / "run")
    vals = [(e["iteration"], e["val_ndcg@10"]) for e in seen if "val_ndcg@10" in e]
    assert [s for s, _ in vals] == [25, 40, 50]  # the reference's schedule: 25, 50, ... and every 40
    best_step, best_val = max(vals, key=lambda t: (t[1], -t[0]))
    assert syn.meta["best_step"] == best_step and syn.meta["best_val_ndcg@10"] == best_val
    # the kept rows are the sample that was validated at the best step, not the last training sample
    assert d.validate(clusters, syn.rows)[0] == pytest.approx(best_val)
    rows = syn.rows
    assert not syn.binary and float(rows.min()) > 0 and float(rows.max()) <= 1  # soft, dense rows
    assert syn.stored_bytes() == 4 * rows.numel()  # dense float32 beats CSR with values
    back = load_summary(tmp_path / "run" / "summary")  # what the CLI leaves behind
    assert torch.equal(back.rows, syn.rows) and back.meta["best_step"] == best_step


def test_distill_cf_patience_stops_the_updates(clusters):
    d = create_distiller("distill-cf", iterations=100, samples_per_user=5, tau=1.0, lr_data=0.2, reg=0.1,
                         patience=50, seed=0)
    syn = d.init_synset(clusters, users=4)
    d.validate = lambda real, rows: (100.0 - d.steps_, 0.1)  # validation only gets worse after step 25
    logits = {}
    d.distill(clusters, syn, [lambda e: logits.__setitem__(e["iteration"], syn.logits.detach().clone())])
    assert d.stopped_ and d.best_ == (75.0, 25) and syn.meta["best_step"] == 25
    assert not torch.equal(logits[74], logits[75])       # step 75 still updated Ω, then it stopped:
    assert max(logits) == 75 and syn.meta["iterations"] == 75  # the loop ends there (base.py: stopped_)
    assert torch.equal(logits[75], syn.logits)
    assert d.step(clusters, syn) == {"stopped": 1.0, "reg": 0.1}  # a direct step after the stop: no-op
    assert torch.equal(logits[75], syn.logits)


def test_distill_cf_mean_estimator_is_the_gumbel_average():
    info = dataclasses.replace(build("c", cluster_log(), k_core_min=2).info, shape=(4000,))
    s = GumbelUserSet(info, users=3)  # many more items than draws, as in real data (no clipping)
    with torch.no_grad():
        s.logits.normal_(generator=torch.Generator().manual_seed(0)).mul_(3)
    mean = s.sample_mean(samples=200, tau=10.0)
    assert float(mean.detach().max()) < 1
    gumbel = s.sample(torch.Generator().manual_seed(1), samples=200, tau=10.0, hard=False)
    # at τ = 10 the soft sum of 200 draws is its mean within a few % per entry
    assert float(((gumbel - mean).abs() / mean).detach().max()) < 0.05
    low_tau = s.sample(torch.Generator().manual_seed(1), samples=200, tau=0.3, hard=False)
    assert float((low_tau - s.sample_mean(samples=200, tau=0.3)).detach().abs().max()) > 0.1  # not at low τ
    (mean * torch.arange(mean.shape[1])).sum().backward()  # (a plain sum of a softmax is constant)
    assert torch.isfinite(s.logits.grad).all() and s.logits.grad.abs().sum() > 0


def test_distill_cf_cpu_presets(clusters):
    d = create_distiller("distill-cf", "cpu")
    assert d.estimator == "mean" and d.samples_per_user == 200 and d.tau == 10.0 and d.keep_best
    d = create_distiller("distill-cf", "cpu-binary", iterations=12, reg=0.1, seed=1)
    assert d.estimator == "expected" and d.samples_per_user == 20
    syn = d.init_synset(clusters, users=4)
    start = syn.rows.clone()
    assert set(start.unique().tolist()) <= {0.0, 1.0} and start.sum() > 0  # real users' rows
    seen = []
    d.distill(clusters, syn, [seen.append])
    assert syn.binary and len(seen) == 12 and all(math.isfinite(e["loss"]) for e in seen)
    assert not torch.equal(syn.rows, start)


def test_cli_distill_and_evaluate(tmp_path):
    log = cluster_log(users=40)
    (tmp_path / "r.csv").write_text("\n".join(f"{u},{i}" for u, i in zip(log.users, log.items)))
    run = [sys.executable, "-m", "datadistill"]
    out = subprocess.run(run + ["distill", "--method", "distill-cf", "--dataset", str(tmp_path / "r.csv"),
                                "--users", "6", "--preset", "tiny", "--out", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ev = subprocess.run(run + ["evaluate", str(tmp_path / "run"), "--protocol", "smoke"],
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr
    assert "nDCG@10" in ev.stdout and "distill-cf" in ev.stdout
