"""Parity of the KRR meta-model methods (KIP, RFAD, FRePO) with their authors' code.

The numbers in ``tests/fixtures/parity/{kip,rfad,frepo}.npz`` were computed by the authors' code
(KIP: the KIP notebook's cells + neural-tangents; RFAD: yolky/RFAD ``distill_dataset``; FRePO:
yongchaoz/FRePO's ``proto_train_step`` / ``train_step``) on tiny fixed cases; the ``.md`` files
beside them say how. Each test builds the same case in the library (same inputs, the same
network weights injected, the same summary) and asserts the same values.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.kernels import make_kernel
from datadistill.models import create_model

pytestmark = pytest.mark.parity
FIXTURES = Path(__file__).parent / "fixtures" / "parity"


# ---------------------------------------------------------------- glue to the library (one place)
def fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def info_for(shape, num_classes: int) -> DataInfo:
    c = int(shape[0])
    return DataInfo(name="parity", modality="image", num_classes=num_classes, shape=tuple(int(s) for s in shape),
                    mean=(0.0,) * c, std=(1.0,) * c, flip=False)


def real_data(x: np.ndarray, labels: np.ndarray, num_classes: int) -> RealData:
    """A RealData whose train split is exactly the fixed target batch (``batch_real`` = its size
    then draws all of it, in some order: the losses are means, so the order does not matter)."""
    split = Split(torch.tensor(x, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))
    return RealData(info_for(x.shape[1:], num_classes), split, split, split)


def distiller_with_summary(method: str, real: RealData, x_s: np.ndarray, y_s: np.ndarray, **params):
    """The distiller, set up, on a summary holding exactly (x_s, y_s)."""
    d = create_distiller(method, init="real", dsa=False, batch_real=len(real.train), **params)
    syn = d.init_synset(real, ipc=x_s.shape[0] // real.info.num_classes)
    with torch.no_grad():
        syn.x.copy_(torch.tensor(x_s))
        syn.y.copy_(torch.tensor(y_s))
    d.setup(real, syn)
    return d, syn


def load_convs(net: torch.nn.Module, weights: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Copy (weight [O, I, 3, 3], bias [O]) pairs into the model's convolutions, in order."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(weights), (len(convs), len(weights))
    with torch.no_grad():
        for conv, (w, b) in zip(convs, weights):
            conv.weight.copy_(torch.tensor(w))
            conv.bias.copy_(torch.tensor(b))


def close(actual, expected, rtol, atol=0.0, what=""):
    actual = np.asarray(actual.detach().double() if isinstance(actual, torch.Tensor) else actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                               err_msg=f"{what}: max relative deviation {err:.3g}")


# ------------------------------------------------------------------------------------------ KIP
@pytest.mark.parametrize("depth", [1, 3])
def test_kip_fc_kernels_match_neural_tangents(depth):
    """FC NNGP/NTK with the KIP notebook's architecture defaults (W_std sqrt 2, b_std 0.1)."""
    r = fixture("kip")
    info = info_for(r["x_s"].shape[1:], 3)
    xt, xs = torch.tensor(r["x_t"][:5]), torch.tensor(r["x_s"])
    for kind in ("nngp", "ntk"):
        k = make_kernel(f"fc_{kind}", info, depth=depth)(xt, xs)
        close(k, r[f"fc{depth}_{kind}_ts"], rtol=1e-9, what=f"fc depth {depth} {kind}")


@pytest.mark.parametrize("kernel,images", [("conv", "rgb"), ("conv", "gray"),
                                           ("conv_pool", "rgb"), ("conv_pool", "gray")])
def test_kip_conv_kernels_match_neural_tangents(kernel, images):
    """3-layer ConvNet kernels: unpooled (the notebook's 'Conv', SAME padding, flatten readout) and
    pooled (RFAD's DCConvNetKernel, KIP's ConvNet), W_std sqrt 2, b_std 0.1; 3x8x8 and 1x16x16."""
    r = fixture("kip")
    a, b = ("conv_xa", "conv_xb") if images == "rgb" else ("gray_xa", "gray_xb")
    info = info_for(r[a].shape[1:], 3)
    ref = "conv3" if kernel == "conv" else "pool3"
    for kind in ("nngp", "ntk"):
        k = make_kernel(f"{kernel}_{kind}", info, depth=3)(torch.tensor(r[a]), torch.tensor(r[b]))
        close(k, r[f"{ref}_{images}_{kind}"], rtol=1e-6, what=f"{kernel} {images} {kind}")


def test_kip_default_labels_are_centred():
    """KIP regresses on one-hot - 1/K (the notebook's ``one_hot(..., center=True)``)."""
    r = fixture("kip")
    real = real_data(r["x_t"], r["labels_t"], 3)
    d = create_distiller("kip")
    _, y = d.init_synset(real, ipc=1).materialize()
    close(y, np.eye(3)[np.arange(3)] - 1 / 3, rtol=1e-6, what="initial support labels")


def test_kip_loss_gradient_and_two_adam_steps():
    """FC1 NTK (the notebook's default kernel), learned labels, lr 0.04, reg 1e-6: loss and
    gradients w.r.t. support images and labels at the start, and the summary after two steps."""
    r = fixture("kip")
    real = real_data(r["x_t"], r["labels_t"], 3)
    d, syn = distiller_with_summary("kip", real, r["x_s"], r["y_s_init"], kernel="fc_ntk", kernel_depth=1,
                                    lr_data=0.04, learn_labels=True, center_labels=True, reg=1e-6)
    m = d.step(real, syn)
    close(m["loss"], r["loss_learn"], rtol=1e-4, what="KIP loss")
    close(syn.x.grad, r["grad_x_learn"], rtol=1e-3, atol=1e-3 * np.abs(r["grad_x_learn"]).max(), what="dL/dX_s")
    close(syn.y.grad, r["grad_y_learn"], rtol=1e-3, atol=1e-3 * np.abs(r["grad_y_learn"]).max(), what="dL/dY_s")
    d.step(real, syn)
    # optimizers.adam with its step counter from 0 (the notebook's train() counts from 1, i.e.
    # bias-corrects its first update as a second one: ``x_after2_learn``, see kip.md)
    close(syn.x, r["x_after2_step0_learn"], rtol=0, atol=2e-4, what="X_s after two Adam steps")
    close(syn.y, r["y_after2_step0_learn"], rtol=0, atol=2e-4, what="Y_s after two Adam steps")


# ----------------------------------------------------------------------------------------- RFAD
def rfad_weights(r, case: str, it: int, n_models: int = 2):
    p = f"{case}_it{it}_m"
    return [[(r[f"{p}{m}_features.{i}.weight"], r[f"{p}{m}_features.{i}.bias"]) for i in (0, 3, 6)]
            for m in range(n_models)]


def injected_rf(weights_per_call):
    """A RandomFeatureNNGP factory that, call after call, loads the fixture's network weights."""
    from datadistill.kernels.conv import RandomFeatureNNGP

    calls = iter(weights_per_call)

    def factory(*args, **kw):
        rf = RandomFeatureNNGP(*args, **kw)
        for net, ws in zip(rf.nets, next(calls), strict=True):
            load_convs(net, ws)
        return rf
    return factory


def test_rfad_random_networks_are_initialised_as_the_reference():
    """RFAD's ConvNet_wide (k=2 x 128 = 256 channels, 'same' padding 1 also on 28x28x1, weights
    N(0, 2/fan_in), biases N(0, 0.1^2)) at the default RFAD settings, 28x28x1."""
    from datadistill.distillers.rfad import RFAD
    from datadistill.kernels.conv import RandomFeatureNNGP

    r = fixture("rfad")
    rf = RandomFeatureNNGP(info_for((1, 28, 28), 10), n_models=1, model=RFAD.rf_model, width=RFAD.rf_width,
                           generator=torch.Generator().manual_seed(0))
    convs = [m for m in rf.nets[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == r["init_channels"].tolist(), "channels per layer"
    assert [c.padding[0] for c in convs] == r["init_padding"].tolist(), "padding per layer"
    w_scale = [float(c.weight.std() * c.weight[0].numel() ** 0.5) for c in convs]
    np.testing.assert_allclose(w_scale, 2 ** 0.5, rtol=0.05, err_msg="weight std * sqrt(fan_in)")
    np.testing.assert_allclose([float(c.bias.std()) for c in convs], 0.1, rtol=0.2, err_msg="bias std")
    assert rf.features(torch.zeros(1, 1, 28, 28)).shape[1] == int(r["feature_dim_28x28"]), "feature dim"


@pytest.mark.parametrize("case", ["rgb_platt", "gray_platt"])
def test_rfad_kernel_matches_reference(case):
    """K(X_t, X_s) of RFAD for fixed random networks (2 models, 8 channels): 2 Phi Phi^T + 0.01."""
    r = fixture("rfad")
    x_s, x_t = r[f"{case}_x_init"], r[f"{case}_x_t"]
    rf = injected_rf([rfad_weights(r, case, 0)])(info_for(x_s.shape[1:], 3), n_models=2, model="convnet_nn",
                                                  width=8, generator=torch.Generator().manual_seed(0))
    rf.nets = [n.double() for n in rf.nets]
    k = rf(torch.tensor(x_t), torch.tensor(x_s))
    close(k, r[f"{case}_it0_K_zx"], rtol=1e-6, what="K_ts")  # weights pass through fp32 parameters


@pytest.mark.parametrize("case", ["rgb_platt", "gray_platt"])
def test_rfad_platt_loss_gradient_and_steps(case, monkeypatch):
    """Platt-scaled loss, learned labels, jit 5e-3, temperature exp(k) with k = 0: loss and
    gradients at the start, the summary and temperature after one step, the loss of step two."""
    import datadistill.distillers.rfad as rfad_mod

    r = fixture("rfad")
    p = f"{case}_it"
    monkeypatch.setattr(rfad_mod, "RandomFeatureNNGP", injected_rf([rfad_weights(r, case, 0), rfad_weights(r, case, 1)]))
    real = real_data(r[f"{case}_x_t"], r[f"{case}_labels_t"], 3)
    d, syn = distiller_with_summary("rfad", real, r[f"{case}_x_init"], r[f"{case}_y_init"], n_models=2, rf_width=8,
                                    reg=5e-3, platt_init=1.0, center_labels=True, lr_data=1e-3)
    m = d.step(real, syn)
    # glue: the raw support images X_s (what the optimizer steps) are RFAD's state; the
    # summary ``syn.x`` holds X_s T, what the next iteration sees (and the reference saves)
    x_raw = d.image_parameter(syn)
    close(m["loss"], r[f"{p}0_loss"], rtol=1e-4, what="Platt loss, step 1")
    gx, gy = r[f"{p}0_grad_x"], r[f"{p}0_grad_y"]
    close(x_raw.grad, gx, rtol=1e-3, atol=1e-3 * np.abs(gx).max(), what="dL/dX_s")
    close(syn.y.grad, gy, rtol=1e-3, atol=1e-3 * np.abs(gy).max(), what="dL/dY_s")
    close(d.log_tau_.grad, r[f"{p}0_grad_k"], rtol=1e-3, what="dL/dlog(temperature)")
    close(x_raw, r[f"{p}0_x_after"], rtol=0, atol=1e-6, what="X_s after one step")
    close(syn.y, r[f"{p}0_y_after"], rtol=0, atol=1e-6, what="Y_s after one step")
    close(d.log_tau_, r[f"{p}0_k_after"], rtol=0, atol=1e-6, what="log temperature after one step")
    # RFAD also learns a linear map T of the flattened summary (identity init, AdaBelief lr 5e-5):
    # the next iteration sees X_s T, which after one step differs from X_s by ~5x the pixel step
    close(syn.x, r[f"{p}0_xT_after"], rtol=0, atol=1e-6, what="summary seen by step 2 (X_s T)")
    m = d.step(real, syn)
    close(m["loss"], r[f"{p}1_loss"], rtol=1e-4, what="Platt loss, step 2")


def test_rfad_early_stopping_matches_reference(monkeypatch):
    """The reference's early stopping on a validation set (``distill_dataset``; check interval 40
    and patience 1000 patched down to 2 and 6 to stop within 38 iterations): the validation
    Platt losses at every check (16 fixed validation networks), the iteration of the stop, the
    kept (best) iteration and its summary, labels and temperature."""
    import datadistill.distillers.rfad as rfad_mod
    from datadistill.kernels import conv

    r = fixture("rfad_early_stop")
    val_every, patience, iters, lr = r["settings"].tolist()
    n_it = int(r["stop_iter"])
    def weights(prefix, n):
        return [[(r[f"{prefix}{m}_features.{i}.weight"], r[f"{prefix}{m}_features.{i}.bias"]) for i in (0, 3, 6)]
                for m in range(n)]
    monkeypatch.setattr(rfad_mod, "RandomFeatureNNGP", injected_rf([weights(f"it{it}_m", 2) for it in range(n_it)]))
    val_weights = weights("val_m", 16)

    def validation_features(self, info, generator):
        rf = conv.RandomFeatureNNGP(info, n_models=16, model=self.rf_model, width=self.rf_width, generator=generator)
        for net, ws in zip(rf.nets, val_weights, strict=True):
            load_convs(net, ws)
        return rf
    monkeypatch.setattr(rfad_mod.RFAD, "validation_features", validation_features)
    x_s, k = r["x_init"], 3
    train = Split(torch.tensor(r["x_t"], dtype=torch.float32), torch.tensor(r["labels_t"]))
    val = Split(torch.tensor(r["x_v"], dtype=torch.float32), torch.tensor(r["labels_v"]))
    real = RealData(info_for(x_s.shape[1:], k), train, val, val)
    y_s = np.eye(k, dtype=np.float32) - 1 / k
    d, syn = distiller_with_summary("rfad", real, x_s, y_s, n_models=2, rf_width=8, reg=5e-3, lr_data=lr,
                                    iterations=int(iters), val_every=int(val_every), patience=int(patience),
                                    val_models=16, val_per_class=None)
    seen = []
    d.distill(real, syn, [seen.append])
    checks = np.array(d.early_.history)
    assert checks[:, 0].tolist() == r["val_iter"].tolist(), "validated iterations"
    close(checks[:, 1], r["val_loss"], rtol=1e-5, what="validation Platt losses")
    close(checks[:, 2], r["val_acc"], rtol=0, what="validation accuracies")
    assert d.stopped_ and len(seen) == syn.meta["iterations"] == n_it, "stopped at the reference's iteration"
    assert d.early_.best_iteration == syn.meta["best_iteration"] == int(r["best_iter"]), "kept iteration"
    close(syn.x, r["best_x"], rtol=0, atol=1e-5, what="kept summary (X_s T)")
    close(syn.y, r["best_y"], rtol=0, atol=1e-5, what="kept labels")
    close(d.log_tau_, r["best_k"], rtol=0, atol=1e-5, what="kept log temperature")


def test_rfad_defaults_match_reference():
    """run_distillation.py / distill_dataset defaults: jit 5e-3, centred labels, k = log tau = 0;
    early stopping every 40 iterations, patience 1000, 16 validation networks, 500 validation
    examples per class, at most 100,000 iterations."""
    from datadistill.distillers.rfad import RFAD

    d = RFAD()
    got = {"reg": d.reg, "center_labels": d.center_labels, "platt_init": d.platt_init, "iterations": d.iterations,
           "val_every": d.val_every, "patience": d.patience, "val_per_class": d.val_per_class,
           "val_models": d.val_models}
    assert got == {"reg": 5e-3, "center_labels": True, "platt_init": 1.0, "iterations": 100_000,
                   "val_every": 40, "patience": 1000, "val_per_class": 500, "val_models": 16}


# ---------------------------------------------------------------------------------------- FRePO
def frepo_net_params(r, k: int):
    """The fixture's flax Conv(1 block) parameters as (conv weight, conv bias, fc weight, fc bias)
    in torch layout; the flax Dense reads the features flattened (H, W, C), torch (C, H, W)."""
    w = np.transpose(r[f"net{k}/Conv_0/kernel"], (3, 2, 0, 1))
    fc = r[f"net{k}/Dense_0/kernel"]  # [H*W*C, K]
    c = w.shape[0]
    hw = fc.shape[0] // c
    h = int(round(hw ** 0.5))
    fc = fc.reshape(h, h, c, -1).transpose(2, 0, 1, 3).reshape(c * hw, -1).T
    return w, r[f"net{k}/Conv_0/bias"], fc, r[f"net{k}/Dense_0/bias"]


def test_frepo_loss_gradient_online_step_and_second_step(monkeypatch):
    """One model in the pool (FRePO's Conv with 1 block of 8 channels, no normalization, fixed
    weights), learned labels: KRR loss and gradients, summary after one step (LAMB in the
    reference), the online model after its Adam step on the updated summary, the loss of step two."""
    import datadistill.distillers.frepo as frepo_mod

    r = fixture("frepo")
    w, b, fw, fb = frepo_net_params(r, 0)

    def model_factory(name, info, *, generator=None, device=None, **kw):
        net = create_model("convnet", info, width=w.shape[0], depth=1, norm="none", generator=generator)
        load_convs(net, [(w, b)])
        with torch.no_grad():
            net.classifier.weight.copy_(torch.tensor(fw))
            net.classifier.bias.copy_(torch.tensor(fb))
        return net.to(device) if device is not None else net

    # glue: FRePO builds its pool models with ``Distiller.make_model`` (device + fused kernels)
    monkeypatch.setattr(frepo_mod.FRePO, "make_model",
                        lambda self, name, info, generator=None, **kw: model_factory(
                            name, info, generator=generator, device=self.device_))
    real = real_data(r["x_t"], r["labels_t"], 3)
    d, syn = distiller_with_summary("frepo", real, r["x_s_init"], r["y_s_init"], pool_size=1,
                                    max_online_updates=100, lr_data=3e-4, lr_model=3e-4, reg=1e-6)
    m = d.step(real, syn)
    # the reference's total loss adds a label-margin term, -min(top1 - top2, 1/K) (constant here)
    close(m["loss"], r["it0_kernel_loss"], rtol=1e-4, what="KRR loss, step 1")
    close(syn.x.grad, r["it0_grad_x"], rtol=1e-3, atol=1e-3 * np.abs(r["it0_grad_x"]).max(), what="dL/dX_s")
    close(syn.y.grad, r["it0_grad_y"], rtol=1e-3, atol=1e-3 * np.abs(r["it0_grad_y"]).max(), what="dL/dY_s")
    net = d.pool_[0][0]
    w1, b1, fw1, fb1 = frepo_net_params(r, 1)
    close(net.classifier.weight, fw1, rtol=0, atol=1e-6, what="online model readout after its step")
    close(next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight, w1, rtol=0, atol=1e-6,
          what="online model conv after its step")
    close(syn.x, r["it0_x_after"], rtol=0, atol=1e-6, what="X_s after one step")
    close(syn.y, r["it0_y_after"], rtol=0, atol=1e-6, what="Y_s after one step")
    m = d.step(real, syn)
    close(m["loss"], r["it1_kernel_loss"], rtol=1e-4, what="KRR loss, step 2")


def test_frepo_default_feature_extractor_matches_reference():
    """README's published model: --arch=conv --width=128 --depth=3 --normalization=batch (widths
    128/256/512, batch norm before conv 2 and 3), 28x28x1, 10 classes: parameter shapes."""
    from datadistill.distillers.frepo import FRePO

    r = fixture("frepo")
    ref = json.loads(str(r["default_arch_batch_param_shapes"]))
    net = create_model(FRePO().model, info_for((1, 28, 28), 10))
    convs = [list(m.weight.shape) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ref_convs = [[s[3], s[2], s[0], s[1]] for k, s in sorted(ref.items()) if k.startswith("Conv_") and k.endswith("kernel")]
    assert convs == ref_convs, "conv weight shapes"
    assert net.classifier.weight.shape[1] == ref["Dense_0/kernel"][0], "feature dimension"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()), "batch norm"
