"""DD — Dataset Distillation (Wang, Zhu, Torralba & Efros, 2018), with LinBa's improvements.

Survey eq. (4): unroll T steps of inner gradient descent on the summary and backpropagate the
real-data loss through the unroll (back-propagation through time, optionally truncated):

    theta_{t+1} = theta_t - eta_t v_{t+1},   v_{t+1} = mu v_t + grad_theta l(S; theta_t),
    min_{S, eta}  l(x_real; theta_T),   theta_0 fixed (``init_mode="fixed"``) or ~ p(theta)
    (``"random"``: a fresh network every outer iteration),

with one learnable step size eta_t per inner step (parametrized as exp of a log) and mu = 0
in DD. LinBa (Deng & Russakovsky, NeurIPS'22) made the unroll work at scale with a momentum
inner optimizer (mu = 0.9) and long unrolls (>= 100 steps): preset ``linba``. Long unrolls
fit in memory by gradient checkpointing: only every ``checkpoint_every``-th inner state is
kept; the backward pass recomputes one segment at a time (exact gradients, memory O(T /
segment + segment)). ``backprop_steps`` truncates the backward to the last steps (TBPTT).

Published defaults (reference code ``SsnL/dataset-distillation``): 10 inner steps x 3 epochs
(30 steps, each on the whole summary here; the reference gives each step its own images), step
sizes initialised at 0.02, Adam lr 0.01 (betas 0.5, 0.999) on images and step sizes, real-data
batch 1024, random network init, and summary images initialised as random noise (Algorithm 1:
"initialize x~ randomly"; ``init="noise"``, ``"real"`` starts from real images instead). The
learned step sizes are kept in the summary's metadata (``dd_lrs``); the common evaluation
protocol trains with its own schedule.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch.func import functional_call

from ..train import label_loss
from ..errors import ConfigError
from .base import DISTILLERS
from .image import ImageDistiller


@DISTILLERS.register("dd")
@dataclasses.dataclass(kw_only=True)
class DD(ImageDistiller):
    """Unrolled inner SGD on the summary, real loss back-propagated through time to the pixels."""

    name = "dd"
    presets = {
        "linba": {"unroll": 150, "inner_momentum": 0.9, "checkpoint_every": 10},
        "cpu-200": {"iterations": 200, "batch_real": 256},
        "tiny": {"iterations": 3, "batch_real": 32, "unroll": 4, "checkpoint_every": 2},
    }

    iterations: int = 400
    init: str = "noise"  # Algorithm 1 of the paper: random images
    lr_data: float = 0.01
    batch_real: int = 1024
    dsa: bool = False
    unroll: int = 30
    inner_lr: float = 0.02
    inner_momentum: float = 0.0
    init_mode: str = "random"
    checkpoint_every: int | None = None  # None: keep the whole unroll (plain BPTT)
    backprop_steps: int | None = None  # None: back-propagate through all steps

    def __post_init__(self):
        super().__post_init__()
        if self.init_mode not in ("random", "fixed"):
            raise ConfigError(f"init_mode must be 'random' or 'fixed', got {self.init_mode!r}")
        if self.unroll < 1 or (self.checkpoint_every is not None and self.checkpoint_every < 1) \
                or (self.backprop_steps is not None and self.backprop_steps < 1):
            raise ConfigError("unroll, checkpoint_every and backprop_steps must be >= 1")
        if not 0.0 <= self.inner_momentum < 1.0:
            raise ConfigError(f"inner_momentum must be in [0, 1), got {self.inner_momentum}")

    def setup(self, real, syn):
        self.log_lrs_ = torch.full((self.unroll,), math.log(self.inner_lr)).requires_grad_(True)
        super().setup(real, syn)
        self.fixed_ = self._network(real) if self.init_mode == "fixed" else None

    def make_optimizer(self, syn):
        return torch.optim.Adam(list(syn.data_parameters()) + [self.log_lrs_], lr=self.lr_data,
                                betas=(0.5, 0.999))

    def extra_state(self):
        return {"log_lrs": self.log_lrs_.detach().clone()}

    def load_extra_state(self, state):
        with torch.no_grad():
            self.log_lrs_.copy_(state["log_lrs"])

    def _finalize_meta(self, syn, iteration, elapsed):
        super()._finalize_meta(syn, iteration, elapsed)
        syn.meta["dd_lrs"] = [round(float(v), 6) for v in self.log_lrs_.detach().exp()]

    def _network(self, real):
        return self.make_model(self.model, real.info, generator=self.gen_).train()

    def _inner(self, net, state, steps, x_s, y_s, label_format, create_graph):
        """Run inner steps ``steps`` from ``state`` = (params, velocities) (tuples of tensors)."""
        names = [k for k, _ in net.named_parameters()]
        buffers = dict(net.named_buffers())
        params, vel = state
        for t in steps:
            out = functional_call(net, ({**dict(zip(names, params)), **buffers},), (x_s,))
            loss = label_loss(out, y_s, label_format)
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            vel = tuple(self.inner_momentum * v + g for v, g in zip(vel, grads))
            lr = self.log_lrs_[t].exp()
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
        seg = self.checkpoint_every or self.unroll
        bounds = list(range(0, self.unroll, seg)) + [self.unroll]
        first_bp = 0 if self.backprop_steps is None else max(0, self.unroll - self.backprop_steps)
        # forward without graph through all segments but the last, keeping each segment's start
        x_d, y_d = (t.detach() for t in syn.materialize())
        states, state = [], (p0, tuple(torch.zeros_like(p) for p in p0))
        for a, b in zip(bounds[:-2], bounds[1:-1]):
            states.append(state)
            state = self._inner(net, state, range(a, b), x_d, y_d, fmt, False)
        states.append(state)
        idx = torch.randperm(len(real.train), generator=self.gen_)[:self.batch_real]
        xr, yr = real.train.x[idx].to(self.device_), real.train.y[idx].to(self.device_)
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
        self.optimizer_.step()
        return {"loss": float(loss.detach()), "inner_lr_mean": float(self.log_lrs_.detach().exp().mean())}

    def _learned(self, syn):
        return [p for p in syn.data_parameters() if p.requires_grad] + [self.log_lrs_]
