"""LinBa — Deng & Russakovsky, "Remember the Past: Distilling Datasets into Addressable Memories
for Neural Networks" (NeurIPS'22); authors' code
princetonvisualai/RememberThePast-DatasetDistillation.

The summary is a memory: ``n_bases`` bases ``B`` shared by all classes and, per class, learned
coefficient vectors (addresses) ``a``; example ``i`` is ``x_i = up(a_i B)`` with the label of its
address (``synsets/linba.py``). The objective is DD's meta-loss, back-propagated through a long
unrolled inner loop of SGD *with momentum* on a freshly initialised network (survey eq. 4)::

    v_{t+1} = mu v_t + grad_theta l(S_t; theta_t),   theta_{t+1} = theta_t - eta v_{t+1},
    min_{B, a}  l(x_real, y_real; theta_T),   t = 0 .. T-1,   T = 150,

where ``S_t`` is a random mini-batch of ``batch_syn`` addresses per class (drawn anew every inner
step, as the reference's compressor minibatches), ``x_real`` a class-balanced batch of
``batch_real`` real images per class, eta = 0.01 and mu = 0.9 fixed (the reference does not learn
them; ``learn_lr=True`` learns one step size per inner step as DD does). The outer update is SGD
(lr 0.1, momentum 0.5) on the bases and coefficients after clipping their gradient to norm 2.

The unroll is ``DD``'s (subclassed: the same inner loop, meta-loss and segment-wise backward):
its memory is bounded by gradient checkpointing, keeping every ``checkpoint_every``-th inner
state and recomputing one segment at a time in the backward pass (exact gradients, memory
O(T / segment + segment) network states instead of T step graphs). The reference bounds it by
storing the weights of every step and recomputing each step's Hessian-vector product in reverse:
the same gradient, ``checkpoint_every=1``.

Published defaults (reference ``README.md`` command for CIFAR-10 with memory addressing,
``configs/compressors_bptt_interventions.yml``, ``utils/command_parser.py``): 150 inner steps, SGD
momentum 0.9 and lr 0.01 inside; 16 bases at half resolution (``downsample=2``); 32 addresses
per class per inner step; 64 real images per class; fixed budget (``--ipc`` is images per class
of storage, see ``synsets/linba.py``); the ConvNet-128-3 (instance norm) re-initialised every
outer step with PyTorch's default init; xavier-uniform initial bases and coefficients
(``init="noise"``); no augmentation; ``n_iters`` 500,000 outer steps. Deliberate choices beside
them are presets (``cpu-10min``, ``tiny``) or options (``learn_labels``: learned soft labels per
address, stored beside the memory; ``learn_lr``; ``init="real"``).

Left out: the reference's coefficient L2 term (it is added to the inner loss, which does not
depend on the network weights, so it never changes a gradient), random class subsets per outer
step (``task_sampler_nc``; the published runs use all classes) and its optional flip/rotate
"interventions" (augmentation off in the published command).
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError
from .base import DISTILLERS
from .dd import DD


class ClippedSGD(torch.optim.SGD):
    """SGD whose ``step`` first clips the global gradient norm of its parameters to
    ``max_norm`` (the reference's ``clip_grad_norm_`` before ``optimizer.step()``)."""

    def __init__(self, params, *, max_norm: float | None, **kw):
        super().__init__(params, **kw)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):
        if self.max_norm is not None:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        return super().step(closure)


@DISTILLERS.register("linba")
@dataclasses.dataclass(kw_only=True)
class LinBa(DD):
    """Deng & Russakovsky, NeurIPS'22 (LinBa): bases shared across classes, addressed by learned
    per-class coefficient vectors (x = up(a B)); min_{B, a} l(real; theta_T) with theta_T after
    T = 150 unrolled inner SGD steps with momentum 0.9 on random address minibatches (DD's
    checkpointed unroll, exact gradients in bounded memory); outer SGD 0.1 (momentum 0.5,
    gradient norm clipped to 2). ``--ipc`` is a fixed storage budget (images per class)."""

    name = "linba"
    synset_kind = "linba"
    presets = {
        # ~10 CPU-minutes on Fashion-MNIST (docs/linba.md: ~38 CPU-s per outer step at IPC 1
        # and 10): the long unroll with momentum kept, small per-step minibatches, 15 outer
        # steps from the real-data init
        "cpu-10min": {"iterations": 15, "unroll": 100, "batch_syn": 4, "batch_real": 16,
                      "init": "real"},
        "tiny": {"iterations": 2, "unroll": 4, "checkpoint_every": 2, "batch_syn": 2,
                 "batch_real": 4, "n_bases": 4, "model": "convnet_w32"},
    }

    iterations: int = 500_000  # config ``training.n_iters`` (the run script does not change it)
    model: str = "convnet"
    init: str = "noise"  # the reference: xavier-uniform bases and coefficients
    lr_data: float = 0.1  # outer SGD (``--compressor_lr``)
    outer_momentum: float = 0.5  # ``compressor_optim.momentum``
    clip_norm: float | None = 2.0  # ``clip_grad_norm_(..., max_norm=2)``; None: no clipping
    batch_real: int = 64  # real images per class per outer step (``n_queries``)
    dsa: bool = False  # the published command: ``interventions none``
    unroll: int | None = 150  # ``bptt_inner_steps``
    inner_lr: float = 0.01  # ``bptt_optim.lr``
    inner_momentum: float = 0.9  # ``--inner_momentum``
    learn_lr: bool = False  # the reference keeps eta fixed; True: one learned eta per step (DD)
    checkpoint_every: int | None = 10  # memory bound of the unroll (same gradients)
    n_bases: int = 16  # ``--n_basis``
    downsample: int = 2  # ``--downsample_scale`` (bases at H/2 x W/2)
    addresses: int | None = None  # per class; None: from the ipc budget (``--fixed_budget 1``)
    batch_syn: int | None = 32  # addresses per class per inner step; None: all of them
    learn_labels: bool = False  # learned soft labels per address (a library option)
    # DD's fields, set to the reference's behaviour
    images_per_step: int | None = None
    net_init: str = "default"
    init_mode: str = "random"
    lr_decay_every: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.images_per_step is not None:
            raise ConfigError("linba draws random address minibatches (batch_syn), "
                              "not DD's fixed image groups: leave images_per_step unset")
        for k in ("n_bases", "downsample", "batch_real"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("addresses", "batch_syn"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"{k} must be >= 1 (or None), got {v}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ConfigError(f"clip_norm must be > 0 (or None), got {self.clip_norm}")
        if not 0.0 <= self.outer_momentum < 1.0:
            raise ConfigError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")
        if self.inner_lr <= 0:
            raise ConfigError(f"inner_lr must be > 0, got {self.inner_lr}")
        if self.summary_kind() == "linba":
            own = self.default_synset_args("linba")
            clash = {k: v for k, v in (self.synset_args or {}).items() if k in own and v != own[k]}
            if clash:
                raise ConfigError(f"LinBa's memory layout is its own configuration: set "
                                  f"{', '.join(f'{k}={v!r}' for k, v in clash.items())} instead "
                                  f"of synset_args")

    @property
    def label_format(self) -> str:  # (the summary's: learned soft labels or hard ones)
        return "soft" if self.learn_labels else "hard"

    def default_synset_args(self, kind):
        """The memory's layout for LinBa's own summary kind (``synset_args`` may not contradict
        it: the fields are the method's configuration)."""
        if kind != "linba":
            return {}
        return {"n_bases": self.n_bases, "downsample": self.downsample,
                "addresses": self.addresses}

    def setup(self, real, syn):
        super().setup(real, syn)
        if not self.learn_lr:
            self.raw_lrs_.requires_grad_(False)

    def make_optimizer(self, syn):
        params = list(syn.data_parameters()) + ([self.raw_lrs_] if self.learn_lr else [])
        return ClippedSGD(params, lr=self.lr_data, momentum=self.outer_momentum,
                          max_norm=self.clip_norm)

    def _learned(self, syn):
        return [p for p in syn.data_parameters() if p.requires_grad] + (
            [self.raw_lrs_] if self.learn_lr else [])

    def _sample_addresses(self, syn) -> list[torch.Tensor | None]:
        """Per inner step, the examples it trains on: ``batch_syn`` random addresses of every
        class (sorted, class-major, as the reference's ``randperm(ipc)[:n_per_c].sort()``);
        ``[None]`` (every step on the whole summary) when no class has more than ``batch_syn``."""
        ids = syn.class_ids.cpu()
        per = [torch.nonzero(ids == c).flatten() for c in range(int(ids.max()) + 1)]
        if self.batch_syn is None or all(len(q) <= self.batch_syn for q in per):
            return [None]
        steps = []
        for _ in range(self.unroll_):
            pick = [q[torch.randperm(len(q), generator=self.gen_)[:self.batch_syn].sort()[0]]
                    for q in per]
            steps.append(torch.cat(pick).to(syn.class_ids.device))
        return steps

    def step(self, real, syn):
        self.groups_ = self._sample_addresses(syn)  # DD's inner step t trains on groups_[t]
        out = super().step(real, syn)
        if not self.learn_lr:
            out.pop("inner_lr_mean", None)
        return out

    def _real_batch(self, real):
        """``batch_real`` random real images of every class (the reference's ``n_queries``)."""
        xs, ys = [], []
        for c in range(real.info.num_classes):
            x = real.sample_class(c, self.batch_real, self.gen_)
            xs.append(x)
            ys.append(torch.full((len(x),), c, dtype=torch.long))
        return torch.cat(xs).to(self.device_), torch.cat(ys).to(self.device_)

    def _finalize_meta(self, syn, iteration, elapsed):
        super()._finalize_meta(syn, iteration, elapsed)
        if not self.learn_lr:  # fixed step size: nothing learned to record
            syn.meta.pop("dd_lrs", None)
