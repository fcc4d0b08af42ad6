"""RFAD — Random Feature Approximation for Dataset Distillation (Loo, Hasani, Amini & Rus, NeurIPS'22).

KIP with two changes. (1) The ConvNet NNGP is replaced by its random-feature approximation:
Phi(x) stacks the penultimate features of M random finite ConvNets (RFAD's ``ConvNet_wide``:
3 x [3x3 conv of 2 x 128 channels, padding 1, ReLU, 2x2 avg pool], no normalization, weights
N(0, 2/fan_in), biases N(0, 0.1^2), freshly drawn every iteration) / sqrt(M D), and
K = 2 Phi Phi^T + 0.01 (the readout layer's NNGP), so one iteration costs O((|D_batch| + n) M)
forward passes instead of O(|D_batch| n) exact kernel entries. (2) The squared loss is replaced
by Platt-scaled cross-entropy on the KRR predictions,

    min_{X_s, Y_s, tau, T}  CE( tau * K_ts (K_ss + lambda' I)^{-1} Y_s, y_t ),   lambda' = lambda tr(K_ss)/n,

with a learned temperature tau = exp(k), learned labels, and the support images seen through a
learned linear map T of the flattened images (X_s T, identity at the start).

Defaults = yolky/RFAD (``run_distillation.py --platt --learn_labels``, ``distill_dataset``):
M = 8 models of 256 channels (``rf_width``), padding 1 on every conv also on 1-channel images
(28 -> 14 -> 7 -> 3), lambda = 5e-3 (``--jit``, trace-scaled), centred labels (one-hot - 1/K),
k = log tau = 0 (``platt_init`` 1), AdaBelief (eps 1e-16) with lr 1e-3 on images and labels,
1e-2 on k and 5e-5 on T, real-initialised support, 4 batches of 1280 real examples per iteration
(``batch_real`` 5120), no augmentation. The summary the method keeps (``syn.x``) is X_s T, what
the reference saves as its distilled images; the raw X_s and T are the method's state
(``image_parameter``; ``transform_`` holds T - I: the same AdaBelief updates as on T, stored
without float32's rounding of 1 + small numbers, so X_s T = X_s + X_s (T - I) keeps ~1e-7).
``kernel`` names the kernel of the KRR evaluation: the pooled ConvNet NNGP the features
approximate (RFAD's ``eval_distilled_set.py --run_krr``: ``DCConvNetKernel``, i.e.
``conv_pool_nngp``).

Parity (``tests/test_parity_kernel.py``, fixture ``rfad.npz`` from ``distill_dataset``): the
random networks' initialisation, the kernel, the Platt loss and its gradients w.r.t. X_s, Y_s and
k, the summary, k and X_s T after one AdaBelief step, the loss of step two. Deliberate deviations
kept as options: ``learn_transform=False`` drops T (the summary is X_s itself);
``optimizer="adam"`` uses Adam. Not implemented: the reference's early stopping on a validation
split (every 40 iterations, patience 1000, up to 100k iterations).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..kernels.conv import RandomFeatureNNGP
from ..kernels.krr import krr_fit_predict
from ..optim import AdaBelief
from .base import DISTILLERS
from .krr_base import KRRDistiller


@DISTILLERS.register("rfad")
@dataclasses.dataclass(kw_only=True)
class RFAD(KRRDistiller):
    """Random-feature NNGP of random ConvNets, KRR on the summary, Platt-scaled cross-entropy."""

    name = "rfad"
    presets = {
        "cpu-200": {"iterations": 200, "batch_real": 500, "n_models": 4, "rf_width": 64},
        "cpu-60": {"iterations": 60, "batch_real": 250, "n_models": 4, "rf_width": 64},
        "tiny": {"iterations": 3, "batch_real": 64, "n_models": 2, "rf_width": 16},
    }

    iterations: int = 1000
    lr_data: float = 1e-3
    reg: float = 5e-3
    batch_real: int = 5120
    n_models: int = 8
    rf_model: str = "convnet_nn"
    rf_width: int = 256  # channels of every conv (ConvNet_wide: k = 2 x net_width 128)
    platt_init: float = 1.0  # initial temperature tau = exp(k), k = 0
    lr_platt: float = 1e-2
    learn_transform: bool = True  # the learned linear map T of the flattened support images
    lr_transform: float = 5e-5
    optimizer: str = "adabelief"  # or "adam" (a deviation)
    kernel: str = "conv_pool_nngp"  # the kernel of the KRR evaluation (what the features approximate)

    def __post_init__(self):
        super().__post_init__()
        if self.n_models < 1 or self.rf_width < 1:
            raise ConfigError("n_models and rf_width must be >= 1")
        if self.platt_init <= 0:
            raise ConfigError(f"platt_init (the initial temperature) must be > 0, got {self.platt_init}")
        if self.optimizer not in ("adabelief", "adam"):
            raise ConfigError(f"optimizer must be 'adabelief' or 'adam', got {self.optimizer!r}")

    def setup(self, real, syn):
        self.log_tau_ = torch.tensor(float(self.platt_init)).log().to(
            syn.x.device).requires_grad_(True)
        if self.learn_transform:
            d = syn.x[0].numel()
            self.raw_x_ = syn.x.detach().clone().requires_grad_(True)
            # T - I (zero): T's AdaBelief updates, without rounding 1 + delta in float32
            self.transform_ = torch.zeros(d, d, dtype=syn.x.dtype, device=syn.x.device).requires_grad_(True)
        super().setup(real, syn)

    def image_parameter(self, syn) -> torch.Tensor:
        """The tensor the optimizer steps for the images: the raw X_s (``syn.x`` = X_s T) or,
        without the transform, ``syn.x`` itself."""
        return self.raw_x_ if self.learn_transform else syn.x

    def make_optimizer(self, syn):
        groups = super().make_optimizer(syn).param_groups  # summary pixels and labels (+ extras)
        groups = [{"params": g["params"], "lr": g["lr"]} for g in groups]
        if self.learn_transform:
            groups[0]["params"] = [self.raw_x_]
        if self.optimizer == "adam":
            return torch.optim.Adam(groups)
        return AdaBelief(groups, eps=1e-16)

    def extra_param_groups(self):
        groups = [{"params": [self.log_tau_], "lr": self.lr_platt}]
        if self.learn_transform:
            groups.append({"params": [self.transform_], "lr": self.lr_transform})
        return groups

    def extra_state(self):
        state = {"log_tau": self.log_tau_.detach().clone()}
        if self.learn_transform:
            state.update(raw_x=self.raw_x_.detach().clone(), transform=self.transform_.detach().clone())
        return state

    def load_extra_state(self, state):
        with torch.no_grad():
            self.log_tau_.copy_(state["log_tau"])
            if self.learn_transform:
                self.raw_x_.copy_(state["raw_x"])
                self.transform_.copy_(state["transform"])

    def _support_images(self, syn) -> torch.Tensor:
        if not self.learn_transform:
            return syn.materialize()[0]
        x = self.raw_x_
        return x + (x.reshape(x.shape[0], -1) @ self.transform_).reshape(x.shape)  # X (I + D)

    def step(self, real, syn):
        rf = RandomFeatureNNGP(real.info, n_models=self.n_models, model=self.rf_model,
                               width=self.rf_width, generator=self.gen_, device=self.device_)
        x_t, y_t = self.real_batch(real)
        _, y_s = syn.materialize()
        phi_s = rf.features(self._support_images(syn))
        with torch.no_grad():
            phi_t = rf.features(x_t)
        # the kernels, the solve and the loss in float64 (as the reference's ``.double()``
        # solve; lambda' is small): float32 errors there, amplified by (K + lambda' I)^-1, flip
        # the sign of near-zero gradient entries, which AdaBelief (eps 1e-16) turns into full steps
        phi_s, phi_t = phi_s.double(), phi_t.double()
        pred = krr_fit_predict(rf.gram(phi_s, phi_s), rf.gram(phi_t, phi_s), y_s.double(), self.reg)
        loss = F.cross_entropy(self.log_tau_.double().exp() * pred, y_t.argmax(1))
        self.update(loss)
        if self.learn_transform:  # the summary is what the next iteration sees: X_s T
            with torch.no_grad():
                syn.x.copy_(self._support_images(syn))
        acc = float((pred.argmax(1) == y_t.argmax(1)).float().mean())
        return {"loss": float(loss.detach()), "batch_acc": acc, "tau": float(self.log_tau_.detach().exp())}
