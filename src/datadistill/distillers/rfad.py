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

Early stopping, as the reference (``distill_dataset``): every ``val_every`` (40) iterations,
starting with the initial summary at iteration 0, the summary (X_s T, Y_s, tau) is scored by the
Platt cross-entropy of its KRR predictions on a validation set, with the features of
``val_models`` (16) random networks of the same architecture drawn once with fixed seeds
(features of the validation set computed once); the best-scoring (strictly lower loss) summary is
kept, and the run stops at the first check more than ``patience`` (1000) iterations after the
best; ``iterations`` (100,000) is the reference's maximum. The summary the run ends with is the
best one (the reference's ``best.npz``). Where the reference draws its 500 validation examples per
class (with replacement) from the training images, the library takes up to ``val_per_class``
(500) per class of its validation split ``real.val``, which is held out from training. Reaching
``iterations`` without a stop (the reference's loop then returns nothing) the library validates the
final summary too, when ``iterations`` is no multiple of ``val_every``, and keeps the best one;
extending such a finished run (resume with a larger ``iterations``) continues from that kept
summary. The validation draws from its own generator (``derive_seed(seed, VAL_KEY)``), so the
training trajectory is the same with and without it. ``val_every=0`` turns validation off and
keeps the last summary (a deviation); ``patience=None`` keeps the best without stopping.

Parity (``tests/test_parity_kernel.py``, fixture ``rfad.npz`` from ``distill_dataset``): the
random networks' initialisation, the kernel, the Platt loss and its gradients w.r.t. X_s, Y_s and
k, the summary, k and X_s T after one AdaBelief step, the loss of step two; fixture
``rfad_early_stop.npz``: the validation losses, the iteration of the stop and the kept summary of
a short run with the check interval and patience patched down. Deliberate deviations kept as
options: ``learn_transform=False`` drops T (the summary is X_s itself); ``optimizer="adam"`` uses
Adam; ``val_every=0`` (no validation, last summary).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError
from ..kernels import conv
from ..kernels.conv import RandomFeatureNNGP
from ..kernels.krr import krr_fit_predict
from ..optim import AdaBelief
from ..runtime import derive_seed, make_generator
from .base import DISTILLERS
from .early_stop import EarlyStopping
from .krr_base import KRRDistiller

#: ``derive_seed`` key of the validation networks and the validation subsample
VAL_KEY = 907
#: validation images per forward pass (the reference: 300)
VAL_CHUNK = 256


@DISTILLERS.register("rfad")
@dataclasses.dataclass(kw_only=True)
class RFAD(KRRDistiller):
    """Random-feature NNGP of random ConvNets, KRR on the summary, Platt-scaled cross-entropy."""

    name = "rfad"
    #: CPU presets: short runs of smaller networks and batches. Early stopping stays on, scaled
    #: down: a check every 10 / 20 iterations on 100 validation images per class with 4 networks
    #: (the published 500 x 16 would cost ~42 CPU-s up front here, about two cpu-60 runs;
    #: measured in docs/meta-model-matching.md); the patience (1000) outlasts these runs, so
    #: they keep the best validated summary rather than stop.
    presets = {
        "cpu-200": {"iterations": 200, "batch_real": 500, "n_models": 4, "rf_width": 64,
                    "val_every": 20, "val_models": 4, "val_per_class": 100},
        "cpu-60": {"iterations": 60, "batch_real": 250, "n_models": 4, "rf_width": 64,
                   "val_every": 10, "val_models": 4, "val_per_class": 100},
        "tiny": {"iterations": 3, "batch_real": 64, "n_models": 2, "rf_width": 16, "val_models": 2},
    }

    iterations: int = 100_000  # the reference's maximum; early stopping ends it sooner
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
    val_every: int = 40  # iterations between validation checks (0: none, keep the last summary)
    patience: int | None = 1000  # iterations without a better validation loss before stopping
    val_per_class: int | None = 500  # validation examples per class (None: all of real.val)
    val_models: int = 16  # random networks of the validation features (fixed for the run)

    def __post_init__(self):
        super().__post_init__()
        if self.n_models < 1 or self.rf_width < 1:
            raise ConfigError("n_models and rf_width must be >= 1")
        if self.platt_init <= 0:
            raise ConfigError(f"platt_init (the initial temperature) must be > 0, got {self.platt_init}")
        if self.optimizer not in ("adabelief", "adam"):
            raise ConfigError(f"optimizer must be 'adabelief' or 'adam', got {self.optimizer!r}")
        if self.val_every < 0 or (self.patience is not None and self.patience < 0):
            raise ConfigError(f"val_every and patience must be >= 0, got {self.val_every}, {self.patience}")
        if self.val_models < 1 or (self.val_per_class is not None and self.val_per_class < 1):
            raise ConfigError(f"val_models and val_per_class must be >= 1, got {self.val_models}, "
                              f"{self.val_per_class}")

    def setup(self, real, syn):
        self.log_tau_ = torch.tensor(float(self.platt_init)).log().to(
            syn.x.device).requires_grad_(True)
        if self.learn_transform:
            d = syn.x[0].numel()
            self.raw_x_ = syn.x.detach().clone().requires_grad_(True)
            # T - I (zero): T's AdaBelief updates, without rounding 1 + delta in float32
            self.transform_ = torch.zeros(d, d, dtype=syn.x.dtype, device=syn.x.device).requires_grad_(True)
        super().setup(real, syn)
        self.steps_ = 0
        self.stopped_ = False
        self.early_ = EarlyStopping(self.patience)
        self.val_ = self._validation_set(real) if self.val_every else None

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

    def _method_state(self) -> dict:
        state = {"log_tau": self.log_tau_.detach().clone()}
        if self.learn_transform:
            state.update(raw_x=self.raw_x_.detach().clone(), transform=self.transform_.detach().clone())
        return state

    def _load_method_state(self, state) -> None:
        with torch.no_grad():
            self.log_tau_.copy_(state["log_tau"])
            if self.learn_transform:
                self.raw_x_.copy_(state["raw_x"])
                self.transform_.copy_(state["transform"])

    def extra_state(self):
        return {**self._method_state(), "steps": self.steps_, "stopped": self.stopped_,
                "early_stopping": self.early_.state_dict()}

    def load_extra_state(self, state):
        if "early_stopping" not in state:
            raise CheckpointError("this RFAD checkpoint predates its early stopping (no validation state "
                                  "in it); start the run afresh")
        self._load_method_state(state)
        self.steps_, self.stopped_ = int(state["steps"]), bool(state["stopped"])
        self.early_.load_state_dict(state["early_stopping"])

    def extra_meta(self):
        meta = super().extra_meta()
        if self.val_every:
            e = self.early_
            meta.update(best_iteration=e.best_iteration, best_val_loss=e.best, stopped_early=self.stopped_,
                        validation=[list(h) for h in e.history])  # [iteration, val loss, val acc]
        return meta

    def _support_images(self, syn) -> torch.Tensor:
        if not self.learn_transform:
            return syn.materialize()[0]
        x = self.raw_x_
        return x + (x.reshape(x.shape[0], -1) @ self.transform_).reshape(x.shape)  # X (I + D)

    # -- early stopping on the validation split --------------------------------------------------
    def validation_features(self, info, generator: torch.Generator) -> RandomFeatureNNGP:
        """The validation's random networks: ``val_models`` of the training architecture, drawn
        once (the reference: 16 ``ConvNet_wide`` with fixed seeds). Looked up in ``conv`` at call
        time: a seam of its own, apart from the per-iteration networks' ``RandomFeatureNNGP``
        (the parity tests inject the reference's weights into each)."""
        return conv.RandomFeatureNNGP(info, n_models=self.val_models, model=self.rf_model, width=self.rf_width,
                                      generator=generator, device=self.device_)

    @torch.no_grad()
    def _validation_set(self, real):
        """(networks, features of the validation images [float32], their labels), once per run."""
        val = real.val
        if val is None or len(val) == 0:
            raise ConfigError(f"{self.name}: early stopping needs a validation split (real.val is empty); "
                              f"set val_every=0 to run without it")
        gen = make_generator(derive_seed(self.seed, VAL_KEY))
        idx = torch.arange(len(val))
        if self.val_per_class is not None:
            y = val.y.cpu()
            idx = torch.cat([m[torch.randperm(len(m), generator=gen)[:self.val_per_class]]
                             for m in (torch.nonzero(y == c).flatten() for c in range(real.info.num_classes))])
        rf = self.validation_features(real.info, gen)
        x = val.x[idx.to(val.x.device)]
        phi = torch.cat([rf.features(x[i:i + VAL_CHUNK].to(self.device_)) for i in range(0, len(idx), VAL_CHUNK)])
        return rf, phi, val.y[idx.to(val.y.device)].to(self.device_)

    @torch.no_grad()
    def validation_loss(self, syn) -> tuple[float, float]:
        """(Platt cross-entropy, accuracy) of the summary's KRR predictions on the validation set,
        with the current temperature: kernels in float32 from float32 features, the solve and the
        loss in float64, as the reference."""
        rf, phi_v, y_v = self.val_
        x_s, y_s = syn.materialize()
        phi_s = rf.features(x_s.detach())
        pred = krr_fit_predict(rf.gram(phi_s, phi_s).double(), rf.gram(phi_v, phi_s).double(),
                               y_s.detach().double(), self.reg)
        loss = F.cross_entropy(self.log_tau_.detach().double().exp() * pred, y_v)
        return float(loss), float((pred.argmax(1) == y_v).double().mean())

    def _validate(self, syn, out: dict) -> None:
        """One check at iteration ``steps_``: keep the summary if best, stop past the patience."""
        loss, acc = self.validation_loss(syn)
        out.update(val_loss=loss, val_acc=acc, val_iteration=self.steps_)
        keep = lambda: {"synset": {k: v.detach().clone() for k, v in syn.state_dict().items()},  # noqa: E731
                        "method": self._method_state()}
        if self.early_.check(self.steps_, loss, keep, acc):
            self.stopped_ = True
            self._keep_best(syn)

    def _keep_best(self, syn) -> None:
        best = self.early_.best_state
        with torch.no_grad():
            syn.load_state_dict(best["synset"])
        self._load_method_state(best["method"])

    def step(self, real, syn):
        if self.stopped_:  # stopped early (``distill`` ends the run; a direct caller gets a no-op)
            return {"stopped": 1.0}
        out = {}
        if self.val_every and self.steps_ == 0:  # the reference's first check: the initial summary
            self._validate(syn, out)
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
        out.update(loss=float(loss.detach()), batch_acc=acc, tau=float(self.log_tau_.detach().exp()))
        self.steps_ += 1
        if self.val_every and not self.stopped_:
            last = self.steps_ >= self.iterations
            if self.steps_ % self.val_every == 0 or last:
                self._validate(syn, out)
            if last and not self.stopped_:  # the end of the run: the best summary, as at a stop
                self._keep_best(syn)
        return out
