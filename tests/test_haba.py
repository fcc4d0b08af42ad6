"""HaBa: the bases + hallucinators summary (``synsets/haba.py``) and the method
(``distillers/haba.py``) on the digits data. Parity with the authors' code: test_parity_haba.py."""
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from datadistill import experts as ex
from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import ConfigError, create_distiller
from datadistill.runtime import make_generator
from datadistill.synsets import init_from, load_summary
from datadistill.synsets.haba import HaBaSet, Hallucinator, bases_for_budget, hallucinator_numel

FMNIST = DataInfo(name="fmnist-like", modality="image", num_classes=10, shape=(1, 28, 28),
                  mean=(0.286,), std=(0.353,))
CIFAR = DataInfo(name="cifar-like", modality="image", num_classes=10, shape=(3, 32, 32),
                 mean=(0.5,) * 3, std=(0.25,) * 3)
TINY = dict(model="convnet_w32", num_experts=1, train_epochs=2, expert_epochs=1,
            max_start_epoch=1, syn_steps=2, iterations=2, num_hallucinators=2)


@pytest.fixture(scope="module")
def tiny_experts(tmp_path_factory):
    from datadistill.data import load_dataset
    d = tmp_path_factory.mktemp("experts")
    c = create_distiller("haba", **TINY).expert_config()
    ex.load_experts(load_dataset("digits"), c, root=d)
    return d, c


@pytest.fixture
def experts(digits, tiny_experts):
    """The module's experts, copied into this test's (isolated) cache."""
    d, c = tiny_experts
    shutil.copytree(d, ex.expert_dir(digits, c), dirs_exist_ok=True)


def _rgb_real(n_per_class=3, k=2, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(k * n_per_class, 3, size, size, generator=g)
    y = torch.arange(k).repeat_interleave(n_per_class)
    info = DataInfo(name="rgb", modality="image", num_classes=k, shape=(3, size, size),
                    mean=(0.0,) * 3, std=(1.0,) * 3)
    s = Split(x, y)
    return RealData(info, s, s, s)


# ---------------------------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------------------------
def test_hallucinator_is_encoder_affine_decoder():
    """H(b) = ConvTranspose(scale * Conv(b) + shift) with PyTorch's own modules' semantics."""
    h = Hallucinator(1, 3, 3, 3, (8, 8))
    h.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        h.scale.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
        h.shift.normal_(generator=torch.Generator().manual_seed(3))
    enc, dec = torch.nn.Conv2d(1, 3, 3), torch.nn.ConvTranspose2d(3, 3, 3)
    with torch.no_grad():
        enc.weight.copy_(h.enc_weight), enc.bias.copy_(h.enc_bias)
        dec.weight.copy_(h.dec_weight), dec.bias.copy_(h.dec_bias)
    b = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    assert h(b).shape == (4, 3, 8, 8)
    torch.testing.assert_close(h(b), dec(h.scale * enc(b) + h.shift))
    assert h.scale.shape == h.shift.shape == (1, 3, 6, 6)


def test_hallucinator_default_init_from_generator():
    a, b = (Hallucinator(3, 3, 3, 3, (32, 32)) for _ in range(2))
    a.reset_parameters(torch.Generator().manual_seed(5))
    b.reset_parameters(torch.Generator().manual_seed(5))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(a.scale, torch.ones_like(a.scale)) and not a.shift.any()
    bound = 1 / math.sqrt(3 * 9)
    assert a.enc_weight.abs().max() <= bound and a.enc_weight.std() > bound / 3
    assert a.dec_bias.abs().max() <= bound


def test_numbers_and_budget():
    # Fashion-MNIST: enc 1x1x3x3 + 1, scale/shift 2 x 26 x 26, dec 1x1x3x3 + 1
    assert hallucinator_numel(FMNIST) == 10 + 2 * 26 * 26 + 10 == 1372
    # CIFAR-10: 3 -> 3 channels (84 + 5400 + 84), grey bases 1 -> 3 (30 + 5400 + 84)
    assert hallucinator_numel(CIFAR) == 5568
    assert hallucinator_numel(CIFAR, base_channels=1) == 5514
    # equal storage: 5 hallucinators take < 1 image per class -> IPC - 1 bases per class
    assert [bases_for_budget(FMNIST, ipc) for ipc in (2, 10, 50)] == [1, 9, 49]
    assert [bases_for_budget(CIFAR, ipc) for ipc in (10, 50)] == [9, 49]
    # IPC 1: nothing fits beside the hallucinators -> 1 base per class (over the budget)
    assert bases_for_budget(FMNIST, 1) == 1
    # grey bases: 3 per RGB image
    assert bases_for_budget(CIFAR, 10, base_channels=1) == 27
    with pytest.raises(ValueError):
        bases_for_budget(FMNIST, 0)


def test_materialize_is_every_hallucinator_on_every_base():
    syn = HaBaSet(FMNIST, ipc=3, num_hallucinators=4)
    for h in syn.decoders:
        h.reset_parameters(torch.Generator().manual_seed(len(syn.meta)))
    with torch.no_grad():
        syn.codes.normal_(generator=torch.Generator().manual_seed(0))
    x, y = syn.materialize()
    n = 10 * 3
    assert x.shape == (4 * n, 1, 28, 28) and y.shape == (4 * n,)
    assert syn.num_examples == 4 * n and syn.ipc == 12
    for j in range(4):
        torch.testing.assert_close(x[j * n:(j + 1) * n], syn.decoders[j](syn.codes))
        assert torch.equal(y[j * n:(j + 1) * n], torch.arange(10).repeat_interleave(3))
    assert torch.equal(syn.class_ids, y)


def test_stored_bytes_count_the_hallucinators():
    a = HaBaSet(FMNIST, ipc=9, num_hallucinators=5)
    b = HaBaSet(FMNIST, ipc=9, num_hallucinators=3)
    assert a.stored_bytes() - b.stored_bytes() == 2 * 1372 * 4
    floats = 90 * 784 + 5 * 1372
    assert a.stored_bytes() >= floats * 4
    # at IPC 10 the summary fits in the bytes of 10 float32 images per class (+ their labels)
    pixels = init_from(_fake_fmnist(), 10, kind="pixels", generator=make_generator(0))
    assert a.stored_bytes() <= pixels.stored_bytes()
    assert a.num_examples == 450 > pixels.num_examples


def _fake_fmnist(n=10):
    x = torch.rand(10 * n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    s = Split(x, torch.arange(10).repeat_interleave(n))
    return RealData(FMNIST, s, s, s)


def test_init_from_with_defaults_real_and_noise(digits):
    g = make_generator(0)
    syn = init_from(digits, 2, kind="haba", init="real", generator=g)
    assert isinstance(syn, HaBaSet) and syn.num_decoders == 5 and syn.codes.shape == (20, 1, 8, 8)
    for c in range(10):  # every base is a training image of its class
        pool = digits.train.x[digits.train.y == c].flatten(1)
        for b in syn.codes[syn.class_slice(c)].detach().flatten(1):
            assert (pool == b).all(1).any()
    assert all(torch.equal(h.scale, torch.ones_like(h.scale)) for h in syn.decoders)
    assert all(h.enc_weight.abs().sum() > 0 for h in syn.decoders)  # initialised, not zeros
    again = init_from(digits, 2, kind="haba", init="real", generator=make_generator(0))
    for k, v in syn.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    noise = init_from(digits, 2, kind="haba", init="noise", generator=make_generator(0))
    assert noise.codes.std() > 0.5 and not torch.equal(noise.codes, syn.codes)


def test_grey_bases_are_the_channel_mean():
    real = _rgb_real()
    syn = init_from(real, 2, kind="haba", init="real", generator=make_generator(0),
                    base_channels=1, num_hallucinators=2)
    assert syn.codes.shape == (4, 1, 8, 8)
    x, _ = syn.materialize()
    assert x.shape == (8, 3, 8, 8)
    means = real.train.x.mean(1, keepdim=True).flatten(1)
    for b in syn.codes.detach().flatten(1):
        assert torch.isclose(means, b).all(1).any()


def test_save_load_round_trip(digits, tmp_path):
    syn = init_from(digits, 1, kind="haba", init="real", generator=make_generator(3),
                    num_hallucinators=3, kernel_size=5, lr=0.02)
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    assert isinstance(back, HaBaSet) and back.config() == syn.config()
    assert back.kernel_size == 5 and back.num_decoders == 3
    for k, v in syn.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    torch.testing.assert_close(back.materialize()[0], syn.materialize()[0])
    assert back.stored_bytes() == syn.stored_bytes()


@pytest.mark.parametrize("kw", [dict(num_hallucinators=0), dict(kernel_size=9),
                                dict(kernel_size=0), dict(base_channels=2),
                                dict(hidden_channels=0)])
def test_bad_summary_settings(kw):
    with pytest.raises(ValueError):
        HaBaSet(DataInfo(name="d", modality="image", num_classes=2, shape=(1, 8, 8),
                         mean=(0.0,), std=(1.0,)), ipc=1, **kw)


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------
def test_defaults_are_the_published_settings():
    d = create_distiller("haba")
    assert (d.num_hallucinators, d.lr_img, d.lr_style, d.momentum, d.momentum_lr) == \
        (5, 100.0, 100.0, 0.95, 0.9)
    assert (d.lambda_adv, d.lambda_cls, d.lambda_likeli, d.lambda_contrast) == (0.1, 1.0, 0.1, 0.1)
    assert (d.syn_steps, d.expert_epochs, d.max_start_epoch, d.lr_lr, d.lr_teacher) == \
        (30, 2, 20, 1e-5, 0.001)  # the CIFAR-10 IPC-10 script
    assert d.iterations == 15000 and d.min_syn_lr == 0.001 and d.budget == "storage"
    p = create_distiller("haba", "cifar10-ipc1")
    assert (p.syn_steps, p.max_start_epoch, p.lr_lr, p.lr_teacher, p.zca) == \
        (50, 2, 1e-7, 0.01, True)


@pytest.mark.parametrize("kw", [dict(num_hallucinators=1), dict(budget="pixels"),
                                dict(lambda_adv=-1.0), dict(lr_style=0.0), dict(momentum=1.0),
                                dict(temperature=0.0)])
def test_bad_method_settings(kw):
    with pytest.raises(ConfigError):
        create_distiller("haba", **kw)


def test_needs_a_haba_summary(digits, experts):
    d = create_distiller("haba", **TINY)
    pixels = init_from(digits, 2, generator=make_generator(0), lr=0.01)
    with pytest.raises(ConfigError):
        d.distill(digits, pixels)


def test_init_synset_maps_the_budget(digits):
    d = create_distiller("haba", **TINY)
    syn = d.init_synset(digits, ipc=10)
    # digits 8x8: 2 hallucinators x 92 numbers -> 9 bases per class in 10 images' numbers
    assert syn.codes_per_class == 9 and syn.meta["budget_ipc"] == 10
    assert float(syn.lr.detach()) == pytest.approx(d.lr_teacher)
    assert syn.stored_bytes() <= init_from(digits, 10, generator=make_generator(0)).stored_bytes()
    as_bases = create_distiller("haba", **TINY, budget="bases").init_synset(digits, ipc=3)
    assert as_bases.codes_per_class == 3


def _run(digits, iterations=2, workdir=None, resume=False, **kw):
    d = create_distiller("haba", **{**TINY, "iterations": iterations, **kw})
    syn = d.init_synset(digits, ipc=2)
    seen = []
    d.distill(digits, syn, [seen.append], workdir=workdir, resume=resume)
    return d, syn, seen


def test_step_updates_bases_hallucinators_lr_and_extractor(digits, experts):
    d = create_distiller("haba", **TINY)
    syn = d.init_synset(digits, ipc=2)
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    d.setup(digits, syn)
    ext0 = [p.detach().clone() for p in d.extractor_.parameters()]
    m = d.step(digits, syn)
    assert set(m) >= {"loss", "match", "adversarial", "extractor_loss", "syn_lr"}
    assert m["loss"] == pytest.approx(m["match"] + m["adversarial"], rel=1e-5)
    assert 0 <= m["adversarial"] <= d.lambda_adv
    assert not torch.equal(syn.codes, before["codes"])
    assert any(not torch.equal(syn.state_dict()[k], before[k]) for k in before if "decoders" in k)
    assert float(syn.lr.detach()) != float(before["lr"]) and float(syn.lr.detach()) >= d.min_syn_lr
    assert any(not torch.equal(p, q) for p, q in zip(d.extractor_.parameters(), ext0))


def test_step_size_is_clipped_below(digits, experts):
    """After each step alpha = max(alpha, min_syn_lr) (the authors' clip at 0.001)."""
    d = create_distiller("haba", **TINY, min_syn_lr=0.5)
    syn = d.init_synset(digits, ipc=2)
    d.setup(digits, syn)
    d.step(digits, syn)
    assert float(syn.lr.detach()) == 0.5


def test_deterministic_and_resumable(digits, experts, tmp_path):
    _, a, seen_a = _run(digits, iterations=2)
    _, b, _ = _run(digits, iterations=2)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # one iteration, then resume to two (the extractor and its momentum come back too)
    _run(digits, iterations=1, workdir=tmp_path / "run")
    _, c, seen_c = _run(digits, iterations=2, workdir=tmp_path / "run", resume=True)
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k
    assert seen_c[-1]["loss"] == seen_a[-1]["loss"]


def test_supervised_contrastive_matches_its_definition():
    from datadistill.distillers.haba import supervised_contrastive
    g = torch.Generator().manual_seed(0)
    z0 = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64))
    z1 = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64))
    y = torch.tensor([0, 1, 0, 2, 1])
    z, yy, tau = torch.cat([z0, z1]), torch.cat([y, y]), 0.07
    total = 0.0
    for a in range(10):
        others = [k for k in range(10) if k != a]
        denom = sum(math.exp(float(z[a] @ z[k]) / tau) for k in others)
        pos = [p for p in others if yy[p] == yy[a]]
        total += -sum(float(z[a] @ z[p]) / tau - math.log(denom) for p in pos) / len(pos)
    assert float(supervised_contrastive(z0, z1, y)) == pytest.approx(total / 10, rel=1e-10)


def test_dm_steps_a_haba_summary(digits):
    """The factorized summary is orthogonal to the objective: DM optimizes bases and
    hallucinators through materialize()."""
    syn = init_from(digits, 1, kind="haba", init="real", generator=make_generator(0))
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    dm = create_distiller("dm", "tiny")
    dm.setup(digits, syn)
    losses = [dm.step(digits, syn)["loss"] for _ in range(2)]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert not torch.equal(syn.codes, before["codes"])
    assert all(not torch.equal(syn.state_dict()[k], before[k])
               for k in before if k.endswith(("enc_weight", "dec_weight")))
