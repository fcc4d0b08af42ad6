"""MTT — Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR'22.

Every iteration takes an expert (a network trained on the real data, ``experts.py``) at a random
epoch t < ``max_start_epoch``, trains a student from theta*_t for N = ``syn_steps`` SGD steps on
(mini-batches of) the synthetic set with a *learnable* step size alpha, and matches the expert
M = ``expert_epochs`` epochs later (eq. 10):

    theta_{i+1} = theta_i - alpha grad l(A(S_i); theta_i),   theta_0 = theta*_t
    L = || theta_N - theta*_{t+M} ||^2 / || theta*_t - theta*_{t+M} ||^2

minimised over the pixels (SGD ``lr_img``, momentum 0.5) and alpha (SGD ``lr_lr``, momentum 0.5,
initial value ``lr_teacher``) by backpropagating through all N unrolled steps (memory grows
linearly with N; TESLA, ``tesla.py``, removes that). The student is one flat parameter vector
evaluated with ``torch.func.functional_call``; each step applies a fresh DSA draw to its batch.

Published defaults (the reference ``distill.py``): 5000 iterations, lr_img 1000, lr_lr 1e-5,
lr_teacher 0.01, syn_steps 20, expert_epochs 3, max_start_epoch 25, DSA, real init, batch_syn =
the whole set; experts 100 x 50 epochs (SGD lr 0.01, no momentum, batch 256, DSA). The paper's
per-dataset table is in ``presets`` (``cifar10-ipc1`` ...; ``zca`` says whether the dataset must
be loaded ZCA-whitened, ``--zca``). MNIST/Fashion-MNIST have no published setting; the
``mnist-*``/``fmnist-*`` presets reuse the CIFAR-10 *non-ZCA* settings (same ConvNet, same
per-channel normalisation, easier data), see docs/trajectory-matching.md. ``cpu-ipc1`` /
``cpu-ipc10`` are the CPU budget (2 experts x 3 epochs, short runs).

Parity (tests/test_parity_mtt.py, docs/trajectory-matching.md): two outer iterations against
the authors' ``distill.py`` on a fixed case (loss, gradients, updated images and step size) agree
to 1e-6 in float64; ``--zca`` data is whitened as theirs (kornia ``ZCAWhitening(eps=0.1)`` on raw
[0, 1] pixels, ``data/zca.py``), the scale their ``lr_img`` values were tuned for.

Speed on CPU (``RunOptions``; auto turns the kernels on): ``fused`` runs the student's blocks with
the fused C++ kernels, including a kernel for the double backward the unroll needs (``perf/fused.py``): the
same function, 4.7 s per iteration at IPC 10, syn_steps 20 instead of 9.1-10.2 s, 82 % of the
machine's fp32 convolution throughput, and ~1.5 GiB less peak memory at 5 steps (BENCHMARKS.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..experts import ExpertConfig, ExpertTrajectories, load_experts
from ..models import create_model
from ..models.functional import FlatStudent
from ..objectives import parameter_distance
from ..runtime import AUTO, RunOptions, autocast
from ..train import label_loss
from ..errors import ConfigError
from .base import DISTILLERS
from .image import ImageDistiller

_TABLE = {  # MTT paper, appendix hyperparameter table (ConvNet-128-3)
    "cifar10-ipc1": dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=1000.0,
                         lr_lr=1e-7, lr_teacher=0.01, zca=True),
    "cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1e5,
                          lr_lr=1e-5, lr_teacher=0.01, zca=True),
    "cifar10-ipc50": dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0,
                          lr_lr=1e-5, lr_teacher=0.01, zca=False),
    "cifar100-ipc1": dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0,
                          lr_lr=1e-5, lr_teacher=0.01, zca=True),
    "cifar100-ipc10": dict(syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000.0,
                           lr_lr=1e-5, lr_teacher=0.01, zca=False),
    "cifar100-ipc50": dict(syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000.0,
                           lr_lr=1e-5, lr_teacher=0.01, zca=True, batch_syn=125),
}
# no published setting: the CIFAR-10 non-ZCA choices (see module docstring)
for _ds in ("mnist", "fmnist"):
    _TABLE[f"{_ds}-ipc1"] = dict(syn_steps=50, expert_epochs=2, max_start_epoch=2,
                                 lr_img=1000.0, lr_lr=1e-7, lr_teacher=0.01, zca=False)
    _TABLE[f"{_ds}-ipc10"] = dict(syn_steps=30, expert_epochs=2, max_start_epoch=20,
                                  lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=False)
    _TABLE[f"{_ds}-ipc50"] = dict(syn_steps=30, expert_epochs=2, max_start_epoch=40,
                                  lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=False)
_CPU_EXPERTS = dict(num_experts=2, train_epochs=3, expert_epochs=2, max_start_epoch=2)
PRESETS: dict[str, dict[str, Any]] = {
    **_TABLE,
    "cpu-ipc1": dict(_CPU_EXPERTS, iterations=100, syn_steps=20, lr_img=1000.0, lr_lr=1e-7),
    "cpu-ipc10": dict(_CPU_EXPERTS, iterations=40, syn_steps=20, lr_img=1000.0, lr_lr=1e-5),
    "tiny": dict(iterations=2, syn_steps=3, expert_epochs=1, max_start_epoch=1, num_experts=1,
                 train_epochs=2, model="convnet_w32", lr_img=100.0),
}


def _row_major_strides(shape) -> tuple[int, ...]:
    strides, n = [], 1
    for size in reversed(shape):
        strides.append(n)
        n *= size
    return tuple(reversed(strides))


@DISTILLERS.register("mtt")
@dataclasses.dataclass(kw_only=True)
class MTT(ImageDistiller):
    """Matching Training Trajectories (Cazenavette et al., CVPR'22): N student steps from an
    expert's epoch-t parameters on the summary, with a learnable step size, must land on the
    expert's epoch t+M parameters; loss ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2
    backpropagated through the whole unrolled trajectory."""

    name = "mtt"
    presets = PRESETS

    iterations: int = 5000
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    batch_syn: int | None = None
    zca: bool | None = None  # presets: whether the dataset must be ZCA-whitened (None: either)
    # experts (reference buffer.py names); trained once, cached, reused by every run
    num_experts: int = 100
    train_epochs: int = 50
    expert_lr: float = 0.01
    batch_train: int = 256
    expert_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        for k in ("syn_steps", "expert_epochs", "max_start_epoch", "num_experts", "train_epochs"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.max_start_epoch - 1 + self.expert_epochs > self.train_epochs:
            raise ConfigError(
                f"max_start_epoch - 1 + expert_epochs = {self.max_start_epoch - 1 + self.expert_epochs}"
                f" exceeds the experts' train_epochs ({self.train_epochs})")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ConfigError(f"batch_syn must be >= 1 or None, got {self.batch_syn}")
        if self.lr_teacher <= 0:
            raise ConfigError(f"lr_teacher (initial synthetic step size) must be > 0, "
                              f"got {self.lr_teacher}")

    # -- experts ----------------------------------------------------------------------------------
    def expert_config(self) -> ExpertConfig:
        return ExpertConfig(model=self.model, num_experts=self.num_experts,
                            train_epochs=self.train_epochs, lr_teacher=self.expert_lr,
                            batch_train=self.batch_train, dsa=self.dsa,
                            dsa_strategy=self.dsa_strategy, seed=self.expert_seed)

    def experts(self, real) -> ExpertTrajectories:
        """The cached expert trajectories (trained now if missing, in ``RunOptions.workers``
        processes, with the run's fused kernels)."""
        if getattr(self, "run_", None) is None:
            self.use_run(None)
        return load_experts(real, self.expert_config(), device=self.device_,
                            workers=self.run_.workers, fused=self.run_.fused)

    def use_run(self, run: RunOptions | None) -> RunOptions:
        """As ``Distiller.use_run``; ``torch.compile`` of the student's inner gradient (compiled
        once per label format; the unroll back-propagates through the compiled graph) cannot take
        the custom norm (``fast_norm``: its autograd function is not a ``torch.func`` target), so an
        auto ``fast_norm`` turns off under ``compile``; asking for both is an error."""
        asked = run if run is not None else RunOptions()
        resolved = super().use_run(run)
        if resolved.compile and resolved.fast_norm:
            if asked.fast_norm != AUTO:
                raise ConfigError("compile=True and fast_norm=True cannot be combined: the custom "
                                  "norm's autograd function does not support torch.func.grad")
            self.run_ = resolved.replace(fast_norm=False)
        return self.run_

    # -- summary and optimizers -------------------------------------------------------------------
    def init_synset(self, real, *, ipc=None, **budget):
        syn = super().init_synset(real, ipc=ipc, **budget)
        syn.lr = nn.Parameter(torch.tensor(float(self.lr_teacher)))
        return syn

    def make_optimizer(self, syn):
        if syn.lr is None:
            raise ConfigError(f"{self.name} learns a step size: create the summary with "
                              f"{self.name}'s init_synset (it has no lr)")
        groups = [{"params": [p for p in syn.data_parameters()], "lr": self.lr_img}]
        groups.append({"params": [syn.lr], "lr": self.lr_lr})
        return torch.optim.SGD(groups, lr=self.lr_img, momentum=0.5)

    def setup(self, real, syn):
        if self.zca is not None and bool(real.info.zca) != self.zca:
            raise ConfigError(f"these settings expect {'ZCA-whitened' if self.zca else 'raw'} "
                              f"data; load the dataset {'with' if self.zca else 'without'} --zca "
                              f"(or set zca=None)")
        super().setup(real, syn)
        self.experts_ = self.experts(real)
        # (a compiled torch.func graph takes the ConvNet's reference path: no fused kernels)
        net = create_model(self.model, real.info, device=self.device_,
                           fused=self.run_.fused and not self.run_.compile).train()
        self.student_ = FlatStudent(net.requires_grad_(False), self.run_.fast_norm)
        if self.student_.num_params != self.experts_.num_params:
            raise ConfigError("expert trajectories do not match the model's parameters")
        self.compiled_grads_: dict[str, Any] = {}

    # -- one iteration ------------------------------------------------------------------------------
    def sample_segment(self) -> tuple[Tensor, Tensor]:
        """(theta*_t, theta*_{t+M}) of a random expert, t uniform in [0, max_start_epoch)."""
        e = int(torch.randint(len(self.experts_), (1,), generator=self.gen_))
        t = int(torch.randint(self.max_start_epoch, (1,), generator=self.gen_))
        return (self.experts_.params_at(e, t).to(self.device_),
                self.experts_.params_at(e, t + self.expert_epochs).to(self.device_))

    def plan_batches(self, n: int, size) -> list[tuple[Tensor, Any]]:
        """The N mini-batches (indices, DSA parameters) of one unroll, as the reference: chunks
        of a random permutation of size ``batch_syn``, refilled when used up."""
        bs = n if self.batch_syn is None else min(self.batch_syn, n)
        plan, chunks = [], []
        for _ in range(self.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(n, generator=self.gen_).split(bs))
            idx = chunks.pop()
            aug = self.dsa_.sample(len(idx), self.gen_, size) if self.dsa_ is not None else None
            plan.append((idx.to(self.device_), aug))
        return plan

    def inner_grad(self, theta: Tensor, x: Tensor, y: Tensor, label_format: str, *,
                   create_graph: bool) -> Tensor:
        """Gradient of the student's training loss on one (augmented) batch at ``theta``."""
        if self.run_.compile:
            fn = self.compiled_grads_.get(label_format)
            if fn is None:
                fn = self.compiled_grads_[label_format] = self._compiled_grad(label_format)
            if x.stride() != _row_major_strides(x.shape):
                # DSA's transforms leave size-1 channels with other strides; one layout keeps
                # the compiled graph from recompiling (a differentiable copy)
                x = x.clone(memory_format=torch.contiguous_format)
            if create_graph:
                return fn(theta, x, y)
            with torch.no_grad():  # no graph for the outer backward (torch.func.grad runs)
                return fn(theta, x, y)
        loss = self.student_loss(theta, x, y, label_format)
        return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]

    def student_loss(self, theta: Tensor, x: Tensor, y: Tensor, label_format: str) -> Tensor:
        """The student's training loss on one (augmented) batch at the flat parameters."""
        with autocast(self.device_, self.run_.precision):
            out = self.student_(theta, x)
        return label_loss(out, y, label_format)

    def _compiled_grad(self, label_format: str):
        """``(theta, x, y) -> grad_theta loss`` as one compiled graph (``torch.func.grad``);
        autograd differentiates through it (aot_autograd's joint graph), so the unroll keeps
        its exact second-order gradient."""
        from torch.func import grad

        def loss(theta, x, y):
            return self.student_loss(theta, x, y, label_format)

        return torch.compile(grad(loss), dynamic=False)

    def batch(self, x_syn, y_syn, idx, aug):
        return self.augment(x_syn[idx], aug), y_syn[idx]

    def step(self, real, syn):
        start, target = self.sample_segment()
        x_syn, y_syn = syn.materialize()
        plan = self.plan_batches(x_syn.shape[0], tuple(real.info.shape[-2:]))
        params = [p for p in syn.parameters()]
        theta = start.requires_grad_(True)
        for idx, aug in plan:
            xb, yb = self.batch(x_syn, y_syn, idx, aug)
            g = self.inner_grad(theta, xb, yb, syn.label_format, create_graph=True)
            theta = theta - syn.lr * g
        loss = parameter_distance(theta, target, start.detach())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.apply_grads(params, grads)
        return {"loss": float(loss.detach()), "syn_lr": float(syn.lr.detach())}

    def apply_grads(self, params, grads) -> None:
        self.optimizer_.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        self.optimizer_.step()
