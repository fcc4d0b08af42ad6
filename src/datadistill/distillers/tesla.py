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
is exactly MTT's; tests check this). Memory: one step's activations, whatever ``syn_steps``.

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
from .base import DISTILLERS, ConfigError
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

    lr_y: float = 2.0
    label_epoch: int | None = None
    fast_norm: bool = True  # memory is per-step constant here; the benchmarks ran with it

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
        from .mtt import FlatStudent

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
        start, target = self.sample_segment()
        x_syn, y_syn = syn.materialize()
        plan = self.plan_batches(x_syn.shape[0], tuple(real.info.shape[-2:]))
        fmt, lr = syn.label_format, syn.lr.detach()
        xd, yd = x_syn.detach(), y_syn.detach()
        # pass 1: the unrolled trajectory without a graph; G = sum_i g_i
        theta, grad_sum = start, torch.zeros_like(start)
        for idx, aug in plan:
            with torch.no_grad():
                xb, yb = self.batch(xd, yd, idx, aug)
            g = self.inner_grad(theta.requires_grad_(True), xb, yb, fmt, create_graph=False)
            grad_sum += g
            theta = theta.detach() - lr * g
        loss = parameter_distance(theta, target, start)
        v = 2 * (theta - target) / ((start - target) ** 2).sum().clamp_min(1e-12)  # dL/dtheta_N
        # pass 2: replay; each step's graph lives only while its batch's gradient is pulled back
        data = [p for n, p in syn.named_parameters() if n != "lr"]
        acc = [torch.zeros_like(p) for p in data]
        theta = start
        for idx, aug in plan:
            xb, yb = self.batch(x_syn, y_syn, idx, aug)
            th = theta.detach().requires_grad_(True)
            g = self.inner_grad(th, xb, yb, fmt, create_graph=True)
            for a, d in zip(acc, torch.autograd.grad((g * v).sum() * -lr, data, allow_unused=True)):
                if d is not None:
                    a += d
            theta = th.detach() - lr * g.detach()
        params = data + [syn.lr]
        self.apply_grads(params, acc + [-(v * grad_sum).sum().reshape(syn.lr.shape)])
        return {"loss": float(loss.detach()), "syn_lr": float(lr)}
