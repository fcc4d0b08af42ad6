"""KIP — Kernel Inducing Points (Nguyen, Chen & Lee, ICLR'21; Nguyen, Novak, Xiao & Lee, NeurIPS'21).

Survey eq. (5): the inner learner is kernel ridge regression on the summary, in closed form,

    min_{X_s, Y_s}  1/2 mean || Y_t - K_ts (K_ss + lambda' I)^{-1} Y_s ||^2,   lambda' = lambda tr(K_ss)/n,

the mean over the real batch's examples and classes, with (X_t, Y_t) a class-balanced random
batch of real examples (centred one-hot targets, one-hot - 1/K) each iteration and K an
infinite-width network kernel.

Defaults = the authors' KIP notebook (google-research ``kip/KIP.ipynb``, the code of the ICLR'21
paper): ``ARCHITECTURE='FC'``, ``DEPTH=1``, NTK parametrization with W_std sqrt(2) and b_std 0.1
(``kernel="fc_ntk"``, 1 hidden layer), ``get='ntk'``, Adam lr 0.04, ``LEARN_LABELS=False``,
``TARGET_BATCH_SIZE=5000`` drawn by ``class_balanced_sample``, lambda 1e-6 scaled by the trace,
real (class-balanced) initial support, centred labels, no augmentation; ~1000 steps ("train for
~1000 or more steps for full convergence"). Presets: ``fc`` = the ICLR'21 FC3 runs (depth 3);
``convnet`` = the NeurIPS'21 ConvNet kernel (``conv_pool_ntk``: 3 x [3x3 SAME conv, ReLU, 2x2 avg
pool], flatten, dense — RFAD's ``DCConvNetKernel``) with learned labels and lr 0.01 — the only
conv kernel among the published settings; ``cpu-conv`` = the notebook's 'Conv' architecture
(``conv_ntk``: 3 SAME convs with a flatten readout, no pooling; an option of the authors'
notebook, no paper result) on a CPU budget, the cheap conv kernel the library defaulted to
before the parity check.

Kernels (``kernel``): ``fc_ntk`` / ``fc_nngp`` — closed-form fully-connected ReLU kernels of
``kernel_depth`` hidden layers (``kernels/fc.py``); ``conv_ntk`` / ``conv_nngp`` — the exact
kernels of ``kernel_depth`` (default 3) 3x3 SAME ReLU convs with flatten readout (``kernels/conv.py``);
``conv_pool_ntk`` / ``conv_pool_nngp`` — the pooled ConvNet (``kernels/pool.py``; floor pooling,
28 -> 14 -> 7 -> 3), which chunks and checkpoints over pairs itself; ``convnet_entk`` — the
empirical NTK of a random finite ConvNet of width ``kernel_width`` (the library's ConvNet, with
instance norm and pooling), redrawn every iteration; ``rf_nngp`` — RFAD's random features.
The cost per iteration is O(|D_batch| n) kernel entries, each O(H W depth) for the exact conv
kernel, O(H W 4^depth) (~240x more) for the pooled one, and O(params) per example for the
empirical one (``bench/kip_timing.py``, ``bench/kip_pool_timing.py``).

Parity (``tests/test_parity_kernel.py``, fixture ``kip.npz`` from the notebook's cells with
neural-tangents): the FC (depth 1, 3), unpooled and pooled conv kernels (RGB and 1-channel), the
centred initial labels, the loss, its gradients and two Adam steps of the notebook's default
setting. Deliberate deviation kept as an option: the notebook's ``train()`` starts Adam's step
counter at 1 (its first step is bias-corrected as a second one); the library counts from 0.
"""
from __future__ import annotations

import dataclasses

import torch

from ..kernels import KERNELS, make_kernel
from ..kernels.krr import krr_solve
from ..perf import resident_is_live
from ..errors import ConfigError
from .base import DISTILLERS
from .krr_base import KRRDistiller


@DISTILLERS.register("kip")
@dataclasses.dataclass(kw_only=True)
class KIP(KRRDistiller):
    """Kernel Inducing Points: learn (X_s, Y_s) so that KRR on them predicts real labels."""

    name = "kip"
    #: real examples per kernel block (``RunOptions.chunk``: memory, not the result); pooled
    #: kernels on CPU run each iteration under ``perf.resident_is_live`` (``release_memory``), so
    #: that freed chunk graphs go back to the OS (with the tuned glibc setting the heap kept them:
    #: 10 GB RSS in K_ss instead of ~2.5)
    run_defaults = {"chunk": 64, "release_memory": True}
    presets = {
        "fc": {"kernel": "fc_ntk", "kernel_depth": 3},
        "convnet": {"kernel": "conv_pool_ntk", "kernel_depth": 3, "lr_data": 0.01,
                    "learn_labels": True},
        # the cheap unpooled conv kernel this preset always meant (the notebook's 'Conv')
        "cpu-conv": {"kernel": "conv_ntk", "kernel_depth": 3, "lr_data": 0.01, "learn_labels": True,
                     "iterations": 30, "batch_real": 250},
        "cpu-fc": {"kernel": "fc_ntk", "kernel_depth": 3, "iterations": 300, "batch_real": 2000},
        "tiny": {"iterations": 3, "batch_real": 64},
    }

    iterations: int = 1000
    lr_data: float = 0.04
    learn_labels: bool = False
    class_balanced: bool = True
    kernel: str = "fc_ntk"
    kernel_depth: int | None = None  # None: 3 conv layers / 1 FC hidden layer
    kernel_width: int | None = None  # only for convnet_entk (default 64)

    def __post_init__(self):
        super().__post_init__()
        if self.kernel not in KERNELS:
            raise ConfigError(f"unknown kernel {self.kernel!r}; known: {', '.join(KERNELS.names())}")

    def setup(self, real, syn):
        super().setup(real, syn)
        self.random_kernel_ = self.kernel in ("convnet_entk", "rf_nngp")
        self.kernel_ = None if self.random_kernel_ else self._make_kernel(real)

    def _make_kernel(self, real):
        return make_kernel(self.kernel, real.info, generator=self.gen_, device=self.device_,
                           depth=self.kernel_depth, width=self.kernel_width)

    def _support_kernel(self, kern, x_s):
        """K_ss in row blocks of ``RunOptions.chunk``, each recomputed in the backward pass
        (activation checkpointing): the exact conv kernel's per-pair maps never all coexist."""
        n, c = x_s.shape[0], self.run_.chunk
        if n <= c or not torch.is_grad_enabled() or getattr(kern, "self_chunking", False):
            return kern(x_s, x_s)
        from torch.utils.checkpoint import checkpoint
        return torch.cat([checkpoint(kern, x_s[i:i + c], x_s, use_reentrant=False)
                          for i in range(0, n, c)])

    def step(self, real, syn):
        if self.run_.release_memory and self.kernel.startswith("conv_pool"):
            with resident_is_live(threshold=64 << 20):
                return self._step(real, syn)
        return self._step(real, syn)

    def _step(self, real, syn):
        kern = self._make_kernel(real) if self.random_kernel_ else self.kernel_
        x_t, y_t = self.real_batch(real)
        x_s, y_s = syn.materialize()
        feat = getattr(kern, "features", None)  # feature-map kernels: K = gram(Phi, Phi)
        gram = getattr(kern, "gram", lambda a, b: a @ b.T)
        if feat is not None:
            phi = feat(x_s)
            k_ss, lead = gram(phi, phi), phi.detach().requires_grad_(True)
        else:
            phi, k_ss, lead = None, self._support_kernel(kern, x_s), None
        alpha = krr_solve(k_ss.double(), y_s.double(), self.reg)
        # stream the real batch in chunks: per chunk, grads reach X_s through K_ts (or detached
        # copies of alpha and Phi_s, whose own graph is back-propagated once at the end)
        a = alpha.detach().requires_grad_(True)
        self.optimizer_.zero_grad(set_to_none=True)
        total, correct, m = 0.0, 0, x_t.shape[0]
        c = self.run_.chunk
        for i in range(0, m, c):
            xc, yc = x_t[i:i + c], y_t[i:i + c]
            if feat is not None:
                with torch.no_grad():
                    phi_c = feat(xc)
                k_ts = gram(phi_c, lead)
            else:
                k_ts = kern(xc, x_s)
            pred = (k_ts.double() @ a).float()
            # this chunk's share of the mean over examples x classes (the notebook's loss)
            loss = 0.5 * ((pred - yc) ** 2).sum() / (m * yc.shape[1])
            loss.backward()
            total += float(loss.detach())
            correct += int((pred.argmax(1) == yc.argmax(1)).sum())
        if feat is not None:
            torch.autograd.backward([alpha, phi], [a.grad, lead.grad])
        else:
            alpha.backward(a.grad)
        self.optimizer_.step()
        return {"loss": total, "batch_acc": correct / m}
