"""Parity of IT-GAN's latent optimization with the authors' code.

``tests/fixtures/parity/itgan.npz`` was computed by the authors' released training script
(``ITGAN_main_CIFAR10.py``, ``match_mode feat``) on a tiny fixed case, in float64: 3 classes,
3x8x8 images, 4 latents per class (dim 6) in two mini-batches of 2, a fixed small generator in
place of BigGAN, fixed "GAN inversion" latents, fixed ConvNet-16-3 (instance norm) weights per
(iteration, class), DSA off, ratio_div 0.3, Adam lr 0.05, two iterations (12 optimizer steps).
Provenance and patches: ``itgan.md`` beside the fixture.

The library runs the same case through ``ITGAN.step``: its ``ITGANSet`` holds the same generator
weights and latents (in the reference's per-class order), the anchors are the images the latents
belong to, and each per-class "fresh network" is the reference's. Compared: every optimizer
step's gradient w.r.t. the class's latents and the latents after the step, and each iteration's
mean loss terms.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.distillers import itgan as itgan_mod
from datadistill.models import create_model
from datadistill.runtime import RunOptions
from datadistill.synsets import SYNSETS

pytestmark = pytest.mark.parity

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "itgan.npz"
RUN = RunOptions(device="cpu", fused=False, compile=False)
LOSS_RTOL = 1e-9   # per-iteration mean loss terms, relative (float64 throughout)
GRAD_RTOL = 1e-9   # ||g_lib - g_ref|| / ||g_ref|| per optimizer step
Z_ATOL = 1e-10     # latents after every step (Adam lr 0.05)

#: the fixture's generator tensors -> the library generator's state-dict names
G_NAMES = {"fc_w": "fc.weight", "fc_b": "fc.bias", "bn0_w": "bn0.weight", "bn0_b": "bn0.bias",
           "bn0_rm": "bn0.running_mean", "bn0_rv": "bn0.running_var",
           "c1_w": "blocks.1.weight", "c1_b": "blocks.1.bias", "bn1_w": "blocks.2.weight",
           "bn1_b": "blocks.2.bias", "bn1_rm": "blocks.2.running_mean",
           "bn1_rv": "blocks.2.running_var", "out_w": "out.weight", "out_b": "out.bias"}


def t(d, k) -> torch.Tensor:
    return torch.from_numpy(np.asarray(d[k]))


def run_library(monkeypatch, d):
    k, per = int(d["K"]), int(d["per"])
    info = DataInfo(name="parity", modality="image", num_classes=k, shape=(3, 8, 8),
                    mean=tuple(map(float, d["mean"])), std=tuple(map(float, d["std"])))
    x, y = t(d, "real_x"), t(d, "real_y")
    real = RealData(info, Split(x, y), Split(x[:0], y[:0]), Split(x, y))
    syn = SYNSETS.get("itgan")(info, ipc=per, dim_z=int(d["dim_z"]), gan_width=int(d["gan_width"]),
                              invert_steps=0).double()
    gsd = syn.generator.state_dict()
    gsd.update({G_NAMES[n]: t(d, f"g.{n}") for n in G_NAMES})
    syn.generator.load_state_dict(gsd)
    idx = [t(d, f"idx_c{c}") for c in range(k)]
    with torch.no_grad():
        syn.codes.copy_(torch.cat([t(d, f"z_init_c{c}") for c in range(k)]))
    syn.anchors = torch.cat([x[i] for i in idx])
    dist = create_distiller("itgan", iterations=int(d["iters"]), lr_data=float(d["lr_z"]),
                            ratio_div=float(d["ratio_div"]), batch_z=int(d["batch_z"]),
                            batch_real=per, dsa=False)
    dist.use_run(RUN)

    def build(*a, **kw):
        return create_model("convnet", info, width=int(d["net_width"]), depth=int(d["net_depth"]),
                            norm="instance").double()

    monkeypatch.setattr(dist, "make_model", build, raising=False)
    states = iter([{n[len(f"net{i}."):]: t(d, n) for n in d if n.startswith(f"net{i}.")}
                   for i in range(int(d["iters"]) * k)])
    monkeypatch.setattr(itgan_mod, "init_parameters",
                        lambda net, gen: net.load_state_dict(next(states), strict=False))
    dist.setup(real, syn)
    steps = []
    opt_step = dist.optimizer_.step

    def recording_step(*a, rows, cls, **kw):
        g = syn.codes.grad[rows].detach().clone()
        out = opt_step(*a, rows=rows, cls=cls, **kw)
        steps.append({"c": cls, "grad": g, "z_after": syn.codes[rows].detach().clone()})
        return out

    dist.optimizer_.step = recording_step
    metrics = [dist.step(real, syn) for _ in range(int(d["iters"]))]
    return metrics, steps


def test_itgan_latent_optimization_matches_reference(monkeypatch):
    d = dict(np.load(FIXTURE))
    metrics, steps = run_library(monkeypatch, d)
    n = int(d["num_steps"])
    assert len(steps) == n
    for s in range(n):
        assert steps[s]["c"] == int(d[f"step{s}_c"])
        ref_g = t(d, f"step{s}_grad")
        err = float((steps[s]["grad"] - ref_g).norm() / ref_g.norm())
        assert err < GRAD_RTOL, f"step {s}: gradient w.r.t. the latents, relative error {err:.3g}"
        dz = float((steps[s]["z_after"] - t(d, f"step{s}_z_after")).abs().max())
        assert dz < Z_ATOL, f"step {s}: latents after the step differ by {dz:.3g}"
    per_iter = n // int(d["iters"])
    for i, m in enumerate(metrics):
        sl = range(i * per_iter, (i + 1) * per_iter)
        for lib, ref in (("loss", "loss"), ("loss_cond", "loss_cond"), ("loss_div", "loss_divs")):
            want = float(np.mean([float(d[f"step{s}_{ref}"]) for s in sl]))
            assert math.isclose(m[lib], want, rel_tol=LOSS_RTOL), \
                f"iteration {i}: {lib} {m[lib]!r} vs the reference's {want!r}"


def test_parity_case_moves_the_latents():
    """The fixture is not degenerate: both terms are non-zero and the latents move."""
    d = dict(np.load(FIXTURE))
    assert all(float(d[f"step{s}_loss_divs"]) > 0 and float(d[f"step{s}_loss_cond"]) > 0
               for s in range(int(d["num_steps"])))
    last = int(d["num_steps"]) - 1
    c = int(d[f"step{last}_c"])
    assert float((t(d, f"step{last}_z_after") - t(d, f"z_init_c{c}")).abs().max()) > 0.05
