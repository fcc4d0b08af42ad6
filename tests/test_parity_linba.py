"""Parity of LinBa (Deng & Russakovsky, NeurIPS'22) with the authors' code
(princetonvisualai/RememberThePast-DatasetDistillation; provenance in fixtures/parity/linba.md).

The fixture holds a tiny fixed float64 case and what the reference's own training loop
(``runners/sgld_runner_standard.train`` with ``CompressorBPTT`` and the
``imgs_embedding_basis_minibatch`` memory) computed on it: 3 classes of 1x16x16, a fixed
ConvNet (width 32, depth 3, instance norm; weights stored), fixed bases and coefficients, a fixed
real set of 64 images per class (all of which the reference's ``n_queries=64`` draws), unrolls
of 4-6 inner SGD-momentum steps, one or two outer SGD steps with gradient clipping.

Cases:
  ``all``        3 addresses per class, minibatch 32 >= 3: every inner step on every address;
                 bases at half resolution (downsample 2), two outer steps.
  ``minibatch``  5 addresses per class, 2 per class per inner step (the reference's random
                 draws, recorded and replayed), two outer steps.
  ``clip``       ``all`` with the clipping threshold lowered to 0.02 so the clipping acts.
  ``full``       bases at full resolution (downsample 1), one outer step.
  ``budget``     the fixed-budget addresses per class (``cal_ncoef``) for 7 configurations.
  ``defaults``   the published hyper-parameters.
The unroll runs plain and with gradient checkpointing (segments of 2, and of 1 step: the
reference's own memory scheme, which keeps every step's weights and recomputes backwards).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.runtime import RunOptions

pytestmark = pytest.mark.parity

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "linba.npz"
# float64 everywhere but the library's cross-entropy (label_loss evaluates it in float32)
RTOL = 2e-5


@pytest.fixture
def fx():
    return np.load(FIXTURE)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _real(fx) -> RealData:
    x = torch.from_numpy(fx["real_x"]).double()
    y = torch.from_numpy(fx["real_y"]).long()
    info = DataInfo(name="parity", modality="image", num_classes=3, shape=tuple(x.shape[1:]),
                    mean=(0.0,), std=(1.0,), flip=False)
    return RealData(info, Split(x, y), Split(x, y), Split(x, y))


def _run(fx, tag, checkpoint_every, monkeypatch):
    ipc, n_per_c, steps, n_basis, ds, iters, inner_lr, inner_mom, lr, mom, clip = \
        fx[f"{tag}_config"].tolist()
    real = _real(fx)
    d = create_distiller("linba", model="convnet_w32", init_mode="fixed", unroll=int(steps),
                         batch_syn=int(n_per_c), n_bases=int(n_basis), downsample=int(ds),
                         addresses=int(ipc), batch_real=64, clip_norm=clip, lr_data=lr,
                         outer_momentum=mom, inner_lr=inner_lr, inner_momentum=inner_mom,
                         checkpoint_every=checkpoint_every, iterations=int(iters))
    d.use_run(RunOptions(fused=False))
    syn = d.init_synset(real, ipc=1)
    d.setup(real, syn)
    # the fixed network: the reference's ConvNet state, layer by layer in order
    ref = [torch.from_numpy(fx[k]).double() for k in sorted(f for f in fx.files
                                                             if f.startswith("net."))]
    sd = d.fixed_.state_dict()
    assert [tuple(v.shape) for v in sd.values()] == [tuple(v.shape) for v in ref]
    d.fixed_.load_state_dict(dict(zip(sd, ref)))
    with torch.no_grad():
        syn.bases.copy_(torch.from_numpy(fx[f"{tag}_basis0"]).view_as(syn.bases))
        syn.codes.copy_(torch.from_numpy(fx[f"{tag}_coef0"]))
    # replay the reference's address draws: rows [i*steps, (i+1)*steps) for outer step i
    draws = torch.from_numpy(fx[f"{tag}_indices"]).long()
    it = {"i": 0}
    if int(n_per_c) < int(ipc):
        def replay(syn_):
            i = it["i"]
            return [draws[i * int(steps) + t] for t in range(int(steps))]
        monkeypatch.setattr(d, "_sample_addresses", replay)
    raw = {}
    clip_fn = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *a, **k):
        raw["grads"] = [p.grad.detach().clone() for p in params]
        return clip_fn(params, max_norm, *a, **k)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    out = {k: [] for k in ("loss", "grad_basis_raw", "grad_coef_raw", "grad_basis", "grad_coef",
                           "basis", "coef")}
    for i in range(int(iters)):
        it["i"] = i
        out["loss"].append(d.step(real, syn)["loss"])
        out["grad_coef_raw"].append(raw["grads"][0])
        out["grad_basis_raw"].append(raw["grads"][1].flatten(1))
        out["grad_coef"].append(syn.codes.grad.detach().clone())
        out["grad_basis"].append(syn.bases.grad.detach().flatten(1).clone())
        out["coef"].append(syn.codes.detach().clone())
        out["basis"].append(syn.bases.detach().flatten(1).clone())
    return d, out


@pytest.mark.parametrize("tag,checkpoint_every", [
    ("all", None), ("all", 2), ("minibatch", None),
    ("minibatch", 1),  # one step per segment: the reference's own scheme (weights of every step)
    ("clip", None), ("full", None)])
def test_parity_linba_unroll(fx, f64, tag, checkpoint_every, monkeypatch):
    d, out = _run(fx, tag, checkpoint_every, monkeypatch)
    bad, worst = [], {}
    for i in range(len(out["loss"])):
        for name in out:
            got = torch.as_tensor(out[name][i]).double()
            want = torch.from_numpy(np.asarray(fx[f"{tag}_{name}"][i])).double()
            if name == "grad_basis_raw":  # the reference hands it back as [bases, C, h, w]
                want = want.flatten(1)
            scale = want.abs().max().item()
            # gradients: relative to their largest entry; values: relative per entry
            atol = RTOL * scale if name.startswith("grad") else 1e-9
            if got.shape != want.shape or not torch.allclose(got, want, rtol=RTOL, atol=atol):
                err = (got - want).abs().max().item() if got.shape == want.shape else "shape"
                bad.append(f"outer step {i + 1}: {name}: max |diff| {err} (max |ref| {scale:.3g})")
            worst[name] = max(worst.get(name, 0.0), ((got - want).abs().max() / scale).item())
    print(tag, checkpoint_every, {k: f"{v:.1e}" for k, v in worst.items()})
    if tag == "clip":  # the case exists to exercise the clipping: it must have acted
        assert np.linalg.norm(np.concatenate([fx["clip_grad_coef_raw"][0].ravel(),
                                              fx["clip_grad_basis_raw"][0].ravel()])) > 0.02
    assert not bad, f"LinBa deviates from the authors' code ({tag}):\n  " + "\n  ".join(bad)


def test_parity_linba_budget(fx):
    from datadistill.synsets.linba import budget_addresses
    for b, im, ch, nc, nb, ds, want in fx["budget"].tolist():
        assert budget_addresses(b, (ch, im, im), nc, nb, ds) == want, (b, im, ch, nc, nb, ds)


def test_parity_linba_defaults(fx):
    d = create_distiller("linba")
    ipc, n_per_c, steps, n_basis, ds, iters, inner_lr, inner_mom, lr, mom, clip = \
        fx["all_config"].tolist()
    # the published command (README): 150 inner steps, SGD momentum 0.9, 16 bases at half
    # resolution, 32 addresses per class per step; config: inner lr 0.01, outer SGD 0.1 / 0.5,
    # clip 2, 64 real images per class, 500k outer iterations
    assert (d.unroll, d.inner_momentum, d.n_bases, d.downsample, d.batch_syn) == \
        (150, 0.9, 16, 2, 32)
    assert (d.inner_lr, d.lr_data, d.outer_momentum, d.clip_norm) == (inner_lr, lr, mom, clip)
    assert (d.batch_real, d.iterations, d.init, d.learn_lr, d.dsa) == (64, 500_000, "noise", False,
                                                                       False)
