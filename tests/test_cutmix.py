"""CutMix (``datadistill.cutmix``) against hand computations, in ``train_model`` and in the
evaluation protocols that use it (``paper-cutmix``, ``idc``); ``train_model`` without it is the
loop it always was, bit for bit.

The box rule was also compared with the authors' ``rand_bbox`` (snu-mllab/
Efficient-Dataset-Condensation ``misc/utils.py`` at ceac95ab, run in a scratch folder): the same
boxes and corrected lambdas on 87,494 cases (sizes 28x28, 32x32, 16x16, 5x7, 7x5; 41 lambdas in
[0, 1]; every centre)."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datadistill.cutmix import CutMix, CutMixDraw, box_lambda, cutmix_box, sample_beta
from datadistill.errors import ConfigError
from datadistill.train import MULTISTEP_GAMMA, label_loss, train_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(s=0):
    return torch.Generator().manual_seed(s)


# -- the box and its lambda, by hand ---------------------------------------------------------------
def test_box_from_lambda_and_centre_by_hand():
    # lam 0.75 on 28x28: side int(28 * sqrt(0.25)) = 14, half 7: rows 10-7..10+7, cols 3-7..3+7
    # with the left edge clipped at 0 -> a 14 x 10 box, lam' = 1 - 140/784
    assert cutmix_box(28, 28, 0.75, 10, 3) == (3, 0, 17, 10)
    assert box_lambda(28, 28, (3, 0, 17, 10)) == 1 - 140 / 784
    # odd side: int(28 * sqrt(0.5)) = 19, half 9 -> the box is 18 wide, not 19; clipped at both
    # far borders here (row 0 - 9 -> 0, column 27 + 9 -> 28): rows 0..9, columns 18..28
    assert cutmix_box(28, 28, 0.5, 0, 27) == (0, 18, 9, 28)
    assert box_lambda(28, 28, (0, 18, 9, 28)) == 1 - 90 / 784
    # centred, away from the borders: lam' = 1 - 18*18/784 = 0.5867..., not lam = 0.5
    assert box_lambda(28, 28, cutmix_box(28, 28, 0.5, 14, 14)) == pytest.approx(1 - 324 / 784)
    # rows are the first image axis, columns the second (non-square: 5 rows x 7 columns):
    # sqrt(1 - 0.19) = 0.9 -> 4 rows (half 2), 6 columns (half 3)
    assert cutmix_box(5, 7, 0.19, 4, 0) == (2, 0, 5, 3)
    # lam 1: an empty box, lam' = 1; lam 0: the whole image when centred
    b = cutmix_box(28, 28, 1.0, 5, 5)
    assert b[0] == b[2] and b[1] == b[3] and box_lambda(28, 28, b) == 1.0
    assert cutmix_box(28, 28, 0.0, 14, 14) == (0, 0, 28, 28)


def test_mixed_images_loss_and_gradient_by_hand():
    """A fixed draw on 3 images of 1x4x4 through a linear model: the pasted pixels, the loss
    lam' CE(y) + (1 - lam') CE(y[perm]) and its gradient, against numpy by hand."""
    x = torch.arange(3 * 16, dtype=torch.float64).view(3, 1, 4, 4) / 10
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    box = (1, 0, 3, 2)  # rows 1..3, columns 0..2: 4 of 16 pixels
    ratio = box_lambda(4, 4, box)
    assert ratio == 0.75
    draw = CutMixDraw(lam=0.7, perm=perm, box=box, ratio=ratio)
    xm = draw.mix(x)
    xn, xmn = x.numpy(), xm.numpy()
    for i in range(3):
        for r in range(4):
            for c in range(4):
                src = perm[i] if (1 <= r < 3 and 0 <= c < 2) else i
                assert xmn[i, 0, r, c] == xn[src, 0, r, c]
    assert torch.equal(x, torch.arange(3 * 16, dtype=torch.float64).view(3, 1, 4, 4) / 10)

    lin = nn.Linear(16, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-1, 1, 48, dtype=torch.float64).view(3, 16))
        lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    loss = draw.loss(lin(xm.flatten(1)), y, F.cross_entropy)
    loss.backward()
    # by hand: z = W x + b; CE_i(t) = logsumexp(z_i) - z_i[t]; mean over the batch
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    X = xmn.reshape(3, 16)
    z = X @ W.T + b
    lse = np.log(np.exp(z).sum(1))
    yb = perm.numpy()[y.numpy()]
    ce_a = np.mean(lse - z[np.arange(3), y.numpy()])
    ce_b = np.mean(lse - z[np.arange(3), yb])
    assert float(loss.detach()) == pytest.approx(0.75 * ce_a + 0.25 * ce_b, rel=1e-12)
    soft = np.exp(z - lse[:, None])
    target = 0.75 * np.eye(3)[y.numpy()] + 0.25 * np.eye(3)[yb]
    dz = (soft - target) / 3
    np.testing.assert_allclose(lin.weight.grad.numpy(), dz.T @ X, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.bias.grad.numpy(), dz.sum(0), rtol=1e-12, atol=1e-14)


# -- the draws ---------------------------------------------------------------------------------------
def test_draws_come_from_the_generator_in_order():
    cm = CutMix(p=0.5, beta=1.0)
    g, g2 = gen(3), gen(3)
    for _ in range(20):
        d = cm.sample(6, (28, 28), g)
        # by hand from a copy of the generator: coin, then lam, perm, centre row, centre column
        u = float(torch.rand((), generator=g2, dtype=torch.float64))
        if u >= 0.5:
            assert d is None
            continue
        lam = sample_beta(1.0, 1.0, g2)
        perm = torch.randperm(6, generator=g2)
        cx, cy = int(torch.randint(28, (), generator=g2)), int(torch.randint(28, (), generator=g2))
        assert (d.lam, d.box) == (lam, cutmix_box(28, 28, lam, cx, cy))
        assert torch.equal(d.perm, perm) and d.ratio == box_lambda(28, 28, d.box)
    assert all(CutMix(p=0.0).sample(4, (8, 8), g) is None for _ in range(50))
    assert all(CutMix(p=1.0).sample(4, (8, 8), g) is not None for _ in range(50))
    with pytest.raises(ConfigError):
        CutMix(p=1.5)
    with pytest.raises(ConfigError):
        CutMix(beta=0.0)


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_beta_draws_have_the_beta_moments(beta):
    g = gen(1)
    t = torch.tensor([sample_beta(beta, beta, g) for _ in range(4000)])
    var = 1 / (4 * (2 * beta + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert ((t > 0) & (t < 1)).all()
    assert float(t.mean()) == pytest.approx(0.5, abs=4 * math.sqrt(var / 4000))
    assert float(t.var()) == pytest.approx(var, rel=0.1)


# -- in train_model ----------------------------------------------------------------------------------
def _net(seed=0):
    torch.manual_seed(seed)  # (test only: the library never uses the global RNG)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def _data():
    g = gen(7)
    return torch.randn(10, 1, 8, 8, generator=g), torch.randint(3, (10,), generator=g)


def test_train_model_without_cutmix_is_the_plain_loop_bit_for_bit():
    """No CutMix: exactly the loop before the option existed (shuffle, DSA, CE, SGD; the
    fraction schedule), written out here."""
    from datadistill.augment import DSA
    x, y = _data()
    dsa = DSA("color_crop_cutout")
    lib = train_model(_net(), x, y, epochs=4, generator=gen(5), batch_size=4, dsa=dsa, lr=0.05)
    net, g = _net(), gen(5)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    net.train()
    for ep in range(4):
        if ep == 2:
            for grp in opt.param_groups:
                grp["lr"] = 0.05 * 0.1
        perm = torch.randperm(10, generator=g)
        for i in range(0, 10, 4):
            idx = perm[i:i + 4]
            loss = F.cross_entropy(net(dsa(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for a, b in zip(lib.parameters(), net.parameters()):
        assert torch.equal(a, b)


def test_train_model_applies_cutmix_after_dsa_with_its_generator():
    """One mini-batch (the whole set), lr 0: the recorded loss is the mixed loss of the
    augmented, then CutMixed batch, replayed by hand from a copy of the generator."""
    from datadistill.augment import DSA
    x, y = _data()
    dsa, cm = DSA("color_crop"), CutMix(p=1.0, beta=1.0)
    net = _net()
    seen = []
    train_model(copy.deepcopy(net), x, y, epochs=1, generator=gen(9), batch_size=10, dsa=dsa,
                lr=0.0, momentum=0.0, weight_decay=0.0, cutmix=cm,
                on_epoch=lambda ep, loss: seen.append(loss))
    g = gen(9)
    perm = torch.randperm(10, generator=g)
    xb, yb = dsa(x[perm], g), y[perm]
    draw = cm.sample(10, (8, 8), g)
    net.train()
    expected = draw.loss(net(draw.mix(xb)), yb, lambda o, t: label_loss(o, t))
    assert seen[0] == pytest.approx(float(expected.detach()), rel=1e-6)
    # and it trains differently from no CutMix (same seed)
    a = train_model(_net(), x, y, epochs=2, generator=gen(9), batch_size=5, lr=0.1)
    b = train_model(_net(), x, y, epochs=2, generator=gen(9), batch_size=5, lr=0.1, cutmix=cm)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_multistep_schedule_is_multisteplr():
    """IDC's evaluation schedule: MultiStepLR([2E//3, 5E//6], gamma 0.2) stepped after each
    epoch, compared with torch's scheduler epoch by epoch (E = 12: x0.2 from pass 8, 10)."""
    x, y = _data()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    lrs = []
    train_model(net, x, y, epochs=12, generator=gen(0), batch_size=10, optimizer=opt,
                schedule="multistep", on_epoch=lambda ep, loss: lrs.append(opt.param_groups[0]["lr"]))
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.03, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[8, 10], gamma=MULTISTEP_GAMMA)
    expected = []
    for _ in range(12):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        sched.step()
    assert lrs == expected and lrs[7] == 0.03 and lrs[8] < lrs[7] and lrs[10] < lrs[9]


# -- the evaluation protocols ------------------------------------------------------------------------
def test_cutmix_protocols_as_idc_evaluates():
    from datadistill.evaluation import PROTOCOLS, Protocol
    paper, pc, idc = PROTOCOLS["paper"], PROTOCOLS["paper-cutmix"], PROTOCOLS["idc"]
    assert (paper.cutmix_p, paper.dsa_mode, paper.cutmix()) == (0.0, "single", None)
    # paper-cutmix: paper + CutMix p 0.5 beta 1, cutout dropped from DSA (argument.py l. 451)
    assert dataclasses.replace(pc, name="paper", cutmix_p=0.0,
                               dsa_strategy=paper.dsa_strategy) == paper
    assert pc.cutmix() == CutMix(0.5, 1.0) and "cutout" not in pc.dsa_strategy
    # idc: test.py/train.py: batch 64, MultiStepLR, IDC's DiffAug, CutMix, 1000 epochs
    assert (idc.epochs, idc.batch_size, idc.schedule, idc.dsa_mode, idc.cutmix_p, idc.lr,
            idc.momentum, idc.weight_decay) == (1000, 64, "multistep", "idc", 0.5, 0.01, 0.9, 5e-4)
    with pytest.raises(ConfigError):
        Protocol("x", epochs=1, num_models=1, dsa_mode="nope")
    with pytest.raises(ConfigError):
        Protocol("x", epochs=1, num_models=1, cutmix_p=2.0)


@pytest.mark.parametrize("name", ["paper-cutmix", "idc"])
def test_evaluate_by_name_trains_with_cutmix(digits, monkeypatch, name):
    """``evaluate(..., protocol=name)`` hands the protocol's CutMix, DSA mode, batch and
    schedule to every model's ``train_model`` (recorded; the training itself is skipped)."""
    import datadistill.evaluation.images as ev_images
    from datadistill.evaluation import PROTOCOLS, evaluate
    from datadistill.synsets import init_from
    calls = []
    monkeypatch.setattr(ev_images, "train_model", lambda net, x, y, **kw: calls.append(kw) or net.eval())
    syn = init_from(digits, 1, generator=gen())
    rep = evaluate(syn, digits, protocol=name, num_models=2)
    proto = PROTOCOLS[name]
    assert len(calls) == 2 and all(kw["cutmix"] == CutMix(0.5, 1.0) for kw in calls)
    assert all(kw["dsa"].mode == proto.dsa_mode and kw["batch_size"] == proto.batch_size
               and kw["schedule"] == proto.schedule for kw in calls)
    assert "flip" not in calls[0]["dsa"].ops  # digits: flipping changes labels
    assert rep.protocol["cutmix_p"] == 0.5 and "CutMix p 0.5" in rep.table()


def test_evaluate_with_cutmix_trains_for_real(digits):
    from datadistill.evaluation import PROTOCOLS, evaluate
    from datadistill.synsets import init_from
    syn = init_from(digits, 2, generator=gen())
    proto = dataclasses.replace(PROTOCOLS["idc"], epochs=3, num_models=1)
    rep = evaluate(syn, digits, protocol=proto)
    assert 0 <= rep.results["convnet"]["mean"] <= 100 and rep.protocol["schedule"] == "multistep"


def test_bench_rows_take_any_image_protocol(tmp_path):
    from datadistill.bench.suites import SuiteError, load_suite
    row = '[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "{ds}"\nipc = 1\nprotocol = "{p}"\n'
    for p in ("paper-cutmix", "idc"):
        (tmp_path / "ok.toml").write_text(row.format(ds="digits", p=p))
        load_suite(tmp_path / "ok.toml")
    (tmp_path / "bad.toml").write_text(row.format(ds="digits", p="nope"))
    with pytest.raises(SuiteError, match="paper-cutmix"):
        load_suite(tmp_path / "bad.toml")
    # other modalities keep their own three names
    from datadistill.data import DATASETS
    from datadistill.data.images import IMAGE_LOADERS
    other = next(n for n in DATASETS.names() if n not in IMAGE_LOADERS)
    (tmp_path / "other.toml").write_text(row.format(ds=other, p="idc"))
    with pytest.raises(SuiteError, match="non-image"):
        load_suite(tmp_path / "other.toml")
