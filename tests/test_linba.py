"""LinBa (Deng & Russakovsky, NeurIPS'22): the ``linba`` summary kind (bases + addresses at a
fixed budget) and the ``linba`` method (DD's checkpointed unroll with momentum, random address
minibatches, class-balanced real batches, clipped outer SGD). Parity with the authors' code is
in ``test_parity_linba.py``."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError, IPCError
from datadistill.runtime import RunOptions
from datadistill.synsets import init_from, load_summary
from datadistill.synsets.linba import LinBaSet, budget_addresses
from datadistill.train import label_loss

RUN = RunOptions(fused=False)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- the summary kind ------------------------------------------------------------------------------
def test_budget_layout_and_stored_bytes(digits, tmp_path):
    s = init_from(digits, 2, kind="linba", init="real", generator=_gen())  # every default
    # digits 1x8x8, 10 classes, 16 bases at 4x4: (2*10*64 - 16*16) / (10*16) = 6.4 -> 6
    assert s.addresses == 6 == budget_addresses(2, (1, 8, 8), 10, 16, 2)
    assert s.bases.shape == (16, 1, 4, 4) and s.codes.shape == (60, 16)
    x, y = s.materialize()
    assert x.shape == (60, 1, 8, 8) and y.tolist() == s.class_ids.tolist()
    assert s.class_ids.tolist() == torch.arange(10).repeat_interleave(6).tolist()
    floats = 16 * 16 + 60 * 16
    assert floats <= 2 * 10 * 64  # within the budget of 2 images per class
    # every float of the memory, plus the hard label of every address (1 to 8 bytes each,
    # as the base class stores integers)
    assert 60 <= s.stored_bytes() - 4 * floats <= 8 * 60
    soft = init_from(digits, 2, kind="linba", init="real", generator=_gen(), label_format="soft")
    assert soft.stored_bytes() == s.stored_bytes() + 4 * 60 * 10
    assert {id(p) for p in s.decoder_parameters()} == {id(s.bases)}
    assert [id(p) for p in soft.code_parameters()] == [id(soft.codes), id(soft.y)]
    # save -> load rebuilds the same layout (also with addresses given directly)
    fixed = init_from(digits, 1, kind="linba", init="noise", generator=_gen(), addresses=9,
                      n_bases=5, downsample=1)
    for syn in (s, soft, fixed):
        syn.save(tmp_path / syn.label_format / str(syn.addresses))
        back = load_summary(tmp_path / syn.label_format / str(syn.addresses))
        assert isinstance(back, LinBaSet) and back.config() == syn.config()
        assert torch.equal(back.materialize()[0], syn.materialize()[0])
    assert fixed.addresses == 9 and fixed.bases.shape == (5, 1, 8, 8)


def test_bad_parameters_raise(digits):
    # 16 bases of 8x8 alone exceed the storage of 1 image per class
    with pytest.raises(IPCError, match="does not fit"):
        init_from(digits, 1, kind="linba", init="real", generator=_gen(), downsample=1)
    for kw in ({"n_bases": 0}, {"downsample": 0}):
        with pytest.raises(ValueError):
            init_from(digits, 2, kind="linba", init="real", generator=_gen(), **kw)
    for kw in ({"images_per_step": 1}, {"batch_syn": 0}, {"clip_norm": -1.0}, {"n_bases": 0},
               {"addresses": 0}, {"outer_momentum": 1.0}, {"inner_lr": 0.0}, {"batch_real": 0}):
        with pytest.raises(ConfigError):
            create_distiller("linba", **kw)


def test_inits(digits):
    # real: every example is the rank-n_bases least-squares reconstruction of a real image of its
    # class; with as many bases as pixels at full resolution that is the image itself
    s = init_from(digits, 1, kind="linba", init="real", generator=_gen(3), n_bases=64,
                  downsample=1, addresses=3)
    g = _gen(3)
    want = torch.cat([digits.sample_class(c, 3, g) for c in range(10)])
    assert torch.allclose(s.materialize()[0].detach(), want, atol=1e-4)
    # at half resolution the reconstruction beats plain area-downsampling + bilinear upsampling
    s = init_from(digits, 2, kind="linba", init="real", generator=_gen(3))
    g = _gen(3)
    want = torch.cat([digits.sample_class(c, s.addresses, g) for c in range(10)])
    lo = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(want, 2), size=(8, 8), mode="bilinear", align_corners=False)
    err = (s.materialize()[0].detach() - want).norm()
    assert err < (lo - want).norm()
    # noise: the reference's xavier-uniform bases and coefficients
    n = init_from(digits, 2, kind="linba", init="noise", generator=_gen())
    assert n.bases.abs().max() <= math.sqrt(6 / (16 + 16)) and n.bases.std() > 0.1
    assert n.codes.abs().max() <= math.sqrt(6 / (60 + 16))
    assert not torch.equal(n.codes, init_from(digits, 2, kind="linba", init="noise",
                                              generator=_gen(1)).codes)


def test_dm_steps_a_linba_summary(digits):
    """Any objective can drive the memory: DM on a linba summary moves bases and addresses."""
    syn = init_from(digits, 2, kind="linba", init="real", generator=_gen())
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    d = create_distiller("dm", "tiny", iterations=2)
    seen = []
    d.distill(digits, syn, [seen.append], run=RUN)
    assert len(seen) == 2 and all(math.isfinite(e["loss"]) for e in seen)
    assert not torch.equal(before["codes"], syn.codes)
    assert not torch.equal(before["decoders.0"], syn.bases)
    assert syn.check_finite()


# -- the method ------------------------------------------------------------------------------------
def test_address_minibatches_and_real_batch(digits):
    d = create_distiller("linba", "tiny", unroll=3)
    syn = d.init_synset(digits, ipc=2)  # tiny: 4 bases at 4x4 -> 30 addresses per class
    assert syn.addresses == budget_addresses(2, (1, 8, 8), 10, 4, 2) == 30
    d.use_run(RUN)
    d.setup(digits, syn)
    steps = d._sample_addresses(syn)
    assert len(steps) == 3
    for idx in steps:  # batch_syn=2 per class, sorted, class-major
        assert syn.class_ids[idx].tolist() == torch.arange(10).repeat_interleave(2).tolist()
        assert torch.equal(idx, idx.sort()[0])
    assert len({tuple(i.tolist()) for i in steps}) > 1  # a new draw every inner step
    xr, yr = d._real_batch(digits)
    assert yr.tolist() == torch.arange(10).repeat_interleave(4).tolist()
    assert xr.shape == (40, 1, 8, 8)
    whole = create_distiller("linba", "tiny", batch_syn=30)
    whole.use_run(RUN)
    whole.setup(digits, syn)
    assert whole._sample_addresses(syn) == [None]  # every step on every address


def _saved_peak(fn):
    """Peak bytes of tensors held by autograd graphs (saved for backward) while ``fn`` runs."""
    state = {"live": 0, "peak": 0}

    class Held:
        def __init__(self, t):
            self.t, self.n = t, t.numel() * t.element_size()
            state["live"] += self.n
            state["peak"] = max(state["peak"], state["live"])

        def __del__(self):
            state["live"] -= self.n

    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        fn()
    return state["peak"]


@pytest.fixture
def digits64(digits):
    """The digits in float64 (a tiny case whose float32 meta-gradient is rounding-sensitive:
    plain and checkpointed unrolls differ by ~6 % there, by 1e-15 in float64)."""
    from datadistill.data.base import RealData, Split
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield RealData(digits.info, Split(digits.train.x.double(), digits.train.y), digits.val,
                   digits.test)
    torch.set_default_dtype(old)


def test_checkpointed_unroll_same_gradient_bounded_memory(digits64):
    digits, out = digits64, {}
    for unroll in (8, 16):
        for ck in (None, 2):
            d = create_distiller("linba", "tiny", init_mode="fixed", unroll=unroll,
                                 checkpoint_every=ck, clip_norm=None, iterations=1)
            syn = d.init_synset(digits, ipc=2)
            d.use_run(RUN)
            d.setup(digits, syn)
            peak = _saved_peak(lambda: d.step(digits, syn))
            out[unroll, ck] = (peak, syn.codes.grad.clone(), syn.bases.grad.clone())
    for unroll in (8, 16):  # the same gradients, checkpointed or not
        _, gc, gb = out[unroll, None]
        _, cc, cb = out[unroll, 2]
        assert (gc - cc).norm() < 1e-10 * gc.norm() and (gb - cb).norm() < 1e-10 * gb.norm()
        assert gc.norm() > 0 and gb.norm() > 0
    # plain BPTT holds every step's graph: its peak grows with the unroll; the checkpointed one
    # holds one segment's: flat in the unroll and a fraction of the plain one
    plain8, plain16 = out[8, None][0], out[16, None][0]
    ck8, ck16 = out[8, 2][0], out[16, 2][0]
    assert plain16 > 1.8 * plain8
    assert ck16 < 1.1 * ck8 and ck16 < plain16 / 4


def _plain_unroll_grads(d, syn, xr, yr, learned):
    """The meta-gradient by plain autograd through the paper's unroll (momentum SGD on the
    whole summary from the fixed network), written out here with plain torch ops."""
    net = d.fixed_
    names = [k for k, _ in net.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in net.named_parameters()]
    vel = [torch.zeros_like(p) for p in params]
    x, y = syn.materialize()
    for t in range(d.unroll_):
        lr = torch.nn.functional.softplus(d.raw_lrs_[t])
        loss = label_loss(functional_call(net, dict(zip(names, params)), (x,)), y, syn.label_format)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        vel = [d.inner_momentum * v + g for v, g in zip(vel, grads)]
        params = [p - lr * v for p, v in zip(params, vel)]
    loss = label_loss(functional_call(net, dict(zip(names, params)), (xr,)), yr, "hard")
    return torch.autograd.grad(loss, learned)


def test_learned_labels_and_step_sizes_get_the_unrolled_gradient(digits64, digits, monkeypatch):
    d = create_distiller("linba", "tiny", init_mode="fixed", unroll=5, checkpoint_every=2,
                         batch_syn=None, clip_norm=None, learn_labels=True, learn_lr=True,
                         iterations=1)
    syn = d.init_synset(digits64, ipc=1)
    assert syn.label_format == "soft" and syn.y is not None
    d.use_run(RUN)
    d.setup(digits64, syn)
    xr, yr = d._real_batch(digits64)
    monkeypatch.setattr(d, "_real_batch", lambda real: (xr, yr))
    learned = [syn.codes, syn.y, syn.bases, d.raw_lrs_]
    want = _plain_unroll_grads(d, syn, xr, yr, learned)
    y0 = syn.y.detach().clone()
    d.step(digits64, syn)
    for name, p, w in zip(("codes", "labels", "bases", "step sizes"), learned, want):
        assert p.grad is not None and (p.grad - w).norm() < 1e-6 * w.norm(), name
        assert w.norm() > 0, name
    assert not torch.equal(syn.y.detach(), y0)  # the labels are learned
    # without learn_lr the step size stays the reference's fixed 0.01 and takes no gradient
    fixed = create_distiller("linba", "tiny", iterations=1)
    s2 = fixed.init_synset(digits64, ipc=1)
    fixed.distill(digits64, s2, run=RUN)
    assert torch.allclose(fixed.step_sizes(), torch.full((4,), 0.01))
    assert fixed.raw_lrs_.grad is None and "dd_lrs" not in s2.meta


def test_determinism_and_resume(digits, tmp_path):
    def run(seed=0, **kw):
        d = create_distiller("linba", "tiny", iterations=3, seed=seed)
        syn = d.init_synset(digits, ipc=2)
        d.distill(digits, syn, run=RUN, **kw)
        return syn

    a, c = run(), run(seed=1)  # (an interrupted + resumed run equals ``a``: determinism too)
    assert not torch.equal(a.codes, c.codes)
    d = create_distiller("linba", "tiny", iterations=3)
    syn = d.init_synset(digits, ipc=2)

    def stop(ev):
        if ev["iteration"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d.distill(digits, syn, [stop], workdir=tmp_path, run=RUN)
    d2 = create_distiller("linba", "tiny", iterations=3)
    syn2 = d2.init_synset(digits, ipc=2)
    d2.distill(digits, syn2, workdir=tmp_path, resume=True, run=RUN)
    assert torch.allclose(syn2.codes, a.codes, atol=1e-6)
    assert torch.allclose(syn2.bases, a.bases, atol=1e-6)
