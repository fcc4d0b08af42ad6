"""IT-GAN: the GAN cache, the latent summary (``itgan`` kind) and the distiller's behaviour."""
from __future__ import annotations

import math

import pytest
import torch

from datadistill.distillers import ConfigError, create_distiller
from datadistill.distillers.itgan import ClassAdam
from datadistill.gan_cache import GANConfig, gan_dir, load_generator, train_gan
from datadistill.runtime import make_generator
from datadistill.synsets import init_from, load_summary

#: a GAN and an inversion small enough for tests on the 8x8 digits
SMALL = {"dim_z": 16, "gan_width": 8, "gan_steps": 20, "gan_batch": 32, "invert_steps": 5}


def small_cfg(**kw) -> GANConfig:
    return GANConfig(**{"dim_z": 16, "width": 8, "steps": 20, "batch": 32, **kw})


def itgan_set(real, ipc=2, init="real", seed=0, **kw):
    return init_from(real, ipc, kind="itgan", init=init, generator=make_generator(seed),
                     **{**SMALL, **kw})


def tiny(**kw):
    return create_distiller("itgan", "tiny", **kw)


# -- the GAN cache ------------------------------------------------------------------------------
def test_gan_training_is_deterministic_and_cached(digits, tmp_path):
    a = train_gan(digits, small_cfg(), tmp_path / "a")
    b = train_gan(digits, small_cfg(), tmp_path / "b")
    from safetensors.torch import load_file
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # a second load reuses the cache: no training step runs
    calls = []
    load_generator(digits, small_cfg(), on_step=calls.append)
    assert calls  # first time: trained
    calls.clear()
    g = load_generator(digits, small_cfg(), on_step=calls.append)
    assert not calls and not g.training and not any(p.requires_grad for p in g.parameters())
    # every setting is in the key
    assert gan_dir(digits, small_cfg()) != gan_dir(digits, small_cfg(seed=1))
    assert gan_dir(digits, small_cfg()) != gan_dir(digits, small_cfg(steps=21))


def test_gan_training_resumes_exactly(digits, tmp_path):
    whole = train_gan(digits, small_cfg(steps=12), tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_at_7(e):
        if e["gan_step"] == 7:
            raise Stop

    with pytest.raises(Stop):
        train_gan(digits, small_cfg(steps=12), tmp_path / "cut", save_every=5, on_step=stop_at_7)
    seen = []
    cut = train_gan(digits, small_cfg(steps=12), tmp_path / "cut", save_every=5,
                    on_step=seen.append)
    assert seen[0]["gan_step"] == 6  # resumed after the partial state of step 5
    from safetensors.torch import load_file
    wa, wb = load_file(str(whole)), load_file(str(cut))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list((tmp_path / "cut").glob("partial*"))


def test_gan_config_errors():
    with pytest.raises(ConfigError):
        GANConfig(steps=0)
    with pytest.raises(ConfigError):
        GANConfig(lr=0.0)


# -- the summary ----------------------------------------------------------------------------------
def test_summary_shapes_and_stored_bytes(digits):
    syn = itgan_set(digits, ipc=3)
    x, y = syn.materialize()
    k = digits.info.num_classes
    assert x.shape == (k * 3, *digits.info.shape)
    assert torch.equal(y, torch.arange(k).repeat_interleave(3))
    assert syn.codes.shape == (k * 3, SMALL["dim_z"])
    # every float of the latents and the generator (weights, BN statistics) is counted; the
    # integer tensors (labels, BN counters) at most at int64 width
    gsd = syn.generator.state_dict()
    g_float = sum(t.numel() * 4 for t in gsd.values() if t.is_floating_point())
    g_int = sum(t.numel() * 8 for t in gsd.values() if not t.is_floating_point())
    floats = syn.codes.numel() * 4 + g_float
    assert g_float > 0 and floats < syn.stored_bytes() <= floats + syn.labels.numel() * 8 + g_int
    px = syn.to_pixels()
    assert px.kind == "pixels" and torch.equal(px.materialize()[0], x.detach())
    assert x.numel() * 4 < px.stored_bytes() <= x.numel() * 4 + y.numel() * 8
    # the anchors (inverted real images) are method state, never stored
    assert syn.anchors is not None and "anchors" not in syn.state_dict()


def test_generator_frozen_and_in_eval_mode(digits):
    syn = itgan_set(digits)
    syn.train()
    assert not syn.generator.training
    assert all(not p.requires_grad for p in syn.generator.parameters())
    x, _ = syn.materialize()
    x.sum().backward()
    assert syn.codes.grad is not None and syn.codes.grad.abs().sum() > 0
    assert all(p.grad is None for p in syn.generator.parameters())


def test_inversion_reproduces_the_real_images_better_than_noise(digits):
    noise = itgan_set(digits, ipc=2, init="noise", invert_steps=0)
    inv = itgan_set(digits, ipc=2, init="real", invert_steps=200)
    with torch.no_grad():
        err_inv = float(((inv.materialize()[0] - inv.anchors) ** 2).mean())
        err_noise = float(((noise.materialize()[0] - inv.anchors) ** 2).mean())
    assert err_inv < 0.85 * err_noise  # (a 20-step GAN: ~0.76 measured)


def test_save_load_round_trip(digits, tmp_path):
    syn = itgan_set(digits)
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    assert back.kind == "itgan" and back.config() == syn.config()
    assert torch.equal(back.materialize()[0], syn.materialize()[0])
    assert back.stored_bytes() == syn.stored_bytes()


# -- the distiller --------------------------------------------------------------------------------
def test_distill_changes_latents_only_and_reports_both_terms(digits):
    d = tiny()
    syn = d.init_synset(digits, ipc=2)
    g0 = {k: v.clone() for k, v in syn.generator.state_dict().items()}
    z0 = syn.codes.detach().clone()
    seen = []
    d.distill(digits, syn, [seen.append])
    assert not torch.equal(syn.codes, z0)
    assert all(torch.equal(g0[k], v) for k, v in syn.generator.state_dict().items())
    e = seen[-1]
    assert e["loss_div"] > 0 and e["loss_cond"] > 0
    r = d.ratio_div
    assert math.isclose(e["loss"], r * e["loss_div"] + (1 - r) * e["loss_cond"], rel_tol=1e-5)


def test_ratio_zero_drops_the_regularizer(digits):
    d = tiny(ratio_div=0.0, iterations=1)
    syn = d.init_synset(digits, ipc=2)
    out = []
    d.distill(digits, syn, [out.append])
    assert out[-1]["loss_div"] == 0.0 and out[-1]["loss"] == pytest.approx(out[-1]["loss_cond"])


def test_determinism_for_a_seed(digits):
    runs = []
    for _ in range(2):
        d = tiny(seed=3)
        syn = d.init_synset(digits, ipc=2)
        d.distill(digits, syn)
        runs.append(syn.codes.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_resume_gives_the_uninterrupted_result(digits, tmp_path):
    d = tiny(iterations=4, batch_z=1)  # two mini-batches per class: per-class Adam state matters
    syn = d.init_synset(digits, ipc=2)
    d.distill(digits, syn)
    want = syn.codes.detach().clone()

    class Stop(Exception):
        pass

    def stop(e):
        if e["iteration"] == 2:
            raise Stop

    d2 = tiny(iterations=4, batch_z=1)
    syn2 = d2.init_synset(digits, ipc=2)
    with pytest.raises(Stop):
        d2.distill(digits, syn2, [stop], workdir=tmp_path / "run")
    d3 = tiny(iterations=4, batch_z=1)
    syn3 = d3.init_synset(digits, ipc=2)
    d3.distill(digits, syn3, workdir=tmp_path / "run", resume=True)
    assert torch.allclose(syn3.codes, want, atol=0, rtol=0)


def test_random_minibatches_and_noise_init_run(digits):
    d = tiny(batch_z=1, z_sample_mode="random", iterations=2)
    d = dataclass_replace(d, init="noise")
    syn = d.init_synset(digits, ipc=2)
    assert syn.anchors is None
    z0 = syn.codes.detach().clone()
    d.distill(digits, syn)  # anchors: random real images of each class
    assert not torch.equal(syn.codes, z0) and syn.check_finite()


def dataclass_replace(d, **kw):
    import dataclasses
    return dataclasses.replace(d, **kw)


def test_bad_parameters_are_refused(digits):
    for bad in ({"ratio_div": 1.5}, {"z_sample_mode": "shuffled"}, {"batch_z": 0},
                {"lr_data": 0.0}, {"invert_steps": -1}):
        with pytest.raises(ConfigError):
            tiny(**bad)
    d = tiny()
    px = init_from(digits, 2, kind="pixels", init="real", generator=make_generator(0))
    with pytest.raises(ConfigError, match="itgan"):
        d.distill(digits, px)
    with pytest.raises(ConfigError):
        d.init_synset(digits)


def test_pairs_with_dm(digits):
    """The ``itgan`` kind under another objective: DM's SGD moves the latents, not the frozen
    generator."""
    syn = itgan_set(digits, ipc=2)
    g0 = {k: v.clone() for k, v in syn.generator.state_dict().items()}
    z0 = syn.codes.detach().clone()
    dm = create_distiller("dm", "tiny")
    dm.distill(digits, syn)
    assert not torch.equal(syn.codes, z0) and syn.check_finite()
    assert all(torch.equal(g0[k], v) for k, v in syn.generator.state_dict().items())


def test_class_adam_is_torch_adam_per_class():
    """One class's rows stepped by ``ClassAdam`` follow ``torch.optim.Adam`` on those rows alone;
    the other class's rows do not move."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, generator=g)
    p = torch.nn.Parameter(z.clone())
    q = torch.nn.Parameter(z[:2].clone())
    opt = ClassAdam([p], lr=0.1, num_classes=2)
    ref = torch.optim.Adam([q], lr=0.1, betas=(0.9, 0.999))
    for _ in range(3):
        grad = torch.randn(2, 3, generator=g)
        p.grad = torch.cat([grad, torch.zeros(2, 3)])
        q.grad = grad.clone()
        opt.step(rows=slice(0, 2), cls=0)
        ref.step()
    assert torch.allclose(p[:2], q, atol=1e-7) and torch.equal(p[2:], z[2:])
    assert opt.state[p]["step"].tolist() == [3.0, 0.0]


def test_compact_stores_the_generated_images_at_a_precision(digits):
    """``compact`` of an IT-GAN summary: its generated images alone (the fixed-bytes rows'
    conversion), exactly at float32, quantized as stored at uint8; no top-k or threshold."""
    from datadistill.compact import compact

    syn = itgan_set(digits, ipc=2)
    x = syn.materialize()[0].detach()
    px = compact(syn)
    assert px.kind == "pixels" and torch.equal(px.materialize()[0], x)
    assert px.stored_bytes() < syn.stored_bytes() and px.meta["compacted_from"]["kind"] == "itgan"
    u8 = compact(syn, dtype="uint8")
    assert u8.stored_bytes() < px.stored_bytes() / 3
    # the breakdown (`datadistill compact` prints it) is the saved tensors: it sums to the bytes
    from datadistill.compact import bytes_breakdown
    for s in (px, u8):
        assert sum(bytes_breakdown(s).values()) == s.stored_bytes()
    err = (u8.materialize()[0] - x).abs().max()
    assert 0 < err <= (x.max() - x.min()) / 255 / 2 + 1e-6  # one rounding step of the range
    with pytest.raises(ConfigError, match="dtype only"):
        compact(syn, topk=3)
