import dataclasses

import pytest
import torch

from datadistill.baselines.images import select_coreset, select_herding, select_kcenter, select_random
from datadistill.evaluation import PROTOCOLS, Protocol, evaluate
from datadistill.synsets import init_from

TINY = Protocol("tiny", epochs=15, num_models=2, dsa=False)


def test_evaluate_report(digits):
    syn = init_from(digits, 5, generator=torch.Generator().manual_seed(0))
    rep = evaluate(syn, digits, models=("convnet", "mlp"), protocol=TINY)
    assert set(rep.results) == {"convnet", "mlp"}
    for r in rep.results.values():
        assert len(r["accs"]) == 2 and r["std"] >= 0
        assert abs(r["mean"] - sum(r["accs"]) / 2) < 1e-9
    assert rep.results["convnet"]["mean"] > 50  # 5 real digits per class train a usable ConvNet
    assert rep.protocol["epochs"] == TINY.epochs and rep.summary["stored_bytes"] == syn.stored_bytes()
    assert "tiny" in rep.table() and "convnet" in rep.table()
    # an override of the model count is recorded
    rep2 = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    assert rep2.overrides == {"num_models": 1} and len(rep2.results["mlp"]["accs"]) == 1
    # same seed -> same numbers; evaluation never touches the global RNG
    torch.manual_seed(123)
    a = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    torch.manual_seed(456)
    b = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    assert a.results["mlp"]["accs"] == b.results["mlp"]["accs"] == rep2.results["mlp"]["accs"]


def test_learned_lr_is_used_and_recorded(digits):
    syn = init_from(digits, 2, generator=torch.Generator(), lr=0.05)
    rep = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    assert "learned step size" in rep.overrides["lr"]


def test_diverging_training_is_reported_not_hidden(digits, monkeypatch):
    syn = init_from(digits, 2, generator=torch.Generator().manual_seed(0))
    # an absurd learning rate: the loss overflows, and the evaluation stops with the reason
    with pytest.raises(FloatingPointError, match="diverged"):
        evaluate(syn, digits, models=("mlp",), protocol=dataclasses.replace(TINY, lr=1e12),
                 num_models=1)
    # a finite run that ends above its starting loss (the width-1024 ConvNet at lr 0.01) warns
    import datadistill.evaluation.images as ev

    def fake_train(net, x, y, *, on_epoch, **kw):
        for ep, loss in enumerate((0.15, 660.0, 33.0)):
            on_epoch(ep, loss)
        return net.eval()
    monkeypatch.setattr(ev, "train_model", fake_train)
    with pytest.warns(RuntimeWarning, match="higher loss"):
        rep = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    assert rep.results["mlp"]["train_loss_first_last"] == [(0.15, 33.0)]
    monkeypatch.undo()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rep = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1)
    first, last = rep.results["mlp"]["train_loss_first_last"][0]
    assert last < first  # the real training converges, without a warning


def test_evaluate_rejects_other_data(digits):
    from datadistill.data import DataInfo
    from datadistill.synsets.pixels import PixelSet
    other = PixelSet(DataInfo("x", "image", 10, (1, 28, 28), (0.1,), (0.3,)), ipc=1)
    with pytest.raises(ValueError, match="summary is for x"):
        evaluate(other, digits, protocol=TINY)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(init_from(digits, 1, generator=torch.Generator()), digits, protocol="nope")


def test_paper_protocol_is_the_fields():
    p = PROTOCOLS["paper"]
    assert (p.epochs, p.num_models, p.lr, p.momentum, p.weight_decay, p.batch_size, p.dsa) == \
        (1000, 20, 0.01, 0.9, 5e-4, 256, True)


def test_evaluation_schedule_is_evaluate_synsets():
    """The protocols train as DatasetCondensation's evaluate_synset (parity fixture in
    tests/test_parity_dc_dm.py): epochs + 1 passes, and after pass epochs // 2 + 1 a NEW SGD at
    lr x0.1 (momentum restarts). The library's former schedule (epochs passes, lr x0.1 at half,
    momentum kept) is the named option schedule="fraction"; the report records the schedule."""
    from datadistill.train import train_model
    assert all(PROTOCOLS[p].schedule == "reference" for p in ("paper", "fast", "smoke"))
    with pytest.raises(ValueError, match="schedule"):
        Protocol("x", epochs=1, num_models=1, schedule="cosine")
    x, y = torch.randn(12, 3), torch.arange(12) % 3
    for schedule, passes, new_opt_after in (("reference", 5, 3), ("fraction", 4, None)):
        made, epochs_seen = [], []
        sgd = torch.optim.SGD

        class Spy(sgd):
            def __init__(self, params, lr, **kw):
                made.append((len(epochs_seen), lr, kw.get("momentum")))
                super().__init__(params, lr, **kw)
        torch.optim.SGD = Spy
        try:
            net = torch.nn.Linear(3, 3)
            train_model(net, x, y, epochs=4, generator=torch.Generator().manual_seed(0),
                        batch_size=4, schedule=schedule, on_epoch=lambda ep, l: epochs_seen.append(ep))
        finally:
            torch.optim.SGD = sgd
        assert len(epochs_seen) == passes
        if new_opt_after is None:
            assert made == [(0, 0.01, 0.9)]
        else:  # built after pass index epochs // 2 + 1 = 3 has run (4 passes seen)
            assert made == [(0, 0.01, 0.9), (new_opt_after + 1, pytest.approx(0.001), 0.9)]


def test_full_reference_states_its_settings(digits):
    """The full-data reference behind "% of full" states its preset, epochs, augmentation and
    schedule; ``converged`` (what full_reference=True asks for) is the field's evaluate_synset
    training on the full data for 300 epochs, ``quick`` the former 20-epoch stand-in (same cache
    key as before). Trained here only as a 1-epoch case."""
    from datadistill.evaluation import reference as ref
    assert ref.DEFAULT_FULL_REFERENCE == "converged"
    conv = ref.resolve_settings("converged")[1]
    assert (conv["epochs"], conv["dsa"], conv["schedule"]) == (300, False, "reference")
    assert ref.resolve_settings("converged-dsa")[1]["dsa"] is True
    assert ref.resolve_settings(None) == ("quick", ref.FULL_SETTINGS)
    with pytest.raises(ValueError, match="unknown full-data reference"):
        ref.resolve_settings("best")
    syn = init_from(digits, 2, generator=torch.Generator().manual_seed(0))
    rep = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1,
                   full_reference={"preset": "converged", "epochs": 1})
    fs = rep.results["mlp"]["full_settings"]
    assert (fs["epochs"], fs["augmentation"], fs["schedule"]) == (1, "none", "reference")
    assert rep.results["mlp"]["full_acc"] > 0 and "full: custom: 1 epochs" in rep.table()
    assert rep.protocol["schedule"] == "reference"


def test_selection_rules():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 5, generator=g)
    h = select_herding(feats, 10, 200, g)
    r = select_random(None, 10, 200, g)
    assert len(set(h.tolist())) == 10 and len(set(r.tolist())) == 10
    mu = feats.mean(0)
    # herding's selected mean tracks the class mean better than a random pick
    assert (feats[h].mean(0) - mu).norm() < (feats[r].mean(0) - mu).norm()
    k = select_kcenter(feats, 10, 200, g)
    cover = lambda idx: torch.cdist(feats, feats[idx]).min(1).values.max()
    assert len(set(k.tolist())) == 10 and cover(k) < cover(r)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("refcache")


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_coreset_summaries(digits, method, shared_cache, monkeypatch):
    monkeypatch.setenv("DATADISTILL_CACHE", str(shared_cache))  # one feature network for all
    syn = select_coreset(digits, 3, method, seed=0, device="cpu",
                         feature_settings={"epochs": 1})
    assert syn.x.shape == (30, 1, 8, 8) and syn.meta["method"] == method
    for c, picked in enumerate(syn.meta["selected"]):
        assert len(set(picked)) == 3
        assert torch.equal(syn.x[syn.class_slice(c)], digits.train.x[torch.tensor(picked)])
        assert all(int(digits.train.y[i]) == c for i in picked)


@pytest.mark.slow  # (compiles or trains for 10+ s)
def test_compiled_training_is_the_same_math(digits):
    """``compile=True`` fuses the training step but trains the same model: after a few epochs
    the parameters match eager training to float tolerance; the override is recorded."""
    from datadistill.models import create_model
    from datadistill.train import train_model
    syn = init_from(digits, 3, generator=torch.Generator().manual_seed(0))
    x, y = syn.materialize()
    nets = []
    for comp in (False, True):
        g = torch.Generator().manual_seed(1)
        net = create_model("convnet_d2", digits.info, generator=g)
        train_model(net, x.detach(), y, epochs=3, generator=g, batch_size=16, compile=comp)
        nets.append(net)
    for (n, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), n
    from datadistill.runtime import RunOptions
    rep = evaluate(syn, digits, models=("mlp",), protocol=TINY, num_models=1,
                   run=RunOptions(compile=True))
    # a run option, recorded beside the protocol, never in it
    assert rep.run["compile"] is True and "compile" not in rep.protocol
    assert "compile" not in rep.overrides


def test_unknown_modality_has_no_evaluator(digits):
    from datadistill.data import DataInfo
    from datadistill.errors import ConfigError
    from datadistill.synsets.pixels import PixelSet
    with pytest.raises(ConfigError, match="no evaluator for modality 'audio'"):
        evaluate(PixelSet(DataInfo("g", "audio", 2, (1, 2, 2), (0.,), (1.,)), ipc=1), digits)
