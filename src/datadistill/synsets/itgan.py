"""IT-GAN's summary (Zhao & Bilen, 2022): latent vectors of a frozen class-conditional generator.

A factorized summary (``FactorizedSet``) whose codes are ``ipc`` latent vectors ``z`` per class
(``[K * ipc, dim_z]``) and whose single decoder is the GAN generator of ``gan_cache.py``,
**frozen** as in the paper (its parameters never get gradients; it always runs in eval mode, BN
with its running statistics, as the authors' ``G.eval()``). An example is
``renormalize(G(z, y))``: the generator's ``[-1, 1]`` image mapped to the dataset's normalized
space (``models/gan.py: to_data_space``).

Stored bytes (``stored_bytes()``, everything in ``state_dict``): the latents, the labels, the
generator's weights and BN statistics. The generator dominates at small budgets (the default
generator holds ~0.9 M numbers on 28x28 images, far more than 10 images per class), so the same
summary is also offered as plain pixels: ``to_pixels()`` returns a ``pixels`` summary of the
generated images, whose stored bytes are the images and labels alone. Both are honest counts; the
docs (``docs/itgan.md``) list them side by side.

Initialisation (``init_data``, called by ``init_from``): the generator's weights come from the
GAN cache (trained first if missing: the method's training part). ``init="noise"`` draws
``z ~ N(0, I)`` (a plain conditional-GAN sample, the paper's "GAN" baseline); ``init="real"``
is GAN inversion, as the authors' initialisation: ``ipc`` random real images per class, latents
from ``N(0, I)`` optimized with Adam(``invert_lr``) for ``invert_steps`` steps to reproduce them.
The authors' inversion loss adds a feature term under a ConvNet pre-trained on the real data
(200 epochs); it is left out here (pixel MSE only: that pretraining costs more than the rest).
The inverted real images are kept as ``anchors`` (a non-persistent buffer: not stored, not
counted, not saved) for IT-GAN's feature regularizer, which pairs each latent with its image.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.gan import to_data_space
from .base import SYNSETS
from .factorized import FactorizedSet


def gan_config_of(syn: "ITGANSet"):
    from ..gan_cache import GANConfig

    return GANConfig(dim_z=syn.dim_z, width=syn.gan_width, steps=syn.gan_steps,
                     batch=syn.gan_batch, lr=syn.gan_lr, seed=syn.gan_seed)


@SYNSETS.register("itgan")
class ITGANSet(FactorizedSet):
    """Latents ``[K * ipc, dim_z]`` + one frozen conditional generator (IT-GAN)."""

    kind = "itgan"

    def __init__(self, info, *, ipc: int, dim_z: int = 128, gan_width: int = 32,
                 gan_steps: int = 5000, gan_batch: int = 64, gan_lr: float = 2e-4,
                 gan_seed: int = 0, invert_steps: int = 5000, invert_lr: float = 0.1,
                 label_format: str = "hard", lr: float | None = None):
        if invert_steps < 0 or invert_lr <= 0:
            raise ValueError(f"invert_steps must be >= 0 and invert_lr > 0, got "
                             f"{invert_steps}, {invert_lr}")
        self.dim_z, self.gan_width, self.gan_steps = int(dim_z), int(gan_width), int(gan_steps)
        self.gan_batch, self.gan_lr, self.gan_seed = int(gan_batch), float(gan_lr), int(gan_seed)
        self.invert_steps, self.invert_lr = int(invert_steps), float(invert_lr)
        super().__init__(info, ipc=ipc, code_shape=(self.dim_z,), label_format=label_format, lr=lr)
        self.register_buffer("anchors", None, persistent=False)

    # -- FactorizedSet ------------------------------------------------------------------------
    def build_decoders(self) -> None:
        from ..models.gan import Generator

        g = Generator(self.info, dim_z=self.dim_z, width=self.gan_width)
        self.decoders = torch.nn.ModuleList([g.eval().requires_grad_(False)])

    def config(self) -> dict[str, Any]:
        return {"ipc": self.codes_per_class, "dim_z": self.dim_z, "gan_width": self.gan_width,
                "gan_steps": self.gan_steps, "gan_batch": self.gan_batch, "gan_lr": self.gan_lr,
                "gan_seed": self.gan_seed, "invert_steps": self.invert_steps,
                "invert_lr": self.invert_lr}

    @property
    def generator(self):
        return self.decoders[0]

    def generate(self, codes: Tensor, labels: Tensor) -> Tensor:
        """Examples (dataset space) of ``codes`` [n, dim_z] with class ``labels`` [n]."""
        return to_data_space(self.generator(codes, labels.to(codes.device)), self.info)

    def decode(self, j: int, codes: Tensor) -> Tensor:
        if codes.shape[0] != self.labels.numel():
            raise ValueError("decode() takes all stored codes; use generate(codes, labels) "
                             "for a subset")
        return self.generate(codes, self.labels)

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoders.eval()  # frozen: BN always uses its running statistics
        return self

    # -- initialisation -----------------------------------------------------------------------
    def load_generator(self, real, device=None) -> None:
        """Copy the cached GAN's generator for ``real`` into this summary (training it first
        when it is not in the cache)."""
        from ..gan_cache import load_generator

        g = load_generator(real, gan_config_of(self), device=device)
        with torch.no_grad():
            self.generator.load_state_dict(g.state_dict())

    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        self.load_generator(real)
        k, n = self.info.num_classes, self.codes_per_class
        with torch.no_grad():
            z = torch.randn(k * n, self.dim_z, generator=generator)
            self.codes.copy_(z.to(self.codes))
        if init == "real":
            x = torch.cat([real.sample_class(c, n, generator) for c in range(k)])
            self.anchors = x.to(self.codes.device, self.codes.dtype)
            self.invert(self.anchors)

    def invert(self, x: Tensor) -> None:
        """GAN inversion of ``x`` (one image per stored code, code order): Adam on the codes,
        minimizing the per-class mean pixel MSE summed over classes (each class's gradient is
        what the authors' per-class loss gives; Adam is elementwise, so one optimizer over all
        codes steps each class as its own would)."""
        if self.invert_steps == 0:
            return
        k = self.info.num_classes
        z = self.codes.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.invert_lr, betas=(0.9, 0.999))
        for _ in range(self.invert_steps):
            err = ((self.generate(z, self.labels) - x) ** 2).reshape(k, -1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            err.backward()
            opt.step()
        with torch.no_grad():
            self.codes.copy_(z.detach())

    # -- the same summary as plain pixels -------------------------------------------------------
    def to_pixels(self):
        """A ``pixels`` summary holding the generated images (stored bytes: images + labels)."""
        from .pixels import PixelSet

        px = PixelSet(self.info, ipc=self.codes_per_class, label_format=self.label_format,
                      lr=None if self.lr is None else float(self.lr.detach()))
        with torch.no_grad():
            x, y = self.materialize()
            px = px.to(x.device, x.dtype)
            px.x.copy_(x)
            if px.y is not None:
                px.y.copy_(y)
        px.preprocess = dict(self.preprocess)
        px.meta = {**self.meta, "converted_from": "itgan"}
        return px
