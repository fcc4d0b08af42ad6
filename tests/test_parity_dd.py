"""Parity of DD (Wang et al. 2018) with the authors' code (ssnl/dataset-distillation).

The fixture ``fixtures/parity/dd.npz`` holds a tiny fixed case and what the authors' own
``Trainer.train`` computed on it (provenance in ``dd.md``): LeNet (their architecture, their
xavier-normal init, weights stored), 3 classes of 1x28x28, a fixed real batch of 12, fixed
distilled images and fixed learned step sizes, two outer Adam steps, all in float64.

Cases:
  ``single``   distill_steps=1 x distill_epochs=3: every inner step trains on the same images, so
               the library's layout (each step on the whole summary, ipc=1, unroll=3) computes the
               same function; isolates the step-size parametrization and the outer optimizer.
  ``groups``   distill_steps=2 x distill_epochs=2 (the reference's layout: inner step t trains on
               its own image group t mod 2, one image per class per group): library ipc=2,
               unroll=4.
  ``init``     the network initialisation DD trains from (reference: xavier-normal, gain 1,
               zero biases).
  ``defaults`` the published schedule: 400 epochs of the real data at batch 1024.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError
from datadistill.models import MODELS

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "dd.npz"
LENET = "parity_lenet"
# float64 everywhere; the library's label_loss evaluates the cross-entropy in float32
# (``out.float()``), which bounds the agreement at ~1e-6 relative.
RTOL, ATOL = 2e-5, 1e-9


# -- glue to the library (the only place that names its internals) ------------------------------
class LeNet(nn.Module):
    """LeCun et al.'s LeNet-5 as the DD paper uses it for MNIST: conv5(6, pad 2 at 28x28)-relu-
    maxpool2, conv5(16)-relu-maxpool2, fc 120-relu, fc 84-relu, fc K."""

    def __init__(self, info, **_):
        super().__init__()
        c, h = info.shape[0], info.shape[-1]
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2 if h == 28 else 0)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, info.num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


@pytest.fixture
def lib(monkeypatch):
    """float64 defaults and the LeNet visible to ``create_model`` for the duration of a test."""
    get = MODELS.get
    monkeypatch.setattr(MODELS, "get", lambda name: LeNet if name.lower() == LENET else get(name))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _real(fx) -> RealData:
    x = torch.from_numpy(fx["real_x"]).double()
    y = torch.from_numpy(fx["real_y"]).long()
    info = DataInfo(name="parity", modality="image", num_classes=3, shape=tuple(x.shape[1:]),
                    mean=(0.1307,), std=(0.3081,), flip=False)
    return RealData(info, Split(x, y), Split(x, y), Split(x, y))


def _distiller(**kw):
    """DD as the reference runs it: Adam 0.01 (0.5, 0.999), fixed network, no augmentation."""
    base = dict(model=LENET, init_mode="fixed", dsa=False, init="noise", lr_data=0.01,
                inner_lr=0.02, inner_momentum=0.0, seed=0)
    try:
        return create_distiller("dd", **{**base, **kw})
    except ConfigError as e:
        pytest.fail(f"the library cannot express the reference's configuration {kw}: {e}")


def _lr_param(d) -> torch.Tensor:
    """The library's learnable step-size parameter (raw, before its positive map)."""
    return d.raw_lrs_ if hasattr(d, "raw_lrs_") else d.log_lrs_


def _to_step_sizes(d, raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) if hasattr(d, "raw_lrs_") else raw.exp()


def _set_step_sizes(d, lrs) -> None:
    lrs = torch.as_tensor(lrs, dtype=torch.float64)
    raw = lrs.expm1().log() if hasattr(d, "raw_lrs_") else lrs.log()
    with torch.no_grad():
        _lr_param(d).copy_(raw)


def _outer_lr_schedule(d):
    """(outer steps between decays, factor) of the library's outer-lr step decay, or None."""
    every = getattr(d, "lr_decay_every", None)
    return None if not every else (every, getattr(d, "lr_decay", None))


def _set_network(d, fx) -> None:
    sd = {k[len("net."):]: torch.from_numpy(fx[k]).double() for k in fx.files if k.startswith("net.")}
    d.fixed_.load_state_dict(sd)


def _to_library_images(groups: np.ndarray, ipc: int) -> torch.Tensor:
    """Reference groups [S, K*k, C, H, W] (class-major inside a group) -> the library's
    [K*ipc, C, H, W] (class-major, ipc = S*k): library image (c, s*k + j) = group s, (c, j)."""
    g = torch.as_tensor(groups).double()
    s, kk = g.shape[:2]
    k = ipc // s
    return g.view(s, kk // k, k, *g.shape[2:]).transpose(0, 1).reshape(kk * s, *g.shape[2:])


def _run(fx, tag, ipc, **kw):
    """Two outer steps of the library on the fixture's case; per step: loss, image grads,
    step-size param grads, dL/d(step size), images, step sizes."""
    real = _real(fx)
    d = _distiller(unroll=int(fx[f"{tag}_lrs0"].size), batch_real=len(real.train), iterations=2, **kw)
    syn = d.init_synset(real, ipc=ipc)
    d.setup(real, syn)
    _set_network(d, fx)
    with torch.no_grad():
        syn.x.copy_(_to_library_images(fx[f"{tag}_data0"], ipc))
    _set_step_sizes(d, fx[f"{tag}_lrs0"])
    out = {k: [] for k in ("loss", "grad_data", "grad_raw", "grad_lr", "data", "lr_after")}
    for _ in range(2):
        raw = _lr_param(d).detach().clone().requires_grad_(True)
        dlr_draw = torch.autograd.grad(_to_step_sizes(d, raw).sum(), raw)[0]  # d lr / d raw
        out["loss"].append(d.step(real, syn)["loss"])
        out["grad_data"].append(syn.x.grad.detach().clone())
        g = _lr_param(d).grad.detach().clone()
        out["grad_raw"].append(g)
        out["grad_lr"].append(g / dlr_draw)
        out["data"].append(syn.x.detach().clone())
        out["lr_after"].append(_to_step_sizes(d, _lr_param(d).detach()).clone())
    return d, out


def _compare(fx, tag, ipc, out) -> list[str]:
    bad = []

    def check(name, got, want, rtol=RTOL, atol=ATOL):
        got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
        if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
            err = (got - want).abs().max().item() if got.shape == want.shape else "shape"
            scale = want.abs().max().item()
            bad.append(f"{name}: max |diff| {err} (reference max |value| {scale:.3g})")

    for i in range(2):
        check(f"outer step {i + 1}: real-data loss", out["loss"][i], fx[f"{tag}_loss"][i])
        check(f"outer step {i + 1}: dL/d images", out["grad_data"][i],
              _to_library_images(fx[f"{tag}_grad_data"][i], ipc),
              atol=1e-6 * np.abs(fx[f"{tag}_grad_data"][i]).max())
        check(f"outer step {i + 1}: dL/d step sizes", out["grad_lr"][i], fx[f"{tag}_grad_lr"][i])
        check(f"outer step {i + 1}: dL/d raw step-size parameters", out["grad_raw"][i],
              fx[f"{tag}_grad_raw"][i])
        # Adam divides by |g| + 1e-8: where a pixel's gradient is near 1e-8 the float32
        # cross-entropy's rounding moves its update by up to ~1e-4; elsewhere it must agree tightly
        want = _to_library_images(fx[f"{tag}_data"][i], ipc)
        big = torch.stack([_to_library_images(fx[f"{tag}_grad_data"][j], ipc).abs() > 1e-6
                           for j in range(i + 1)]).all(0)
        check(f"outer step {i + 1}: images after the Adam step", out["data"][i][big], want[big],
              atol=1e-7)
        check(f"outer step {i + 1}: images after the Adam step (all pixels)", out["data"][i], want,
              atol=1e-4)
        check(f"outer step {i + 1}: step sizes after the Adam step", out["lr_after"][i],
              fx[f"{tag}_lr_after"][i], rtol=1e-7)
    return bad


# -- the test --------------------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("case", ["single", "groups", "init", "defaults"])
def test_parity_dd(case, lib):
    fx = np.load(FIXTURE)
    if case == "single":
        # distill_steps=1: the library's "every step on the whole summary" is the same function
        d, out = _run(fx, "single", ipc=1)
        bad = _compare(fx, "single", 1, out)
    elif case == "groups":
        # the reference's layout: inner step t on image group t mod distill_steps (1 image/class)
        d, out = _run(fx, "groups", ipc=2, images_per_step=1)
        bad = _compare(fx, "groups", 2, out)
    elif case == "init":
        real = _real(fx)
        stds, kurt, bias = [], [], 0.0
        for seed in range(20):
            d = _distiller(seed=seed, batch_real=len(real.train))
            syn = d.init_synset(real, ipc=1)
            d.setup(real, syn)
            ws = [m.weight.detach() for m in d.fixed_.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            stds.append([float(w.std()) for w in ws])
            kurt.append([float(((w - w.mean()) ** 4).mean() / w.var(unbiased=False) ** 2) for w in ws])
            bias = max([bias] + [float(m.bias.detach().abs().max()) for m in d.fixed_.modules()
                                 if isinstance(m, (nn.Conv2d, nn.Linear))])
        stds, kurt = np.mean(stds, 0), np.mean(kurt, 0)
        bad = []
        for name, s, k, s_ref, k_ref in zip(fx["init_layers"], stds, kurt, fx["init_weight_std"],
                                            fx["init_weight_kurtosis"]):
            if abs(s / s_ref - 1) > 0.05:  # 20 draws: sampling error < 2 % for every layer
                bad.append(f"{name}: weight std {s:.4g} vs the reference's {s_ref:.4g}")
            if abs(k - k_ref) > 0.3:  # normal: 3, uniform: 1.8
                bad.append(f"{name}: weight kurtosis {k:.3g} vs the reference's {k_ref:.3g}")
        if bias > float(fx["init_bias_absmax"]):
            bad.append(f"biases: max |b| {bias:.3g}; the reference initialises biases to 0")
    else:  # defaults
        d = create_distiller("dd")
        ref = dict(fx["ref_defaults"].tolist())
        bad = []
        # the reference's --epochs 400 are passes over the real data at batch 1024:
        # 400 x ceil(60000 / 1024) = 23600 outer steps on a 60k-image training set
        n = 60000
        steps = (d.epochs * math.ceil(n / d.batch_real) if hasattr(d, "epochs") else d.iterations)
        if steps != int(ref["outer_steps_mnist"]):
            bad.append(f"outer steps on a 60k training set: {steps} vs {ref['outer_steps_mnist']}")
        for name, got, want in [("lr_data", d.lr_data, float(ref["lr"])),
                                ("inner_lr", d.inner_lr, float(ref["distill_lr"])),
                                ("batch_real", d.batch_real, int(ref["batch_size"])),
                                ("inner_momentum", d.inner_momentum, 0.0),
                                ("images_per_step", getattr(d, "images_per_step", None),
                                 int(ref["distilled_images_per_class_per_step"]))]:
            if got != want:
                bad.append(f"{name}: {got} vs the reference's {want}")
        # unroll: distill_steps x distill_epochs = 10 x 3 at the published 10 images per class
        unroll = d.unroll if d.unroll is not None else 10 * getattr(d, "distill_epochs", 0)
        if unroll != int(ref["distill_steps"]) * int(ref["distill_epochs"]):
            bad.append(f"inner steps at ipc 10: {unroll} vs the reference's "
                       f"{int(ref['distill_steps']) * int(ref['distill_epochs'])}")
        # outer-lr schedule: StepLR x decay_factor every decay_epochs epochs (59 batches each)
        per_epoch = math.ceil(n / int(ref["batch_size"]))
        want = (int(ref["decay_epochs"]) * per_epoch, float(ref["decay_factor"]))
        got = _outer_lr_schedule(d)
        if got != want:
            bad.append(f"outer-lr decay (every outer steps, factor): {got} vs the reference's {want}"
                       f" (lr by epoch: {sorted({float(v) for v in fx['ref_outer_lr_by_epoch'].round(8)}, reverse=True)})")
    assert not bad, f"DD deviates from ssnl/dataset-distillation ({case}):\n  " + "\n  ".join(bad)
