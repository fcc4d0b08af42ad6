"""Differentially private distillation: DM and gradient matching (DC) whose only contact with
the real data is a clipped, noised sum over a Poisson sample (the survey's §4).

Chen, Kerkouche & Fritz, "Private Set Generation with Discriminative Information" (NeurIPS
2022): gradient matching where the real-data gradient is the DP-SGD release — per-example
gradients clipped to norm ``C``, summed, plus ``N(0, sigma^2 C^2 I)`` — so the summary is a
post-processing of a DP mechanism. The same release applied to DM's statistics (per-example
embeddings clipped to ``C`` on both sides, the noisy sum over the real sample divided by its
expected size) gives ``dp-dm``. One class's query touches only that class's examples, so one
step (all classes) is one sampled Gaussian mechanism with the largest per-class sampling rate
``q = max_c min(1, batch_real / n_c)``; DM spends one step per iteration, DC ``outer_loop``.
``accounting.py`` turns (q, sigma, steps) into (epsilon, delta) by the RDP accountant (opacus'
when installed); ``epsilon=...`` calibrates ``sigma`` for the whole run, ``noise_multiplier``
(with ``epsilon=None``) fixes it and reports the epsilon spent. The summary's metadata records
``privacy``: epsilon, delta, noise multiplier, clip norm, sampling rate, steps, accountant.

What keeps it private: the summary starts from noise (``init="real"`` would publish real
images and is refused), no batch norm (its statistics would see the real batch), and a run
cannot be extended past the iterations its noise was calibrated for.

These methods are subclasses registered from here (``dp-dm``, ``dp-dc``); the method files are
unchanged. The membership-inference attack that measures what summaries leak is ``mia.py``;
``datadistill app privacy`` is the command line (``cli/apps/privacy.py``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..distillers.base import DISTILLERS
from ..distillers.dc import DC
from ..distillers.dm import DM
from ..errors import ConfigError
from ..models import create_model, has_batchnorm, init_parameters
from ..objectives import class_means, mean_embedding_distance
from ..runtime import autocast
from ..train import label_loss
from . import accounting


def clip_rows(v: Tensor, clip: float) -> Tensor:
    """Each row scaled to norm at most ``clip`` (differentiable)."""
    norms = v.flatten(1).norm(dim=1).clamp_min(1e-12)
    return v * (clip / norms).clamp(max=1.0).view(-1, *([1] * (v.dim() - 1)))


@dataclasses.dataclass(kw_only=True)
class DPMixin:
    """The DP release and its accounting, shared by ``dp-dm`` and ``dp-dc``."""

    epsilon: float | None = 10.0
    delta: float = 1e-5
    noise_multiplier: float | None = None  # fixed noise (with epsilon=None): epsilon is reported
    clip: float = 1.0
    max_noise_multiplier: float = 100.0
    accountant: str = "auto"
    init: str = "noise"

    def __post_init__(self):
        super().__post_init__()
        if self.init == "real":
            raise ConfigError(f"{self.name}: init='real' would publish real training images; a "
                              f"DP summary starts from noise")
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError(f"{self.name}: give epsilon (the noise is calibrated) or "
                              f"noise_multiplier with epsilon=None (the epsilon is reported)")
        if self.epsilon is not None and not self.epsilon > 0:
            raise accounting.PrivacyBudgetError(f"epsilon must be > 0, got {self.epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"clip must be > 0, got {self.clip}")
        accounting.resolve_backend(self.accountant)

    def queries_per_iteration(self) -> int:
        return 1

    def resolve_clip(self, real, syn) -> float:
        return float(self.clip)

    def calibrate(self, real, syn) -> dict[str, Any]:
        """Per-class sampling rates, clip norm, noise multiplier and the privacy record."""
        self.clip_ = self.resolve_clip(real, syn)
        counts = real.class_counts()
        if min(counts) == 0:
            raise ConfigError(f"{self.name}: a class has no training examples")
        self.rates_ = [min(1.0, self.batch_real / n) for n in counts]
        self.counts_ = counts
        q = max(self.rates_)
        steps = self.iterations * self.queries_per_iteration()
        backend = accounting.resolve_backend(self.accountant)
        if self.epsilon is not None:
            sigma = accounting.noise_multiplier_for(self.epsilon, self.delta, q, steps,
                                                    max_noise=self.max_noise_multiplier,
                                                    backend=backend)
        else:
            sigma = float(self.noise_multiplier)
        self.sigma_ = sigma
        self.privacy_ = {
            "epsilon": accounting.epsilon(sigma, q, steps, self.delta, backend) if steps else 0.0,
            "target_epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": sigma,
            "clip": self.clip_, "sample_rate": q, "steps": steps, "accountant": f"RDP ({backend})",
            "mechanism": "sampled Gaussian, Poisson sampling per class, add/remove adjacency"}
        return self.privacy_

    def poisson_sample(self, real, c: int) -> Tensor:
        """Each training example of class ``c`` independently with probability ``rates_[c]``."""
        idx = real.class_indices(c)
        keep = torch.rand(len(idx), generator=self.gen_) < self.rates_[c]
        return real.train.x[idx[keep].to(real.train.x.device)]

    def noisy_mean(self, rows: Tensor, c: int, shape: Sequence[int]) -> Tensor:
        """(sum of the rows clipped to ``clip`` + N(0, sigma^2 clip^2)) / expected sample size."""
        total = clip_rows(rows, self.clip_).sum(0) if rows.shape[0] else \
            torch.zeros(shape, device=self.device_)
        noise = torch.randn(tuple(shape), generator=self.gen_).to(total.device)
        return (total + self.sigma_ * self.clip_ * noise) / (self.rates_[c] * self.counts_[c])

    def extra_meta(self) -> dict[str, Any]:
        return {**super().extra_meta(), "privacy": getattr(self, "privacy_", None)}

    def _check_resumable(self, ck, workdir) -> None:
        super()._check_resumable(ck, workdir)
        old = (ck.get("params") or {}).get("iterations")
        if old != self.iterations:
            raise ConfigError(f"{self.name}: the run in {workdir} was calibrated for {old} "
                              f"iterations; extending a DP run would spend more privacy than "
                              f"its metadata states")

    def _no_batchnorm(self, real) -> None:
        if has_batchnorm(create_model(self.model, real.info)):
            raise ConfigError(f"{self.name}: {self.model} has batch norm, whose statistics "
                              f"would see the real batch without noise; use an instance-norm "
                              f"network (convnet)")


@DISTILLERS.register("dp-dm")
@dataclasses.dataclass(kw_only=True)
class DPDM(DPMixin, DM):
    """DP distribution matching (DM with the DP-SGD release of Chen et al., NeurIPS'22):
    min_S sum_c || (sum_{x in B_c} clip(phi(A(x))) + N(0, s^2 C^2 I)) / (q_c n_c) - mean_{s in S_c}
    clip(phi(A(s))) ||^2, B_c a Poisson sample of class c at rate q_c, phi a random network."""

    name = "dp-dm"
    presets = {"tiny": {"iterations": 3, "batch_real": 16}, "cpu-200": {"iterations": 200}}

    #: None: the median embedding norm of the (noise-initialised, data-independent) summary
    #: under a random network; instance-norm ConvNets give every input about the same norm, so
    #: clipping there changes little but bounds the sensitivity
    clip: float | None = None

    def setup(self, real, syn):
        self._no_batchnorm(real)
        super().setup(real, syn)
        self.calibrate(real, syn)

    def resolve_clip(self, real, syn) -> float:
        if self.clip is not None:
            return float(self.clip)
        with torch.no_grad():
            net = self.make_model(self.model, real.info, generator=torch.Generator().manual_seed(
                self.seed)).train()
            x, _ = syn.materialize()
            return float(net.embed(x.detach().to(self.device_)).float().norm(dim=1).median())

    def step(self, real, syn):
        k, dev = real.info.num_classes, self.device_
        init_parameters(self.net_, self.gen_)
        self.net_.train()
        x_syn, _ = syn.materialize()
        ids = syn.class_ids
        embed = lambda x: self.embed_(x).float()  # noqa: E731
        xs, syn_ids, real_means = [], [], []
        for c in range(k):
            p = self.sample_augment(real)
            sel = torch.nonzero(ids == c).flatten()
            xs.append(self.augment(x_syn[sel], p))
            syn_ids.append(ids[sel])
            xr = self.poisson_sample(real, c).to(dev)
            with torch.no_grad(), autocast(dev, self.run_.precision):
                chunk = self.chunk_ or max(1, xr.shape[0])
                rows = [embed(self.augment(xr[i:i + chunk], p)) for i in range(0, xr.shape[0], chunk)]
            real_means.append(rows)
        with autocast(dev, self.run_.precision):
            es = clip_rows(embed(torch.cat(xs)), self.clip_)
        dim = es.shape[1]
        mr = torch.stack([self.noisy_mean(torch.cat(r) if r else es.new_zeros(0, dim), c, (dim,))
                          for c, r in enumerate(real_means)])
        loss = mean_embedding_distance(mr, class_means(es, torch.cat(syn_ids), k))
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        return {"loss": float(loss.detach())}


@DISTILLERS.register("dp-dc")
@dataclasses.dataclass(kw_only=True)
class DPDC(DPMixin, DC):
    """DP gradient matching (Chen et al., NeurIPS'22): DC's min_S sum_t sum_c D(g_c, grad
    l(S_c; theta_t)) with the real gradient released as g_c = (sum_{x in B_c} clip(grad l(x;
    theta_t)) + N(0, s^2 C^2 I)) / (q_c n_c), per-example clipping, B_c Poisson at rate q_c."""

    name = "dp-dc"
    presets = {"tiny": {"iterations": 2, "batch_real": 16, "outer_loop": 2, "inner_loop": 2},
               "cpu-200": {"iterations": 200}}

    def queries_per_iteration(self) -> int:
        return self.outer_

    def setup(self, real, syn):
        self._no_batchnorm(real)
        super().setup(real, syn)
        self.real_grad_ = None  # the real side is the per-example DP release below
        self.template_ = create_model(self.model, real.info, device=self.device_, fused=False)
        self.calibrate(real, syn)

    def class_batches(self, real, syn):
        dev = self.device_
        x_syn, y_syn = syn.materialize()
        ids = syn.class_ids
        for c in range(real.info.num_classes):
            sel = torch.nonzero(ids == c).flatten()
            if sel.numel() == 0:
                continue
            xr = self.poisson_sample(real, c).to(dev)
            yr = torch.full((xr.shape[0],), c, device=dev, dtype=torch.long)
            p = self.sample_augment(real)
            self.class_ = c
            xr = self.augment(xr, p) if xr.shape[0] else xr
            yield xr, yr, self.augment(x_syn[sel], p), y_syn[sel]

    def loss_gradient(self, net, params, x, y, label_format="hard", create_graph=False):
        if create_graph:  # the synthetic side: DC's own
            return super().loss_gradient(net, params, x, y, label_format, create_graph)
        from torch.func import functional_call, grad, vmap

        names = self.names_
        shapes = [p.shape for p in params]
        if x.shape[0] == 0:
            rows = torch.zeros(0, sum(p.numel() for p in params), device=self.device_)
        else:
            pd = {n: p.detach() for n, p in zip(names, params)}

            def one(pd, xi, yi):
                with autocast(self.device_, self.run_.precision):
                    out = functional_call(self.template_, pd, (xi[None],))
                return label_loss(out, yi[None])

            g = vmap(grad(one), in_dims=(None, 0, 0))(pd, x, y)
            rows = torch.cat([g[n].float().flatten(1) for n in names], dim=1)
        flat = self.noisy_mean(rows, self.class_, (rows.shape[1],))
        return [t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes)]
