"""CAFE (Wang et al., CVPR'22) on tiny data: the layer hook, the objective's terms, the loops
(fixed and dynamic), the learning-rate schedule, errors, determinism and resume."""
import math

import pytest
import torch
import torch.nn.functional as F

from datadistill.data import load_dataset
from datadistill.distillers import DISTILLERS, ConfigError, create_distiller
from datadistill.distillers.cafe import CAFE, CAFEDSA, _Watcher
from datadistill.models import create_model
from datadistill.runtime import RunOptions
from datadistill.synsets import init_from

RUN = RunOptions(device="cpu", fused=False, compile=False)
SMALL = dict(model="convnet_w32", batch_real=8, query_size=8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def real():
    return load_dataset("digits")


def make(real, ipc=2, **kw):
    d = create_distiller(kw.pop("method", "cafe"), **{**SMALL, **kw})
    syn = d.init_synset(real, ipc=ipc)
    d.use_run(RUN)
    d.setup(real, syn)
    return d, syn


# -- registration and the published defaults ---------------------------------------------------
def test_registered_with_published_defaults():
    assert DISTILLERS.get("cafe") is CAFE and DISTILLERS.get("cafe-dsa") is CAFEDSA
    d = CAFE()
    assert (d.iterations, d.lr_data, d.lr_net, d.batch_real, d.batch_train) == (2000, 0.1, 0.01, 256, 256)
    assert d.layer_weights == [0.1, 0.1, 1.0, 1.0] and d.embed_weight == 1.0 and d.disc_weight == 0.01
    assert (d.lambda_1, d.lambda_2, d.window, d.query_size) == (0.04, 0.03, 10, 128)
    assert d.init == "noise" and d.dsa is False and CAFEDSA().dsa is True
    assert d.outer_loop is None and d.inner_loop is None  # dynamic, as published
    assert "tiny" in CAFE.presets and "tiny" in CAFEDSA.presets


def test_lr_schedule_halves_at_the_milestones():
    d = CAFE()
    for it, lr in [(0, 0.1), (1199, 0.1), (1200, 0.05), (1600, 0.025), (1800, 0.0125), (2000, 0.0125)]:
        d.it_ = it
        assert d.current_lr() == pytest.approx(lr)


@pytest.mark.parametrize("bad", [dict(layer_weights=[]), dict(layer_weights=[1, -1, 1, 1]),
                                 dict(outer_loop=0), dict(inner_loop=-1), dict(window=0),
                                 dict(query_size=0), dict(disc_weight=-1.0), dict(lr_net=0.0)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ConfigError):
        CAFE(**bad)


def test_setup_refuses_a_wrong_number_of_layer_weights_or_a_model_without_layers(real):
    with pytest.raises(ConfigError, match="layer_weights"):
        make(real, layer_weights=[1.0, 1.0])  # depth 3: 4 aligned maps
    with pytest.raises(ConfigError, match="layer_features"):
        make(real, model="mlp")
    d, _ = make(real, model="convnet_d2", layer_weights=[0.1, 1.0, 1.0])
    assert d.chunk_ == 8


# -- the layer hook ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,maps", [("convnet", 4), ("convnet_d2", 3), ("convnet_np", 4)])
def test_layer_features_are_the_activations_then_the_embedding(name, maps):
    info = load_dataset("digits").info
    net = create_model(name, info, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, *info.shape)
    feats = net.layer_features(x)
    assert len(feats) == maps
    assert torch.allclose(feats[-1].flatten(1), net.embed(x), atol=1e-6)
    assert all(f.shape[1] == net.features[0].out_channels for f in feats)
    assert (feats[0] >= 0).all()  # after the ReLU


# -- the objective -------------------------------------------------------------------------------
def test_matching_terms_are_the_published_equation(real):
    """Hand computation with plain torch ops of every term on one fixed real batch (no DSA)."""
    d, syn = make(real, ipc=2)
    net = d.fresh_network(real)
    gen_state = d.gen_.get_state()
    terms = d.matching_terms(net, real, syn)
    d.gen_.set_state(gen_state)
    k = real.info.num_classes
    xr = torch.cat([real.sample_class(c, d.batch_real, d.gen_) for c in range(k)])
    yr = torch.arange(k).repeat_interleave(d.batch_real)
    xs, _ = syn.materialize()
    ys = syn.class_ids
    with torch.no_grad():
        fr = [f.flatten(1) for f in net.layer_features(xr)]
        fs = [f.flatten(1) for f in net.layer_features(xs)]
        mr = [torch.stack([f[yr == c].mean(0) for c in range(k)]) for f in fr]
        ms = [torch.stack([f[ys == c].mean(0) for c in range(k)]) for f in fs]
        align = [float(((a - b) ** 2).sum()) for a, b in zip(mr, ms)]
        disc = float(F.cross_entropy(fr[-1] @ ms[-1].t(), yr, reduction="sum"))
        total = sum(w * a for w, a in zip(d.layer_weights, align)) + align[-1] + 0.01 * disc
        real_ce = float(F.cross_entropy(net(xr), yr))
    assert terms["align"].tolist() == pytest.approx(align, rel=1e-5)
    assert float(terms["embed"].detach()) == pytest.approx(align[-1], rel=1e-5)
    assert float(terms["disc"].detach()) == pytest.approx(disc, rel=1e-5)
    assert float(terms["loss"].detach()) == pytest.approx(total, rel=1e-5)
    assert float(terms["real_ce"]) == pytest.approx(real_ce, rel=1e-5)
    # the real side carries no gradient; the synthetic side does
    terms["loss"].backward()
    assert syn.x.grad is not None and float(syn.x.grad.abs().sum()) > 0


# -- the loops ----------------------------------------------------------------------------------
def test_watcher_reproduces_the_reference_accumulation():
    w = _Watcher(window=3, threshold=0.04, stop_below=True)
    accs = [torch.tensor(0.5)] * 4  # mean 0.5 over K=4 classes
    assert not w.update(accs)
    assert w.value.item() == pytest.approx(0.5)
    assert not w.update(accs)
    assert w.value.item() == pytest.approx(0.5 / 4 + 0.5)  # v <- v / K + mean
    # the window [0.5, 0.625, 0.65625] spreads 0.156 >= 0.04: not stable yet
    assert not w.update(accs)
    assert len(w.seen) == 2
    stop = w.update(accs)  # [0.625, 0.65625, 0.6640625]: spread 0.039 < 0.04
    assert stop
    inner = _Watcher(window=2, threshold=0.03, stop_below=False)
    assert not inner.update([torch.tensor(0.1)])
    assert inner.update([torch.tensor(0.5)])  # 0.1 -> 0.6: moved more than 0.03


def count_calls(d):
    calls = {"outer": 0, "epochs": 0, "queries": 0}
    opt_step, ep, q = d.optimizer_.step, d.train_epoch, d.query_accuracies

    def o(*a, **k):
        calls["outer"] += 1
        return opt_step(*a, **k)

    def e(*a, **k):
        calls["epochs"] += 1
        return ep(*a, **k)

    def qa(*a, **k):
        calls["queries"] += 1
        return q(*a, **k)

    d.optimizer_.step, d.train_epoch, d.query_accuracies = o, e, qa
    return calls


def test_fixed_loops(real):
    d, syn = make(real, outer_loop=3, inner_loop=2)
    calls = count_calls(d)
    m = d.step(real, syn)
    assert calls == {"outer": 3, "epochs": 4, "queries": 0}  # no inner training after the last
    assert (m["outer_steps"], m["inner_epochs"], m["capped"]) == (3, 4, 0)
    assert math.isfinite(m["loss"]) and m["disc"] > 0


def test_dynamic_loops_stop_by_the_watchers_and_the_caps(real):
    d, syn = make(real, window=2, lambda_1=1.0, lambda_2=-1.0)  # stop at the first full window
    calls = count_calls(d)
    m = d.step(real, syn)
    # outer: 2 updates (the second completes the window); inner after the first: 2 epochs
    assert (m["outer_steps"], m["inner_epochs"], m["capped"]) == (2, 2, 0)
    assert calls == {"outer": 2, "epochs": 2, "queries": 2 + 2}
    d, syn = make(real, window=2, lambda_1=-1.0, lambda_2=2.0, max_outer_loop=2, max_inner_loop=3)
    m = d.step(real, syn)  # neither watcher can fire: the caps end both loops
    assert (m["outer_steps"], m["inner_epochs"], m["capped"]) == (2, 3, 2)


def test_step_sets_the_scheduled_lr(real):
    d, syn = make(real, outer_loop=1, inner_loop=0, lr_milestones=[1], lr_decay=0.5)
    d.step(real, syn)
    assert d.optimizer_.param_groups[0]["lr"] == pytest.approx(0.1)
    d.step(real, syn)
    assert d.optimizer_.param_groups[0]["lr"] == pytest.approx(0.05) and d.it_ == 2


# -- the whole loop -----------------------------------------------------------------------------
def distill(real, seed=0, iterations=2, workdir=None, resume=False, method="cafe", **kw):
    d = create_distiller(method, "tiny", **{**SMALL, "seed": seed, "iterations": iterations,
                                            "lr_milestones": [1], **kw})
    syn = d.init_synset(real, ipc=1)
    d.distill(real, syn, workdir=workdir, resume=resume, run=RUN)
    return d, syn


def test_deterministic_for_a_seed_and_resumable(real, tmp_path):
    _, a = distill(real, seed=3)
    _, b = distill(real, seed=3)
    assert torch.equal(a.x, b.x)
    _, c = distill(real, seed=4)
    assert not torch.equal(a.x, c.x)
    distill(real, seed=3, iterations=1, workdir=tmp_path)
    d, r = distill(real, seed=3, iterations=2, workdir=tmp_path, resume=True)
    assert d.it_ == 2  # the schedule's counter came back from the checkpoint
    assert torch.equal(a.x, r.x)


def test_stored_bytes_are_the_plain_pixels(real):
    d, syn = distill(real)
    fresh = init_from(real, 1, kind="pixels", init="noise", generator=torch.Generator())
    assert set(syn.state_dict()) == set(fresh.state_dict())  # nothing hidden added
    assert syn.stored_bytes() == fresh.stored_bytes() >= syn.x.numel() * 4


def test_cafe_dsa_augments_and_differs(real):
    _, plain = distill(real, seed=1)
    d, aug = distill(real, seed=1, method="cafe-dsa")
    assert d.dsa_ is not None and not torch.equal(plain.x, aug.x)
    assert torch.isfinite(aug.x).all()


def test_batchnorm_network_runs(real):
    d, syn = make(real, model="convnet_bn", outer_loop=2, inner_loop=1, window=2)
    assert d.chunk_ is None  # one forward for the real batch (batch statistics span the classes)
    x0 = syn.x.detach().clone()
    m = d.step(real, syn)
    assert math.isfinite(m["loss"]) and not torch.equal(x0, syn.x)


def test_pairs_with_another_summary_kind(real):
    d = create_distiller("cafe", "tiny", **SMALL, synset="multiformation")
    syn = d.init_synset(real, ipc=1)
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    d.distill(real, syn, run=RUN)
    assert any(not torch.equal(before[k], v) for k, v in syn.state_dict().items())
