"""Parity of DC, DSA, DM and the evaluation protocol with the authors' code.

The numbers in ``tests/fixtures/parity/{dc,dsa,dm,evaluate}.npz`` were computed by
VICO-UoE/DatasetCondensation (``main.py``, ``main_DM.py``, ``utils.evaluate_synset``) on tiny fixed
cases: 3 classes, 28x28x1, 8 real images per class, 2 synthetic images per class, ConvNet of width
16 and depth 3 (instance norm or batch norm, average pooling), all in float64. Provenance: the
``.md`` file beside each fixture. Every test below builds the same case in the library (same
initial summary, same network weights, same real batch, same augmentation draws) and compares
what it computes. The library computes its cross-entropy, gradient distance and DM embeddings in
float32 even for float64 networks, which bounds the agreement at ~1e-7 relative; the tolerances
are ~10-100x that, far below any behavioural difference (those show up at 1e-3..1).

All glue to the library lives in the helpers at the top, so imports can be fixed in one place.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.augment import DSA, AugParams
from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.models import create_model
from datadistill.runtime import RunOptions
from datadistill.synsets import SYNSETS

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
K, IPC, WIDTH, DEPTH = 3, 2, 16, 3

pytestmark = pytest.mark.parity

# tolerances (see the module docstring)
LOSS_RTOL = 1e-5        # matching loss, relative
GRAD_RTOL = 1e-5        # ||g_lib - g_ref|| / ||g_ref|| of the gradient w.r.t. the summary
X_ATOL = 1e-6           # updated summary pixels (DC lr 0.1, DM lr 1)
NET_ATOL = 1e-7         # network weights after the inner-loop update
EVAL_ATOL = 1e-6        # evaluation network weights after training


# -- glue to the library ------------------------------------------------------------------------
#: how the library runs here: CPU, the reference path (no fused kernels, nothing compiled)
RUN = RunOptions(device="cpu", fused=False, compile=False)


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as f:
        return dict(f)


def tensor(d, key) -> torch.Tensor:
    return torch.from_numpy(np.asarray(d[key]))


def info() -> DataInfo:
    return DataInfo(name="parity", modality="image", num_classes=K, shape=(1, 28, 28),
                    mean=(0.0,), std=(1.0,), flip=True)


def real_data(x: torch.Tensor, y: torch.Tensor, test: tuple | None = None) -> RealData:
    """RealData whose classes hold exactly the fixed real batch (so every per-class draw of
    ``batch_real`` images is that whole batch, in some order)."""
    tx, ty = test if test is not None else (x, y)
    return RealData(info(), Split(x, y), Split(x[:0], y[:0]), Split(tx, ty))


def state_dict(d, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: tensor(d, k) for k in d if k.startswith(prefix)}


def convnet(norm: str, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The reference's ConvNet (width 16, depth 3, ReLU, avg pooling) in float64, with the fixture
    weights (the parameter names and shapes are the reference's)."""
    net = create_model("convnet", info(), width=WIDTH, depth=DEPTH,
                       norm={"instancenorm": "instance", "batchnorm": "batch"}[norm]).double()
    if state is not None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return net


def pixel_summary(x: torch.Tensor):
    syn = SYNSETS.get("pixels")(info(), ipc=IPC).double()
    with torch.no_grad():
        syn.x.copy_(x)
    return syn


def aug_params(d, i: int, prefix: str = "") -> AugParams:
    """The reference's recorded draw ``i`` (its parameters in the reference's own semantics: shift,
    factor, offset, flip, sx/sy, rotation angle) as the library's ``AugParams``. Siamese draws
    have one row shared by the batch (``n=None``); per-example draws one row per example.

    The reference rotates with [[cos t, -sin t], [sin t, cos t]], the library with
    [[cos a, sin a], [-sin a, cos a]]: ``a = -t``. The angle's distribution is symmetric, so this
    is a parametrization convention, not a behavioural difference."""
    p = f"{prefix}aug{i}_"
    op = str(d[p + "op"])
    g = lambda k: tensor(d, p + k)  # noqa: E731
    values = {
        "color": lambda: {"brightness": g("brightness"), "saturation": g("saturation"),
                          "contrast": g("contrast")},
        "crop": lambda: {"crop_x": g("shift_x"), "crop_y": g("shift_y")},
        "cutout": lambda: {"cut_x": g("offset_x"), "cut_y": g("offset_y")},
        "flip": lambda: {"flip": g("flip")},
        "scale": lambda: {"scale": torch.stack([g("sx"), g("sy")], 1)},
        "rotate": lambda: {"angle": -g("theta")},
    }[op]()
    return AugParams((op,), values, None if bool(d[p + "siamese"]) else int(d[p + "n"]))


class FixedDraws:
    """Stands in for the per-example DSA of the inner loop: applies the reference's recorded
    per-example draws, pairing each row of the batch with the reference's row of the same image
    (the two shuffles differ)."""

    def __init__(self, dsa: DSA, calls):
        self.dsa, self.calls = dsa, list(calls)

    def __call__(self, x, generator=None, shared=False):
        params, x_ref = self.calls.pop(0)
        order = torch.cdist(x.detach().flatten(1), x_ref.flatten(1)).argmin(1)
        v = {k: t[order] for k, t in params.values.items()}
        return self.dsa.apply(x, AugParams(params.ops, v, x.shape[0]))


def record_steps(distiller, syn, net_holder=None):
    """Wrap the summary optimizer: per outer step, the gradient w.r.t. the pixels, the summary
    after the step and (if given) the network's weights at that step."""
    steps = []
    opt = distiller.optimizer_
    step = opt.step

    def wrapped(*a, **k):
        rec = {"grad": syn.x.grad.detach().clone()}
        if net_holder is not None:
            rec["net"] = {n: v.detach().clone() for n, v in net_holder().state_dict().items()}
        out = step(*a, **k)
        rec["x"] = syn.x.detach().clone()
        steps.append(rec)
        return out

    opt.step = wrapped
    return steps


def record_matching_losses(distiller):
    losses = []
    ml = distiller.matching_loss

    def wrapped(*a, **k):
        loss = ml(*a, **k)
        losses.append(float(loss.detach()))
        return loss

    distiller.matching_loss = wrapped
    return losses


def patch_model_factory(monkeypatch, module, build, distiller=None):
    """Make ``module``'s ``create_model`` build ``build()`` (the module of a class or function,
    wherever the refactor puts it) and, given a distiller, its ``make_model`` too (methods build
    their networks through ``Distiller.make_model``)."""
    if hasattr(module, "create_model"):
        monkeypatch.setattr(module, "create_model", lambda *a, **k: build())
    if distiller is not None:
        monkeypatch.setattr(distiller, "make_model", lambda *a, **k: build(), raising=False)


def module_of(obj):
    return sys.modules[inspect.getmodule(obj).__name__]


# -- assertions -----------------------------------------------------------------------------------
def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rtol: float, what: str):
    err = float((a - b).norm() / b.norm())
    assert err < rtol, f"{what}: relative error {err:.3g} (tolerance {rtol:g})"


def assert_step(d, prefix: str, i: int, loss: float, rec: dict, net_prefix: str | None = None):
    ref_loss = float(d[f"{prefix}step{i}_loss"])
    assert math.isclose(loss, ref_loss, rel_tol=LOSS_RTOL), \
        f"step {i}: loss {loss!r} vs the reference's {ref_loss!r}"
    assert_close_rel(rec["grad"], tensor(d, f"{prefix}step{i}_grad"), GRAD_RTOL,
                     f"step {i}: gradient w.r.t. the summary")
    err = float((rec["x"] - tensor(d, f"{prefix}step{i}_x_after")).abs().max())
    assert err < X_ATOL, f"step {i}: summary after the SGD step differs by {err:.3g}"
    if net_prefix is not None:
        ref = state_dict(d, f"{prefix}step{i}_net.")
        assert ref, "fixture has no network snapshot"
        for name, v in ref.items():
            e = float((rec["net"][name] - v).abs().max())
            assert e < NET_ATOL, f"step {i}: network {name} differs by {e:.3g}"


# -- DC -------------------------------------------------------------------------------------------
def run_gradient_matching(d, prefix: str, method: str, norm: str, dsa_draws: bool):
    x, y = tensor(d, "real_x"), tensor(d, "real_y")
    real = real_data(x, y)
    syn = pixel_summary(tensor(d, f"{prefix}x_init"))
    net = convnet(norm, state_dict(d, f"{prefix}net0."))
    # the reference's settings for this case: lr_img 0.1 (momentum 0.5), lr_net 0.01, metric
    # 'ours', batch_real = the class size, outer_loop 2 / inner_loop 1
    dist = create_distiller(method, batch_real=8, outer_loop=2, inner_loop=1, lr_data=0.1,
                            lr_net=0.01, metric="ours")
    dist.use_run(RUN)
    dist.setup(real, syn)
    dist.fresh_network = lambda real: net.train()
    if dsa_draws:
        n = int(d[f"{prefix}num_aug"])
        augs = [aug_params(d, i, prefix) for i in range(n)]
        siamese = iter([a for a in augs if a.n is None])
        dist.sample_augment = lambda real: next(siamese)
        per_example = [(a, tensor(d, f"{prefix}aug{i}_x_in")) for i, a in enumerate(augs)
                       if a.n is not None]
        dist.train_dsa_ = FixedDraws(dist.dsa_, per_example)
    losses = record_matching_losses(dist)
    steps = record_steps(dist, syn, lambda: net)
    metrics = dist.step(real, syn)
    assert len(steps) == int(d[f"{prefix}num_steps"]) == 2
    return losses, steps, metrics


def test_dc_matches_reference():
    """DC (ConvNet, instance norm, noise init): loss and gradient of two outer steps, the summary
    after each SGD step and the network after the inner-loop update between them."""
    d = load("dc")
    losses, steps, metrics = run_gradient_matching(d, "in_", "dc", "instancenorm", False)
    for i in range(2):
        assert_step(d, "in_", i, losses[i], steps[i], net_prefix="in_" if i else None)
    ref_avg = (float(d["in_step0_loss"]) + float(d["in_step1_loss"])) / (2 * K)
    assert math.isclose(metrics["loss"], ref_avg, rel_tol=LOSS_RTOL)


def test_dc_batchnorm_matches_reference():
    """DC with a batch-norm ConvNet. The reference freezes BN by one train-mode forward of 16 real
    images per class, i.e. one running-average update (momentum 0.1) of the statistics the
    network already has (0/1 when fresh, then whatever the inner loop left), and then puts the
    BN layers in eval mode."""
    d = load("dc")
    losses, steps, _ = run_gradient_matching(d, "bn_", "dc", "batchnorm", False)
    for i in range(2):
        assert_step(d, "bn_", i, losses[i], steps[i], net_prefix="bn_" if i else None)


# -- DSA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_transform_matches_reference(op):
    """Each differentiable siamese transform with the reference's draw gives the reference's
    output (``utils.DiffAugment`` in single mode, seeded)."""
    d = load("dsa")
    ops = [str(d[f"op_aug{i}_op"]) for i in range(int(d["op_num_aug"]))]
    i = ops.index(op)
    x = tensor(d, "op_x")
    out = DSA().apply(x, aug_params(d, i, "op_"))
    err = float((out - tensor(d, f"op_{op}_out")).abs().max())
    assert err < 1e-10, f"{op}: differs from the reference by {err:.3g}"


def test_dsa_matches_reference():
    """DSA (real init): two outer steps whose six siamese draws are the six transforms (color,
    crop, cutout for the first step; flip, scale, rotate for the second) and a per-example DSA
    draw in the inner loop."""
    d = load("dsa")
    ops = [str(d[f"aug{i}_op"]) for i in range(int(d["num_aug"]))]
    assert ops[:6] == ["color", "crop", "cutout", "flip", "scale", "rotate"]
    losses, steps, _ = run_gradient_matching(d, "", "dsa", "instancenorm", True)
    for i in range(2):
        assert_step(d, "", i, losses[i], steps[i], net_prefix="" if i else None)


# -- DM -------------------------------------------------------------------------------------------
def run_dm(monkeypatch, d, prefix: str, norm: str):
    x, y = tensor(d, "real_x"), tensor(d, "real_y")
    real = real_data(x, y)
    syn = pixel_summary(tensor(d, f"{prefix}x_init"))
    dm = create_distiller("dm", batch_real=8, lr_data=1.0)
    dm.use_run(RUN)
    mod = module_of(type(dm))
    states = iter([state_dict(d, f"{prefix}net{i}.") for i in range(2)])
    patch_model_factory(monkeypatch, mod, lambda: convnet(norm), distiller=dm)
    # each iteration's "fresh random network" is the reference's network of that iteration
    monkeypatch.setattr(mod, "init_parameters",
                        lambda net, gen: net.load_state_dict(next(states), strict=False))
    dm.setup(real, syn)
    augs = iter([aug_params(d, i, prefix) for i in range(int(d[f"{prefix}num_aug"]))])
    dm.sample_augment = lambda real: next(augs)
    steps = record_steps(dm, syn)
    losses = [dm.step(real, syn)["loss"] for _ in range(2)]
    return losses, steps


def test_dm_matches_reference(monkeypatch):
    """DM (ConvNet, instance norm, real init, lr 1): two iterations, each with its own random
    network and one siamese DSA draw per class."""
    d = load("dm")
    losses, steps = run_dm(monkeypatch, d, "in_", "instancenorm")
    for i in range(2):
        assert_step(d, "in_", i, losses[i], steps[i])


def test_dm_batchnorm_matches_reference(monkeypatch):
    """DM with a batch-norm ConvNet (the reference's ``ConvNetBN`` branch): the reference embeds
    all classes' real images in one forward and all synthetic images in another, so the BN batch
    statistics span the classes (issue 16, lead 6)."""
    d = load("dm")
    losses, steps = run_dm(monkeypatch, d, "bn_", "batchnorm")
    for i in range(2):
        assert_step(d, "bn_", i, losses[i], steps[i])


# -- evaluation -----------------------------------------------------------------------------------
def test_evaluation_matches_reference(monkeypatch):
    """The ``paper`` protocol's training (DSA off, ``epoch_eval_train`` epochs) from the same
    initial weights on the same summary gives evaluate_synset's final weights and test accuracy."""
    import datadistill.evaluation as ev_mod

    d = load("evaluate")
    xs, ys = tensor(d, "syn_x"), tensor(d, "syn_y")
    real = real_data(xs, ys, test=(tensor(d, "test_x"), tensor(d, "test_y")))
    syn = pixel_summary(xs)
    held = {}

    def build():
        held["net"] = convnet("instancenorm", state_dict(d, "net0."))
        return held["net"]

    # the image evaluator's module (``evaluate`` dispatches by modality)
    patch_model_factory(monkeypatch, module_of(ev_mod.evaluator("image")), build)
    proto = dataclasses.replace(ev_mod.get_protocol("paper"), epochs=int(d["epoch_eval_train"]),
                                num_models=1, dsa=False)
    rep = ev_mod.evaluate(syn, real, models=("convnet",), protocol=proto, run=RUN)
    for name, v in state_dict(d, "final.").items():
        e = float((held["net"].state_dict()[name] - v).abs().max())
        assert e < EVAL_ATOL, f"trained weight {name} differs from evaluate_synset's by {e:.3g}"
    acc = rep.results["convnet"]["accs"][0]
    assert math.isclose(acc, 100 * float(d["acc_test"]), abs_tol=1e-9)
