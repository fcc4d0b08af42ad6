"""HaBa — Liu, Wang, Yang, Ye & Wang, "Dataset Distillation via Factorization", NeurIPS'22.

The summary is bases + hallucinators (``synsets/haba.py``); the objective is MTT's trajectory
matching (``mtt.py``, reused by subclassing) on hallucinated images plus an adversarial
contrastive pair of terms with a feature extractor ("adversary") trained alongside:

1. Unroll: N = ``syn_steps`` student SGD steps from an expert's epoch-t parameters, step i on a
   mini-batch of bases (``batch_syn``; all of them by default) passed through *one* randomly
   chosen hallucinator j_i, with the learned step size alpha::

       theta_{i+1} = theta_i - alpha grad l(A(H_{j_i}(B_i)); theta_i)
       L_match = || theta_N - theta*_{t+M} ||^2 / || theta*_t - theta*_{t+M} ||^2

2. Adversarial term on the summary (the next mini-batch of bases B', two distinct random
   hallucinators j != j', extractor features f)::

       L_adv = lambda_adv * mean_b (cos(f(H_j(b)), f(H_j'(b))) + 1) / 2

   L_match + L_adv is minimised over the bases (SGD ``lr_img``), the hallucinators (SGD
   ``lr_style``; both momentum 0.95) and alpha (SGD ``lr_lr``, momentum 0.9, clipped below at
   ``min_syn_lr``) — jointly, one backward, one step each.
3. Then the extractor (its own SGD, ``lr_extractor`` 0.001, momentum 0.9) learns, on another
   mini-batch of the *updated* summary (two distinct hallucinators again), to classify the
   hallucinated images and to pull the two views of a base together::

       L_ext = lambda_cls CE(g(f(x)), y) + lambda_likeli mean_b (1 - cos(f(H_j b), f(H_j' b))) / 2
               + lambda_contrast SupCon([f(H_j b)/|.|, f(H_j' b)/|.|], y; tau 0.07)

   so the hallucinators are pushed to make the views of one base look different to a network
   trained to find them alike (the paper's adversarial contrastive constraint). The extractor is
   the authors' ``contrastive_loss.Extractor``: 3 x (conv 3x3 128, instance norm (GroupNorm
   128 groups, affine), ReLU, avg-pool 2) + linear; padding 3 for 1-channel data (their code's
   1-channel branch: 28 -> 32 pixels), 1 otherwise.

Published settings (Huage001/DatasetFactorization ``run_cifar10_ipc*_style5.sh`` and
``distill_fac.py``): 5 hallucinators, 15,000 iterations, lr_img 100, lr_style 100, momentum 0.95,
lambda_adv 0.1 (``--lambda_club_content``), lambda_cls 1, lambda_likeli 0.1, lambda_contrast
0.1, real init, DSA, ZCA on CIFAR; per IPC (``presets`` ``cifar10-ipc1/10/50``): syn_steps
50/30/30, expert_epochs 2, max_start_epoch 2/20/20, lr_lr 1e-7/1e-5/1e-5, lr_teacher
0.01/0.001/0.01. The defaults are the CIFAR-10 IPC-10 script. Experts as MTT's (the same
``buffer.py``; the library's expert cache is shared with MTT/TESLA). No MNIST-like setting is
published: ``fmnist-ipc1``/``fmnist-ipc10`` take the CIFAR-10 script of the same IPC without
requiring ZCA (as the library's MTT presets for Fashion-MNIST do).

``--ipc`` is a storage budget (``budget="storage"``, default): bases per class are reduced so that
bases + hallucinators fit in the numbers of ``ipc`` images per class
(``synsets.haba.bases_for_budget``: 9 bases per class at IPC 10 on Fashion-MNIST); at IPC 1 no
base fits beside 5 hallucinators, so the summary has 1 base per class and is ~1.9x the budget, as
the authors' IPC-1 setting is. ``budget="bases"``: ``--ipc`` is bases per class (the authors'
scripts' ``--ipc``; hallucinators on top). docs/haba.md.

CPU presets (~10 CPU-min of distillation on Fashion-MNIST, 1 thread; experts separate):
``cpu-ipc1`` (250 iterations x 20 steps, ~2.2 CPU-s each) and ``cpu-ipc10`` (60 x 12 steps,
~9.3 CPU-s each), with MTT's CPU experts (2 x 3 epochs).

Parity (tests/test_parity_haba.py): two outer iterations against the authors' ``distill_fac.py``
in float64 (RGB and grey bases): every loss term, the gradients w.r.t. bases, hallucinators and
alpha, the updated summary and the updated extractor, to 1e-6 (the extractor's second gradient
in the grey case to 1.5e-5: the shared float32 cross-entropy / parameter distance, amplified).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import init_parameters
from ..objectives import parameter_distance
from ..runtime import autocast
from ..synsets.factorized import FactorizedSet
from ..synsets.haba import bases_for_budget
from .base import DISTILLERS
from .mtt import MTT

BUDGETS = ("storage", "bases")

_SCRIPTS = {  # Huage001/DatasetFactorization run_cifar10_ipc{1,10,50}_style5.sh
    "cifar10-ipc1": dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_lr=1e-7,
                         lr_teacher=0.01, zca=True),
    "cifar10-ipc10": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_lr=1e-5,
                          lr_teacher=0.001, zca=True),
    "cifar10-ipc50": dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_lr=1e-5,
                          lr_teacher=0.01, zca=True),
}
# run_cifar10_ipc_1_style_5_single_channel.sh (grey bases)
_SCRIPTS["cifar10-ipc1-grey"] = dict(_SCRIPTS["cifar10-ipc1"], base_channels=1)
_CPU_EXPERTS = dict(num_experts=2, train_epochs=3, expert_epochs=2, max_start_epoch=2)
PRESETS: dict[str, dict[str, Any]] = {
    **_SCRIPTS,
    "fmnist-ipc1": dict(_SCRIPTS["cifar10-ipc1"], zca=None),
    "fmnist-ipc10": dict(_SCRIPTS["cifar10-ipc10"], zca=None),
    # CPU budgets, ~10 CPU-min of distillation on Fashion-MNIST at 1 thread (docs/haba.md: 2.1-2.5
    # CPU-s per iteration at IPC 1 x 20 steps, 8.8-9.8 at IPC 10 x 12 steps); MTT's CPU experts
    "cpu-ipc1": dict(_SCRIPTS["cifar10-ipc1"], **_CPU_EXPERTS, zca=None, iterations=250,
                     syn_steps=20),
    "cpu-ipc10": dict(_SCRIPTS["cifar10-ipc10"], **_CPU_EXPERTS, zca=None, iterations=60,
                      syn_steps=12),
    "tiny": dict(iterations=2, syn_steps=3, expert_epochs=1, max_start_epoch=1, num_experts=1,
                 train_epochs=2, model="convnet_w32", num_hallucinators=2),
}


def _stored(syn):
    """``syn.as_stored()`` (the summary's stored values at its storage precision) where the
    summary has it; nothing otherwise."""
    as_stored = getattr(syn, "as_stored", None)
    return as_stored() if as_stored is not None else contextlib.nullcontext()


def _full(t: Tensor) -> Tensor:
    """Reduced-precision (bf16 autocast) outputs in float32; float32/float64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class Adversary(nn.Module):
    """HaBa's feature extractor: 3 x (conv 3x3 width 128, GroupNorm(128, 128), ReLU,
    avg-pool 2), flattened features, a linear classifier; returns (logits, features)."""

    def __init__(self, info, width: int = 128):
        super().__init__()
        c, h, w = info.shape
        pad = 3 if c == 1 else 1
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(c if i == 0 else width, width, 3, padding=pad if i == 0 else 1),
                       nn.GroupNorm(width, width), nn.ReLU(), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        h, w = h + 2 * pad - 2, w + 2 * pad - 2
        for _ in range(3):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(f"HaBa's extractor needs images of at least 8 pixels, got "
                              f"{tuple(info.shape[1:])}")
        self.classifier = nn.Linear(width * h * w, info.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return self.classifier(f), f


def supervised_contrastive(z0: Tensor, z1: Tensor, labels: Tensor, temperature: float = 0.07,
                           base_temperature: float = 0.07) -> Tensor:
    """Khosla et al. (NeurIPS'20) supervised contrastive loss with two views per example
    (``z0``, ``z1``: [n, d], L2-normalised), every view an anchor:
    -(tau / tau_b) mean_a mean_{p in P(a)} log(exp(z_a.z_p / tau) / sum_{k!=a} exp(z_a.z_k / tau)),
    P(a) = the other views with the label of a."""
    z = torch.cat([z0, z1])
    y = torch.cat([labels, labels])
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # (stability only)
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits_others = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits_others, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    mean_pos = (log_prob * pos).sum(1) / pos.sum(1)
    return -(temperature / base_temperature) * mean_pos.mean()


@DISTILLERS.register("haba")
@dataclasses.dataclass(kw_only=True)
class HaBa(MTT):
    """HaBa (Liu et al., NeurIPS'22, "Dataset Distillation via Factorization"): bases +
    convolutional hallucinators, every (hallucinator, base) pair one example; trained by MTT's
    trajectory matching, each unrolled step on a batch of bases through one random hallucinator,
    plus lambda_adv * mean (cos(f(H_j b), f(H_j' b)) + 1) / 2, the similarity of two hallucinations
    of a base under a feature extractor f that is itself trained (CE + (1 - cos)/2 + SupCon) to
    find them alike. Bases, hallucinators and the step size are updated jointly, then f."""

    name = "haba"
    synset_kind = "haba"
    synset_kinds = ("haba",)
    presets = PRESETS

    iterations: int = 15000
    lr_img: float = 100.0
    lr_style: float = 100.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.001
    syn_steps: int = 30
    expert_epochs: int = 2
    max_start_epoch: int = 20
    momentum: float = 0.95
    momentum_lr: float = 0.9
    min_syn_lr: float = 0.001
    num_hallucinators: int = 5
    kernel_size: int = 3
    base_channels: int | None = None
    budget: str = "storage"
    lambda_adv: float = 0.1
    lambda_cls: float = 1.0
    lambda_likeli: float = 0.1
    lambda_contrast: float = 0.1
    temperature: float = 0.07
    lr_extractor: float = 0.001
    momentum_extractor: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        if self.budget not in BUDGETS:
            raise ConfigError(f"unknown budget {self.budget!r}; known: {', '.join(BUDGETS)}")
        if self.num_hallucinators < 2:
            raise ConfigError(f"HaBa's diversity terms compare two distinct hallucinators: "
                              f"num_hallucinators must be >= 2, got {self.num_hallucinators}")
        for k in ("lr_img", "lr_style", "lr_lr", "lr_extractor", "temperature"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)}")
        for k in ("lambda_adv", "lambda_cls", "lambda_likeli", "lambda_contrast", "min_syn_lr"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)}")
        for k in ("momentum", "momentum_lr", "momentum_extractor"):
            if not 0 <= getattr(self, k) < 1:
                raise ConfigError(f"{k} must be in [0, 1), got {getattr(self, k)}")

    # -- summary and optimizers ---------------------------------------------------------------
    def default_synset_args(self, kind: str) -> dict[str, Any]:
        if kind != "haba":
            return {}
        return {"num_hallucinators": self.num_hallucinators, "kernel_size": self.kernel_size,
                "base_channels": self.base_channels}

    def bases_per_class(self, info, ipc: int) -> int:
        """Bases per class for an ``--ipc`` budget (``budget``: storage or bases)."""
        if self.budget == "bases":
            return int(ipc)
        args = self.summary_args()
        return bases_for_budget(info, ipc, num_hallucinators=args["num_hallucinators"],
                                kernel_size=args["kernel_size"],
                                base_channels=args["base_channels"],
                                hidden_channels=args.get("hidden_channels"))

    def init_synset(self, real, *, ipc=None, **budget):
        """A ``haba`` summary for the ``--ipc`` budget (``bases_per_class``), its step size at
        ``lr_teacher``; the budget asked for is kept in ``meta["budget_ipc"]``."""
        if ipc is None:
            raise ConfigError(f"{self.name} needs --ipc")
        syn = super().init_synset(real, ipc=self.bases_per_class(real.info, ipc), **budget)
        syn.meta["budget_ipc"] = int(ipc)
        return syn

    def make_optimizer(self, syn):
        if not isinstance(syn, FactorizedSet) or syn.num_decoders < 2:
            raise ConfigError(f"{self.name} needs a factorized summary with at least 2 decoders "
                              f"(create it with {self.name}'s init_synset), got "
                              f"{type(syn).__name__}")
        if syn.lr is None:
            raise ConfigError(f"{self.name} learns a step size: create the summary with "
                              f"{self.name}'s init_synset (it has no lr)")
        groups = [{"params": syn.code_parameters(), "lr": self.lr_img, "momentum": self.momentum},
                  {"params": syn.decoder_parameters(), "lr": self.lr_style,
                   "momentum": self.momentum},
                  {"params": [syn.lr], "lr": self.lr_lr, "momentum": self.momentum_lr}]
        return torch.optim.SGD(groups, lr=self.lr_img, momentum=self.momentum)

    def setup(self, real, syn):
        super().setup(real, syn)
        ext = Adversary(real.info)
        init_parameters(ext, self.gen_)
        self.extractor_ = ext.to(self.device_).train()
        self.extractor_opt_ = torch.optim.SGD(self.extractor_.parameters(), lr=self.lr_extractor,
                                              momentum=self.momentum_extractor)

    def extra_state(self) -> dict[str, Any]:
        return {"extractor": self.extractor_.state_dict(),
                "extractor_optimizer": self.extractor_opt_.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.extractor_.load_state_dict(state["extractor"])
        self.extractor_opt_.load_state_dict(state["extractor_optimizer"])

    # -- one iteration ----------------------------------------------------------------------------
    def plan_step(self, n: int, m: int, size) -> dict[str, Any]:
        """The draws of one iteration, in the reference's order: for each of the N unrolled steps
        a batch of base indices (chunks of a random permutation of size ``batch_syn``, refilled
        when used up) and one hallucinator (uniform), then a batch and two distinct hallucinators
        for the adversarial term and another for the extractor, each with its DSA parameters."""
        bs = n if self.batch_syn is None else min(self.batch_syn, n)
        chunks: list[Tensor] = []

        def batch() -> Tensor:
            if not chunks:
                chunks.extend(torch.randperm(n, generator=self.gen_).split(bs))
            return chunks.pop().to(self.device_)

        def aug(k):
            return self.dsa_.sample(k, self.gen_, size) if self.dsa_ is not None else None

        inner = []
        for _ in range(self.syn_steps):
            idx = batch()
            j = int(torch.randint(m, (1,), generator=self.gen_))
            inner.append((idx, j, aug(len(idx))))
        pairs = []
        for _ in range(2):
            idx = batch()
            j0, j1 = (int(v) for v in torch.randperm(m, generator=self.gen_)[:2])
            pairs.append((idx, (j0, j1), aug(2 * len(idx))))
        return {"inner": inner, "adversarial": pairs[0], "extractor": pairs[1]}

    def two_views(self, syn, idx: Tensor, pair: tuple[int, int], aug) -> Tensor:
        """[H_j(b); H_j'(b)] for the bases ``idx``, augmented as one batch."""
        b = syn.codes[idx]
        return self.augment(torch.cat([syn.decode(pair[0], b), syn.decode(pair[1], b)]), aug)

    def step(self, real, syn):
        start, target = self.sample_segment()
        plan = self.plan_step(syn.codes.shape[0], syn.num_decoders, tuple(real.info.shape[-2:]))
        params = list(syn.parameters())  # (outside as_stored: the float32 leaves)
        with _stored(syn):  # the stored (possibly quantized) values, straight-through
            y_all = syn.labels if syn.y is None else syn.y
            theta = start.requires_grad_(True)
            for idx, j, aug in plan["inner"]:
                x = self.augment(syn.decode(j, syn.codes[idx]), aug)
                g = self.inner_grad(theta, x, y_all[idx], syn.label_format, create_graph=True)
                theta = theta - syn.lr * g
            match = parameter_distance(theta, target, start.detach())
            idx, pair, aug = plan["adversarial"]
            with autocast(self.device_, self.run_.precision):
                _, f = self.extractor_(self.two_views(syn, idx, pair, aug))
            f = _full(f)
            adv = self.lambda_adv * ((F.cosine_similarity(f[:len(idx)], f[len(idx):]) + 1)
                                     / 2).mean()
            loss = match + adv
        self.apply_grads(params, torch.autograd.grad(loss, params, allow_unused=True))
        with torch.no_grad():
            syn.lr.clamp_(min=self.min_syn_lr)
        ext = self.train_extractor(syn, *plan["extractor"])
        return {"loss": float(loss.detach()), "match": float(match.detach()),
                "adversarial": float(adv.detach()), **ext, "syn_lr": float(syn.lr.detach())}

    def train_extractor(self, syn, idx: Tensor, pair: tuple[int, int], aug) -> dict[str, float]:
        """One SGD step of the extractor on two hallucinations of the (updated) bases ``idx``."""
        with torch.no_grad(), _stored(syn):
            x = self.two_views(syn, idx, pair, aug)
        y = syn.labels[idx]
        with autocast(self.device_, self.run_.precision):
            logits, f = self.extractor_(x)
        logits, f = _full(logits), _full(f)
        f0, f1 = f[:len(idx)], f[len(idx):]
        cls = self.lambda_cls * F.cross_entropy(logits, torch.cat([y, y]))
        likeli = self.lambda_likeli * ((1 - F.cosine_similarity(f0, f1)) / 2).mean()
        contrast = self.lambda_contrast * supervised_contrastive(
            F.normalize(f0), F.normalize(f1), y, self.temperature, self.temperature)
        loss = cls + likeli + contrast
        self.extractor_opt_.zero_grad(set_to_none=True)
        loss.backward()
        self.extractor_opt_.step()
        return {"extractor_loss": float(loss.detach()), "extractor_cls": float(cls.detach()),
                "extractor_likeli": float(likeli.detach()),
                "extractor_contrast": float(contrast.detach())}

    def extra_meta(self) -> dict[str, Any]:
        return {**super().extra_meta(), "budget": self.budget}
