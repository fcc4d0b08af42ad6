"""TESLA — Cui et al., "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory",
ICML'23.

The MTT objective (``mtt.py``) with the unrolled gradient computed in memory that does not grow
with the number of steps, plus learnable soft labels. With g_i = grad l(A(S_i), Y_i; theta_i)
the student ends at theta_N = theta_0 - alpha * sum_i g_i, so the L2 loss
L = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2 has, with v = dL/dtheta_N,

    dL/d(S_i, Y_i) = -alpha v^T dg_i/d(S_i, Y_i),      dL/dalpha = -v^T sum_i g_i,

computed in two passes: (1) run the N steps without a graph, accumulating sum_i g_i (hence
theta_N, L and v); (2) replay the same batches and augmentations from theta_0, rebuilding one
step's graph at a time, pulling -alpha v back onto that step's batch and dropping the graph.
As in the paper's algorithm, theta_i is held fixed in pass (2): the terms through which a batch
changes the *later* parameters theta_{j>i} are not propagated (for syn_steps = 1 the gradient
is exactly MTT's, and for any N it is exactly autograd's gradient of this estimator; tests
check both).

Memory: one step's activations, whatever ``syn_steps``. The O(1) state (theta, sum_i g_i, the
accumulated gradients of the summary, v) is allocated before the loops and updated in place;
everything a step creates is a local of ``_unroll_step``/``_replay_step`` and is freed when the
step returns (a test checks that no tensor created in a step outlives it). That is not enough
for *resident* memory to be flat: with the library's allocator setting (``tune_allocator``:
one glibc heap, never trimmed, no mmap) the heap's high-water mark crept up with the number of
steps (Fashion-MNIST IPC 10: peak RSS 1.83 GiB at 5 steps, 2.19 GiB at 40) while the bytes in
use at every step boundary were identical. So by default (``release_memory``) the unroll runs under
``perf.resident_is_live``: blocks of >= 1 MiB get their own mapping, returned when freed,
and free heap pages are released after every step; resident memory then follows live memory
(docs/trajectory-matching.md has the numbers).

Soft labels: ``y`` holds logits (targets are their softmax), initialised to the predictions of
an expert (expert 0 at epoch ``label_epoch``, default its last) on the initial images, and
learned with SGD ``lr_y`` (momentum 0.5); ``lr_y = 0`` keeps the expert's labels fixed.
Defaults and presets are MTT's (the paper reuses MTT's per-dataset settings); ``lr_y`` = 2 is
our choice, not a published value.
"""
from __future__ import annotations

import dataclasses

import torch

from ..objectives import parameter_distance
from ..perf import release_free_memory, resident_is_live
from ..errors import ConfigError
from .base import DISTILLERS
from .mtt import MTT, PRESETS


@DISTILLERS.register("tesla")
@dataclasses.dataclass(kw_only=True)
class TESLA(MTT):
    """TESLA (Cui et al., ICML'23): MTT's loss ||theta_N - theta*_{t+M}||^2 /
    ||theta*_t - theta*_{t+M}||^2 with theta_N = theta_t - alpha sum_i g_i, differentiated batch by
    batch in constant memory (two passes), and soft labels initialised from an expert."""

    name = "tesla"
    label_format = "soft"
    presets = {**PRESETS, "tiny": {**PRESETS["tiny"], "lr_y": 2.0}}
    #: ``fast_norm``: memory is per-step constant here (no effect under the fused kernels, which
    #: compute the whole norm/ReLU/pool block). ``release_memory``: the unroll runs under
    #: ``perf.resident_is_live`` (large blocks mmapped, free heap pages released after every step)
    #: so that resident memory follows the constant live memory; False keeps the fast allocator
    #: setting, whose resident peak creeps with syn_steps.
    run_defaults = {"fast_norm": True, "release_memory": True}

    lr_y: float = 2.0
    label_epoch: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.lr_y < 0:
            raise ConfigError(f"lr_y must be >= 0, got {self.lr_y}")
        if self.label_epoch is not None and not 0 <= self.label_epoch <= self.train_epochs:
            raise ConfigError(f"label_epoch must be in [0, {self.train_epochs}], got {self.label_epoch}")

    def init_synset(self, real, *, ipc=None, **budget):
        """Real (or noise) images; labels = an expert's logits on them."""
        syn = super().init_synset(real, ipc=ipc, **budget)
        from ..models import create_model
        from ..models.functional import FlatStudent

        experts = self.experts(real)
        epoch = self.train_epochs if self.label_epoch is None else self.label_epoch
        student = FlatStudent(create_model(self.model, real.info).eval())
        with torch.no_grad():
            logits = student(experts[0][epoch].clone(), syn.x.detach().cpu())
            syn.y.copy_(logits.float())
        return syn

    def make_optimizer(self, syn):
        if syn.lr is None or syn.label_format != "soft":
            raise ConfigError("tesla needs a summary with soft labels and a step size; create it "
                              "with tesla's init_synset")
        groups = [{"params": [p], "lr": {"y": self.lr_y, "lr": self.lr_lr}.get(n, self.lr_img)}
                  for n, p in syn.named_parameters()]
        return torch.optim.SGD(groups, lr=self.lr_img, momentum=0.5)

    def step(self, real, syn):
        if self.run_.release_memory:
            with resident_is_live():
                return self._step(real, syn)
        return self._step(real, syn)

    def _step(self, real, syn):
        start, target = self.sample_segment()
        x_syn, y_syn = syn.materialize()
        plan = self.plan_batches(x_syn.shape[0], tuple(real.info.shape[-2:]))
        fmt, lr = syn.label_format, float(syn.lr.detach())
        # O(1) state, allocated before the loops and updated in place; each step's tensors are
        # locals of _unroll_step / _replay_step, so nothing a step allocates outlives it
        theta, grad_sum = start.clone(), torch.zeros_like(start)
        xd, yd = x_syn.detach(), y_syn.detach()
        for idx, aug in plan:  # pass 1: the trajectory without a graph, G = sum_i g_i
            self._unroll_step(theta, grad_sum, xd, yd, idx, aug, fmt, lr)
            self._release()
        loss = parameter_distance(theta, target, start)
        v = (theta - target).mul_(2 / ((start - target) ** 2).sum().clamp_min(1e-12))  # dL/dtheta_N
        w = v * -lr
        # pass 2: replay from theta_0, pulling w = -alpha dL/dtheta_N back through each step's
        # graph onto the *materialized* summary (then one backward into any parametrization)
        ins = [t.detach().requires_grad_(t.is_floating_point()) for t in (xd, yd)]
        acc = [torch.zeros_like(t) if t.requires_grad else None for t in ins]
        theta.copy_(start)
        for idx, aug in plan:
            self._replay_step(theta, acc, ins, w, idx, aug, fmt, lr)
            self._release()
        outs = [(o, a) for o, a in zip((x_syn, y_syn), acc) if a is not None and o.requires_grad]
        data = [p for n, p in syn.named_parameters() if n != "lr"]
        grads = torch.autograd.grad([o for o, _ in outs], data, [a for _, a in outs],
                                    allow_unused=True)
        lr_grad = -(v * grad_sum).sum().reshape(syn.lr.shape)  # dL/dalpha = -v.G
        self.apply_grads(data + [syn.lr], list(grads) + [lr_grad])
        return {"loss": float(loss), "syn_lr": lr}

    def _release(self) -> None:
        if self.run_.release_memory:
            release_free_memory()

    def _unroll_step(self, theta, grad_sum, x, y, idx, aug, fmt, lr) -> None:
        """theta <- theta - alpha g_i and G += g_i, in place, no graph kept."""
        with torch.no_grad():
            xb, yb = self.batch(x, y, idx, aug)
        g = self.inner_grad(theta.detach().requires_grad_(True), xb, yb, fmt, create_graph=False)
        with torch.no_grad():
            grad_sum.add_(g)
            theta.sub_(g, alpha=lr)

    def _replay_step(self, theta, acc, ins, w, idx, aug, fmt, lr) -> None:
        """acc += w^T dg_i/d(x, y) at the recomputed theta_i (graph of this step only), then
        theta <- theta - alpha g_i in place."""
        xb, yb = self.batch(*ins, idx, aug)
        g = self.inner_grad(theta.detach().requires_grad_(True), xb, yb, fmt, create_graph=True)
        live = [i for i, t in enumerate(ins) if t.requires_grad]
        pulled = torch.autograd.grad(g, [ins[i] for i in live], grad_outputs=w, allow_unused=True)
        for i, d in zip(live, pulled):
            if d is not None:
                acc[i].add_(d)
        with torch.no_grad():
            theta.sub_(g, alpha=lr)
