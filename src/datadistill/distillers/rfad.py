"""RFAD — Random Feature Approximation for Dataset Distillation (Loo, Hasani, Amini & Rus, NeurIPS'22).

KIP with two changes. (1) The ConvNet NNGP is replaced by its random-feature approximation:
Phi(x) stacks the penultimate features of M random finite ConvNets (no normalization,
He-normal weights, freshly drawn every iteration), K ~ Phi Phi^T / (M D), so one iteration
costs O((|D_batch| + n) M forward passes) instead of O(|D_batch| n) exact kernel entries.
(2) The squared loss is replaced by Platt-scaled cross-entropy on the KRR predictions,

    min_{X_s, Y_s, tau}  CE( softmax( tau * K_ts (K_ss + lambda' I)^{-1} Y_s ), y_t ),

with a learned temperature tau, learned labels and lambda' = 1e-6 tr(K_ss)/n.
Published defaults: M = 8 models, Adam lr 1e-3 on images and labels, label learning on,
real initialisation, target batch 5000, no augmentation. The summary is evaluated by finite
networks and by KRR with the exact ConvNet NNGP it approximates (``conv_nngp``, flatten
readout — see ``kernels_conv``); ``kernel`` records that choice for ``evaluate_krr``.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..kernels.conv import RandomFeatureNNGP
from ..errors import ConfigError
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
    n_models: int = 8
    rf_model: str = "convnet_nn"
    rf_width: int = 128
    platt_init: float = 10.0  # initial temperature tau
    kernel: str = "conv_nngp"  # the kernel of the KRR evaluation (what the features approximate)

    def __post_init__(self):
        super().__post_init__()
        if self.n_models < 1 or self.rf_width < 1:
            raise ConfigError("n_models and rf_width must be >= 1")

    def setup(self, real, syn):
        self.log_tau_ = torch.tensor(float(self.platt_init)).log().to(
            syn.x.device).requires_grad_(True)
        super().setup(real, syn)

    def extra_param_groups(self):
        return [{"params": [self.log_tau_], "lr": self.lr_data}]

    def extra_state(self):
        return {"log_tau": self.log_tau_.detach().clone()}

    def load_extra_state(self, state):
        with torch.no_grad():
            self.log_tau_.copy_(state["log_tau"])

    def step(self, real, syn):
        rf = RandomFeatureNNGP(real.info, n_models=self.n_models, model=self.rf_model,
                               width=self.rf_width, generator=self.gen_, device=self.device_)
        x_t, y_t = self.real_batch(real)
        x_s, y_s = syn.materialize()
        phi_s = rf.features(x_s)
        with torch.no_grad():
            phi_t = rf.features(x_t)
        pred = self.krr(phi_s @ phi_s.T, phi_t @ phi_s.T, y_s)
        loss = F.cross_entropy(self.log_tau_.exp() * pred, y_t.argmax(1))
        self.update(loss)
        acc = float((pred.argmax(1) == y_t.argmax(1)).float().mean())
        return {"loss": float(loss.detach()), "batch_acc": acc, "tau": float(self.log_tau_.detach().exp())}
