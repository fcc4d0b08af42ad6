"""DD — Dataset Distillation (Wang, Zhu, Torralba & Efros, 2018), with LinBa's improvements.

Survey eq. (4): unroll T steps of inner gradient descent on the summary and backpropagate the
real-data loss through the unroll (back-propagation through time, optionally truncated):

    theta_{t+1} = theta_t - eta_t v_{t+1},   v_{t+1} = mu v_t + grad_theta l(S_{t mod G}; theta_t),
    min_{S, eta}  l(x_real; theta_T),   theta_0 fixed (``init_mode="fixed"``) or ~ p(theta)
    (``"random"``: a fresh network every outer iteration),

with one learnable step size eta_t = softplus(raw_t) per inner step and mu = 0 in DD. As in the
reference, the summary is split into G groups of ``images_per_step`` images per class (group g:
each class's images g*k .. g*k+k-1), inner step t trains on group t mod G, and the unroll is
G x ``distill_epochs`` steps (``unroll`` overrides it). LinBa (Deng & Russakovsky, NeurIPS'22)
made the unroll work at scale with a momentum inner optimizer (mu = 0.9), long unrolls (>= 100
steps) with every step on the whole summary (``images_per_step=None``) and the network's
default initialisation: preset ``linba``. Long unrolls fit in memory by gradient
checkpointing: only every ``checkpoint_every``-th inner state is kept; the backward pass
recomputes one segment at a time (exact gradients, memory O(T / segment + segment)).
``backprop_steps`` truncates the backward to the last steps (TBPTT).

Published defaults (reference code ``ssnl/dataset-distillation``, ``base_options.py``): one
image per class per step (``images_per_step=1``), ``distill_epochs=3`` (30 inner steps at 10
images per class), step sizes initialised at 0.02 through the inverse softplus, Adam lr 0.01
(betas 0.5, 0.999) on images and step sizes, halved every 40 epochs (``lr_decay_every=2360``
outer steps, ``lr_decay=0.5``), a real batch of 1024 per outer step, a fresh network per outer
step (``unknown_init``) with xavier-normal weights (gain 1) and zero biases
(``net_init="xavier"``), summary images initialised as random noise (Algorithm 1;
``init="real"`` starts from real images instead), and ``--epochs 400`` passes over the real
data: on a 60,000-image training set (MNIST, Fashion-MNIST) 400 x ceil(60000 / 1024) = 23,600
outer steps, the default ``iterations``. Other training-set sizes: ``published_iterations(n)``
(e.g. CIFAR-10's 50,000: 19,600 steps, decay every 1,960). The reference's MNIST network is
LeNet, the default ``model`` here (the library's ``lenet`` is the same network at 28x28; it needs
images of at least 16x16); preset ``convnet`` runs DD on the field's ConvNet-128-3 instead (the
network of the library's earlier DD benchmark rows), ``tiny`` too (the digits test data is 8x8). The learned step sizes are kept in the summary's metadata
(``dd_lrs``); the common evaluation protocol trains with its own schedule.

Parity (``tests/test_parity_dd.py``): the authors' ``Trainer`` on a tiny float64 LeNet case gives
the same loss, image and step-size gradients and Adam updates (rtol 2e-5), with one group and
with two groups of images; the initialisation's per-layer std and kurtosis, and the defaults
above, are checked too.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import ConfigError
from ..models import init_parameters
from ..models.layers import INIT_SCHEMES
from ..train import label_loss
from .base import DISTILLERS
from .image import ImageDistiller


#: the reference's ``--epochs`` (passes over the real data) and ``--decay_epochs``
PUBLISHED_EPOCHS, PUBLISHED_DECAY_EPOCHS = 400, 40


def published_iterations(n_train: int, batch_real: int = 1024, epochs: int = PUBLISHED_EPOCHS
                         ) -> int:
    """Outer steps of the reference's schedule on ``n_train`` real images: ``epochs`` passes at
    ``batch_real`` per step (the reference's loader keeps the last, partial batch). Its outer-lr
    decay period is ``published_iterations(n_train, epochs=PUBLISHED_DECAY_EPOCHS)``."""
    return epochs * math.ceil(n_train / batch_real)


@DISTILLERS.register("dd")
@dataclasses.dataclass(kw_only=True)
class DD(ImageDistiller):
    """Unrolled inner SGD on the summary, real loss back-propagated through time to the pixels."""

    name = "dd"
    presets = {
        # LinBa: momentum, a long unroll, every step on the whole summary, default init, no
        # outer-lr decay (the library's DD before the parity check)
        "linba": {"unroll": 150, "inner_momentum": 0.9, "checkpoint_every": 10,
                  "images_per_step": None, "net_init": "default", "lr_decay_every": None},
        # the field's ConvNet instead of the reference's LeNet (the earlier benchmark rows)
        "convnet": {"model": "convnet"},
        "cpu-200": {"iterations": 200, "batch_real": 256},
        "tiny": {"iterations": 3, "batch_real": 32, "unroll": 4, "checkpoint_every": 2,
                 "model": "convnet"},
    }

    # 400 epochs at batch 1024 on 60k images (MNIST / Fashion-MNIST); ``published_iterations``
    iterations: int = 23_600
    model: str = "lenet"  # the reference's MNIST network (AlexCifarNet for CIFAR: not in the zoo)
    init: str = "noise"  # Algorithm 1 of the paper: random images
    lr_data: float = 0.01
    batch_real: int = 1024
    dsa: bool = False
    images_per_step: int | None = 1  # per class; None: every inner step on the whole summary
    distill_epochs: int = 3  # passes over the image groups
    unroll: int | None = None  # None: groups x distill_epochs (10 x distill_epochs without groups)
    inner_lr: float = 0.02
    inner_momentum: float = 0.0
    net_init: str = "xavier"  # init_parameters scheme of the inner networks
    # outer steps: 40 epochs x 59 batches of 60k (``published_iterations(n, epochs=40)``);
    # None: a constant outer lr
    lr_decay_every: int | None = 2_360
    lr_decay: float = 0.5
    init_mode: str = "random"
    checkpoint_every: int | None = None  # None: keep the whole unroll (plain BPTT)
    backprop_steps: int | None = None  # None: back-propagate through all steps

    def __post_init__(self):
        super().__post_init__()
        if self.init_mode not in ("random", "fixed"):
            raise ConfigError(f"init_mode must be 'random' or 'fixed', got {self.init_mode!r}")
        for k in ("unroll", "checkpoint_every", "backprop_steps", "images_per_step",
                  "lr_decay_every"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"{k} must be >= 1 (or None), got {v}")
        if self.distill_epochs < 1:
            raise ConfigError(f"distill_epochs must be >= 1, got {self.distill_epochs}")
        if not 0.0 <= self.inner_momentum < 1.0:
            raise ConfigError(f"inner_momentum must be in [0, 1), got {self.inner_momentum}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.net_init not in INIT_SCHEMES:
            raise ConfigError(f"net_init must be one of {', '.join(INIT_SCHEMES)}, "
                              f"got {self.net_init!r}")

    def setup(self, real, syn):
        self.groups_ = self._groups(syn, real.info.num_classes)
        n_steps = len(self.groups_) if self.images_per_step is not None else 10
        self.unroll_ = self.unroll or n_steps * self.distill_epochs
        raw = torch.tensor(self.inner_lr).expm1().log()  # the reference's inverse softplus
        self.raw_lrs_ = raw.repeat(self.unroll_).requires_grad_(True)
        self.outer_steps_ = 0
        super().setup(real, syn)
        self.fixed_ = self._network(real) if self.init_mode == "fixed" else None

    def _groups(self, syn, num_classes):
        """The reference's per-step image groups: group g holds images g*k .. g*k+k-1 of every
        class (class-major); ``[None]`` (the whole summary) without ``images_per_step``."""
        k = self.images_per_step
        if k is None:
            return [None]
        ids = syn.class_ids
        per = [torch.nonzero(ids == c).flatten() for c in range(num_classes)]
        n = len(per[0])
        if n == 0 or any(len(q) != n for q in per) or n % k:
            raise ConfigError(f"images_per_step={k} needs the same number of examples in every "
                              f"class, a multiple of {k} (got {[len(q) for q in per]}); "
                              f"images_per_step=None trains every step on the whole summary")
        return [torch.cat([q[g * k:(g + 1) * k] for q in per]) for g in range(n // k)]

    def make_optimizer(self, syn):
        return torch.optim.Adam(list(syn.data_parameters()) + [self.raw_lrs_], lr=self.lr_data,
                                betas=(0.5, 0.999))

    def current_lr(self) -> float:
        """The outer Adam lr of the next step: StepLR(``lr_decay_every``, ``lr_decay``)."""
        if not self.lr_decay_every:
            return self.lr_data
        return self.lr_data * self.lr_decay ** (self.outer_steps_ // self.lr_decay_every)

    def extra_state(self):
        return {"raw_lrs": self.raw_lrs_.detach().clone(), "outer_steps": self.outer_steps_}

    def load_extra_state(self, state):
        with torch.no_grad():
            if "raw_lrs" in state:
                self.raw_lrs_.copy_(state["raw_lrs"])
            else:  # a checkpoint of the exp-parametrized DD: the same step sizes
                self.raw_lrs_.copy_(state["log_lrs"].exp().expm1().log())
        self.outer_steps_ = int(state.get("outer_steps", 0))

    def _finalize_meta(self, syn, iteration, elapsed):
        super()._finalize_meta(syn, iteration, elapsed)
        syn.meta["dd_lrs"] = [round(float(v), 6) for v in self.step_sizes()]

    def step_sizes(self) -> torch.Tensor:
        return F.softplus(self.raw_lrs_.detach())

    def _network(self, real):
        if self.net_init == "default":
            return self.make_model(self.model, real.info, generator=self.gen_).train()
        net = self.make_model(self.model, real.info)
        return init_parameters(net, self.gen_, self.net_init).train()

    def _inner(self, net, state, steps, x_s, y_s, label_format, create_graph):
        """Run inner steps ``steps`` from ``state`` = (params, velocities) (tuples of tensors)."""
        names = [k for k, _ in net.named_parameters()]
        buffers = dict(net.named_buffers())
        params, vel = state
        for t in steps:
            grp = self.groups_[t % len(self.groups_)]  # the reference: step t on group t mod G
            xg, yg = (x_s, y_s) if grp is None else (x_s[grp], y_s[grp])
            out = functional_call(net, ({**dict(zip(names, params)), **buffers},), (xg,))
            loss = label_loss(out, yg, label_format)
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            vel = tuple(self.inner_momentum * v + g for v, g in zip(vel, grads))
            lr = F.softplus(self.raw_lrs_[t])
            params = tuple(p - lr * v for p, v in zip(params, vel))
            if not create_graph:
                params = tuple(p.detach().requires_grad_(True) for p in params)
                vel = tuple(v.detach() for v in vel)
        return params, vel

    def step(self, real, syn):
        net = self.fixed_ if self.fixed_ is not None else self._network(real)
        names, fmt = [k for k, _ in net.named_parameters()], syn.label_format
        n, buffers = len(names), dict(net.named_buffers())
        p0 = tuple(p.detach().clone().requires_grad_(True) for _, p in net.named_parameters())
        seg = self.checkpoint_every or self.unroll_
        bounds = list(range(0, self.unroll_, seg)) + [self.unroll_]
        first_bp = 0 if self.backprop_steps is None else max(0, self.unroll_ - self.backprop_steps)
        # forward without graph through all segments but the last, keeping each segment's start
        x_d, y_d = (t.detach() for t in syn.materialize())
        states, state = [], (p0, tuple(torch.zeros_like(p) for p in p0))
        for a, b in zip(bounds[:-2], bounds[1:-1]):
            states.append(state)
            state = self._inner(net, state, range(a, b), x_d, y_d, fmt, False)
        states.append(state)
        xr, yr = self._real_batch(real)
        # backward segment by segment, last first: recompute a segment with its graph from its
        # stored start, back-propagate the incoming gradients, hand the start's gradients on
        self.optimizer_.zero_grad(set_to_none=True)
        learned, g_out, loss = self._learned(syn), None, None
        for si in reversed(range(len(bounds) - 1)):
            a, b = bounds[si], bounds[si + 1]
            if b <= first_bp:
                break
            st = self._inner(net, states[si], range(a, max(a, first_bp)), x_d, y_d, fmt, False)
            leaves = tuple(t.detach().requires_grad_(True) for t in st[0] + st[1])
            x_s, y_s = syn.materialize()
            params, vel = self._inner(net, (leaves[:n], leaves[n:]), range(max(a, first_bp), b),
                                      x_s, y_s, fmt, True)
            if g_out is None:  # the last segment ends in the outer loss on a real batch
                out = functional_call(net, ({**dict(zip(names, params)), **buffers},), (xr,))
                loss = label_loss(out, yr, "hard")
                outs, grads = [loss], [None]
            else:
                pairs = [(o, g) for o, g in zip(params + vel, g_out) if o.requires_grad]
                outs, grads = [o for o, _ in pairs], [g for _, g in pairs]
            back = torch.autograd.grad(outs, list(leaves) + learned, grads, allow_unused=True)
            for p, g in zip(learned, back[len(leaves):]):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            g_out = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(leaves, back))
        lr = self.current_lr()
        for group in self.optimizer_.param_groups:
            group["lr"] = lr
        self.optimizer_.step()
        self.outer_steps_ += 1
        return {"loss": float(loss.detach()), "inner_lr_mean": float(self.step_sizes().mean()),
                "outer_lr": lr}

    def _real_batch(self, real):
        """The real batch of the outer loss: ``batch_real`` random training examples."""
        idx = torch.randperm(len(real.train), generator=self.gen_)[:self.batch_real]
        return real.train.x[idx].to(self.device_), real.train.y[idx].to(self.device_)

    def _learned(self, syn):
        return [p for p in syn.data_parameters() if p.requires_grad] + [self.raw_lrs_]
