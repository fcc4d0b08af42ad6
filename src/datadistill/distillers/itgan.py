"""IT-GAN — Zhao & Bilen, "Synthesizing Informative Training Samples with GAN", NeurIPS'22
workshop on synthetic data (arXiv 2204.07513).

A class-conditional GAN is trained on the real data and frozen (the method's training part:
``gan_cache.py``, cached and reused); the summary is its latent vectors (``synsets/itgan.py``),
initialised by GAN inversion of random real images and then optimized so the generated images
are *informative*: for every class ``c``, with a fresh randomly initialised ConvNet ``psi`` and
one siamese DSA draw ``A`` per class and mini-batch,

    L_c = (1 - r) * || mean_{x ~ T_c} psi(A(x)) - mean_{z in Z_c} psi(A(G(z, c))) ||^2     (cond)
          + r * mean_{z_i in Z_c} || psi(A(G(z_i, c))) - psi(A(x_i)) ||^2                  (div)

where ``x_i`` is the real image latent ``z_i`` was inverted from (the feature regularizer that
keeps each generated image close to its own real image; ``r`` = ``ratio_div``). Each class's
latents are updated by their own Adam optimizer after each of its mini-batches, exactly as the
authors' ``ITGAN_main_CIFAR10.py`` (``match_mode feat``, ``net_distribution random``).

Published defaults (the authors' command for CIFAR-10, ``readme.txt`` of their released training
code): ``--Iteration 10000 --lr_z 0.001 --ratio_div 0.001 --batch_train_z 1250
--z_sample_mode fixed --match_mode feat``, ``batch_condense`` 500 real images per class, Adam
betas (0.9, 0.999), ConvNet-128-3 (instance norm) as the random embedding, DSA
``color_crop_cutout_flip_scale_rotate``. There is no classification loss and no latent-norm
penalty in the released code (the gradient-matching variant ``match_mode grad`` is not
implemented). The GAN is a small DCGAN-style generator here, not BigGAN (``models/gan.py``).

The summary is the latents + the generator (its weights counted in ``stored_bytes``) or, via
``ITGANSet.to_pixels()``, the generated images as plain pixels. ``docs/itgan.md`` has both byte
counts, the presets and the parity case (``tests/test_parity_itgan.py``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..models import init_parameters
from ..runtime import autocast, derive_seed, make_generator
from .base import DISTILLERS
from .image import ImageDistiller

Z_SAMPLE_MODES = ("fixed", "random")


class ClassAdam(torch.optim.Optimizer):
    """Adam (``torch.optim.Adam``'s update, no weight decay/amsgrad) over one tensor of codes
    whose rows belong to classes, stepping one class at a time: ``step(rows)`` updates only
    ``rows`` and advances only that class's step count. This is the authors' one optimizer per
    class (``optm_split[c]``) over a single stored tensor."""

    def __init__(self, params, *, lr: float, num_classes: int, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        self.num_classes = int(num_classes)

    @torch.no_grad()
    def step(self, closure=None, *, rows: slice | None = None, cls: int = 0):  # noqa: D401
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros(self.num_classes, dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                sl = rows if rows is not None else slice(None)
                st["step"][cls] += 1
                t = float(st["step"][cls])
                g, m, v = p.grad[sl], st["exp_avg"][sl], st["exp_avg_sq"][sl]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g.conj(), value=1 - b2)
                step_size = group["lr"] / (1 - b1 ** t)
                denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(group["eps"])
                p[sl].addcdiv_(m, denom, value=-step_size)
        return None


@DISTILLERS.register("itgan")
@dataclasses.dataclass(kw_only=True)
class ITGAN(ImageDistiller):
    """IT-GAN (Zhao & Bilen, NeurIPS'22 workshop, arXiv 2204.07513): latent vectors Z of a frozen
    class-conditional GAN G (trained once on the real data, cached), initialised by GAN
    inversion, optimized per class with Adam on (1 - r) || mean psi(A(T_c)) - mean psi(A(G(Z_c)))
    ||^2 + r mean_i || psi(A(G(z_i))) - psi(A(x_i)) ||^2, psi a fresh random ConvNet per class,
    A one siamese DSA draw, x_i the real image z_i was inverted from (r = ratio_div)."""

    name = "itgan"
    synset_kind = "itgan"
    presets = {
        # contract test on the 8x8 digits: a GAN of a few steps, a short inversion
        "tiny": {"iterations": 3, "batch_real": 16, "dim_z": 16, "gan_width": 8,
                 "gan_steps": 20, "gan_batch": 32, "invert_steps": 5},
        # CPU budgets on Fashion-MNIST (docs/itgan.md: measured costs)
        "cpu-200": {"iterations": 200, "batch_real": 256, "gan_width": 16, "gan_steps": 1800,
                    "invert_steps": 500},
        "cpu-1000": {"iterations": 1000, "batch_real": 256, "gan_width": 16, "gan_steps": 1800,
                     "invert_steps": 500},
    }

    iterations: int = 10000
    lr_data: float = 0.001          # lr_z (Adam)
    batch_real: int = 500           # batch_condense
    batch_z: int = 1250             # batch_train_z
    ratio_div: float = 0.001
    z_sample_mode: str = "fixed"
    # the GAN (the method's training part, cached) and the inversion that initialises Z
    dim_z: int = 128
    gan_width: int = 32
    gan_steps: int = 5000
    gan_batch: int = 64
    gan_lr: float = 2e-4
    gan_seed: int = 0               # the GAN's own seed: runs of any seed share one cached GAN
    invert_steps: int = 5000
    invert_lr: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ratio_div <= 1.0:
            raise ConfigError(f"ratio_div must be in [0, 1], got {self.ratio_div}")
        if self.z_sample_mode not in Z_SAMPLE_MODES:
            raise ConfigError(f"z_sample_mode must be one of {Z_SAMPLE_MODES}, got "
                              f"{self.z_sample_mode!r}")
        for k in ("batch_real", "batch_z", "dim_z", "gan_width", "gan_steps", "gan_batch"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.lr_data <= 0 or self.gan_lr <= 0 or self.invert_lr <= 0:
            raise ConfigError("lr_data, gan_lr and invert_lr must be > 0")
        if self.invert_steps < 0:
            raise ConfigError(f"invert_steps must be >= 0, got {self.invert_steps}")

    # -- the summary --------------------------------------------------------------------------
    def synset_kwargs(self) -> dict[str, Any]:
        return {"dim_z": self.dim_z, "gan_width": self.gan_width, "gan_steps": self.gan_steps,
                "gan_batch": self.gan_batch, "gan_lr": self.gan_lr, "gan_seed": self.gan_seed,
                "invert_steps": self.invert_steps, "invert_lr": self.invert_lr}

    def init_synset(self, real, *, ipc: int | None = None, **budget: Any):
        from ..synsets import init_from

        if budget:
            raise ConfigError(f"{self.name} takes an ipc budget, not {sorted(budget)}")
        if ipc is None:
            raise ConfigError(f"{self.name} needs --ipc")
        return init_from(real, ipc, kind=self.synset_kind, init=self.init,
                         generator=make_generator(self.seed), label_format=self.label_format,
                         **self.synset_kwargs())

    def make_optimizer(self, syn):
        if not hasattr(syn, "generate"):
            raise ConfigError(f"itgan optimizes GAN latents: it needs an 'itgan' summary, got "
                              f"{syn.kind!r}")
        return ClassAdam([syn.codes], lr=self.lr_data, num_classes=syn.info.num_classes)

    # -- the loop -----------------------------------------------------------------------------
    def setup(self, real, syn):
        super().setup(real, syn)
        net = self.make_model(self.model, real.info).requires_grad_(False)
        self.net_ = net.train()
        self.anchors_ = None
        if self.ratio_div > 1e-5:  # the authors' switch for the regularizer
            a = getattr(syn, "anchors", None)
            if a is None:
                # no inverted images (noise init, or a summary loaded from disk): pair each latent
                # with a random real image of its class, drawn once from the run's generator
                g = make_generator(derive_seed(self.seed, 1))
                a = torch.cat([real.sample_class(c, syn.codes_per_class, g)
                               for c in range(real.info.num_classes)])
            self.anchors_ = a.to(self.device_)

    def _embed(self, x: Tensor) -> Tensor:
        e = self.net_.embed(x)
        return e.float() if e.dtype in (torch.bfloat16, torch.float16) else e

    def step(self, real, syn):
        k, n, dev = real.info.num_classes, syn.codes_per_class, self.device_
        bz = min(self.batch_z, n)
        r = self.ratio_div
        tot, tot_cond, tot_div, count = 0.0, 0.0, 0.0, 0
        for c in range(k):
            init_parameters(self.net_, self.gen_)  # a fresh random network per class
            order = (torch.arange(n) if self.z_sample_mode == "fixed"
                     else torch.randperm(n, generator=self.gen_))
            for b in range(math.ceil(n / bz)):
                rows = c * n + order[b * bz:(b + 1) * bz]
                p = self.sample_augment(real)  # one draw shared by G(z), its x_i and T_c
                cond = real.sample_class(c, self.batch_real, self.gen_).to(dev)
                with autocast(dev, self.run_.precision):
                    xs = self.augment(syn.generate(syn.codes[rows], syn.labels[rows]), p)
                    fs = self._embed(xs)
                    with torch.no_grad():
                        fr = self._embed(self.augment(cond, p)).mean(0)
                        fa = (self._embed(self.augment(self.anchors_[rows.to(dev)], p))
                              if self.anchors_ is not None else None)
                loss_cond = ((fs.mean(0) - fr) ** 2).sum()
                loss_div = (((fs - fa) ** 2).sum(-1).mean() if fa is not None
                            else fs.new_zeros(()))
                loss = r * loss_div + (1 - r) * loss_cond
                self.optimizer_.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer_.step(rows=slice(c * n, (c + 1) * n), cls=c)
                tot += float(loss.detach())
                tot_cond += float(loss_cond.detach())
                tot_div += float(loss_div.detach())
                count += 1
        return {"loss": tot / count, "loss_cond": tot_cond / count, "loss_div": tot_div / count}
