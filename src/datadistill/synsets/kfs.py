"""KFS summary (Lee, Lee & Hwang 2022, arXiv 2208.10494): per-class latent codes + shared decoders.

Every stored *code* is a small latent image ``z`` of ``latent_channels x ceil(H/downsample) x
ceil(W/downsample)`` with one class label; ``num_decoders`` tiny decoders, shared by all classes,
each turn every code into one example, so ``n`` codes per class give ``n * num_decoders``
examples per class (decoder-major, ``FactorizedSet``). Decoder ``j`` is

    u = bilinear_upsample(z) to (H, W)                      (identity when downsample == 1)
    g_j(z) = S_j u + s_j + W2_j * lrelu_0.2(W1_j * u + b1_j) + b2_j

with ``S_j`` a 1x1 convolution (the skip), ``W1_j`` a 3x3 convolution to ``hidden`` channels and
``W2_j`` a 3x3 convolution back to the data's channels (zero padding 1). The KFS paper factorizes
a summary into latent codes in a lower-dimensional space and tiny shared decoders; its decoder
architecture and latent sizes could not be read from this session (no public code, paper text not
reachable, see docs/kfs.md), so this decoder is the library's choice: the skip starts as the
identity channel map, so a code initialised from a down-sampled real image decodes to that image,
up-sampled, and the residual branch (its last layer started small, different for every decoder)
is what lets the decoders render different "styles" of the same code.

Stored bytes: codes (float32) + every decoder weight and bias + the int64 labels of the codes
(+ soft labels if any): everything ``state_dict`` holds. ``budget_codes`` turns an "images per
class" budget into the number of codes per class that fits in the bytes of a pixel summary of
that many images per class (float32 images + int64 labels), decoders included.

``init_from(real, ipc, kind="kfs", ...)`` takes ``ipc`` as *codes per class* (the factorized
base's meaning); the ``kfs`` method's ``init_synset`` maps its ``--ipc`` budget with
``budget_codes`` first.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SYNSETS
from .factorized import FactorizedSet

#: std of a decoder's last residual layer at initialisation, relative to 1/sqrt(fan_in): small, so
#: a real-initialised code first decodes to (nearly) its up-sampled image, non-zero and different
#: per decoder so that the decoders are not interchangeable (identical decoders get identical
#: gradients and would stay identical)
RESIDUAL_INIT = 0.1
NEGATIVE_SLOPE = 0.2


class TinyDecoder(nn.Module):
    """One KFS decoder: bilinear up-sampling, a 1x1 skip and a two-layer 3x3 residual branch.

    Parameters are plain tensors created without randomness (zeros, identity skip); ``reset``
    draws them from a generator, so building a summary never touches the global RNG."""

    def __init__(self, latent_channels: int, channels: int, hidden: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(int(s) for s in size)
        cz, c, h = latent_channels, channels, hidden
        self.skip_weight = nn.Parameter(_identity_map(c, cz))
        self.skip_bias = nn.Parameter(torch.zeros(c))
        self.weight1 = nn.Parameter(torch.zeros(h, cz, 3, 3))
        self.bias1 = nn.Parameter(torch.zeros(h))
        self.weight2 = nn.Parameter(torch.zeros(c, h, 3, 3))
        self.bias2 = nn.Parameter(torch.zeros(c))

    def upsample(self, z: Tensor) -> Tensor:
        if tuple(z.shape[-2:]) == self.size:
            return z
        return F.interpolate(z, size=self.size, mode="bilinear", align_corners=False)

    def forward(self, z: Tensor) -> Tensor:
        u = self.upsample(z)
        skip = F.conv2d(u, self.skip_weight[:, :, None, None], self.skip_bias)
        h = F.leaky_relu(F.conv2d(u, self.weight1, self.bias1, padding=1), NEGATIVE_SLOPE)
        return skip + F.conv2d(h, self.weight2, self.bias2, padding=1)

    @torch.no_grad()
    def reset(self, generator: torch.Generator) -> None:
        """Identity skip, He-normal first layer, a small random last layer, zero biases."""
        c, cz = self.skip_weight.shape
        self.skip_weight.copy_(_identity_map(c, cz))
        for b in (self.skip_bias, self.bias1, self.bias2):
            b.zero_()
        fan1 = self.weight1[0].numel()
        fan2 = self.weight2[0].numel()
        self.weight1.copy_(torch.randn(self.weight1.shape, generator=generator) * math.sqrt(2 / fan1))
        self.weight2.copy_(torch.randn(self.weight2.shape, generator=generator)
                           * (RESIDUAL_INIT / math.sqrt(fan2)))


def _identity_map(channels: int, latent_channels: int) -> Tensor:
    """[C, Cz]: output channel c copies latent channel c mod Cz."""
    w = torch.zeros(channels, latent_channels)
    w[torch.arange(channels), torch.arange(channels) % latent_channels] = 1.0
    return w


def code_shape_for(info, latent_channels: int | None, downsample: int) -> tuple[int, int, int]:
    c, hh, ww = info.shape
    cz = int(latent_channels) if latent_channels is not None else c
    return cz, math.ceil(hh / downsample), math.ceil(ww / downsample)


def budget_codes(info, ipc: int, *, label_format: str = "hard", storage: str | None = None,
                 **options: Any) -> int:
    """Codes per class of the largest KFS summary (constructor ``options``, stored at ``storage``)
    whose ``stored_bytes()`` fit those of a float32 pixel summary of ``ipc`` images per class with
    the same label format — codes, decoder weights and labels all counted, as the summaries
    themselves count them. Raises ``ValueError`` if not even one code per class fits."""
    from .pixels import PixelSet

    budget = PixelSet(info, ipc=int(ipc), label_format=label_format).stored_bytes()

    def size(n: int) -> int:
        s = KFSSet(info, ipc=n, label_format=label_format, **options)
        return (s.set_storage(storage) if storage is not None else s).stored_bytes()

    one, two = size(1), size(2)  # bytes are affine in the number of codes per class
    per_code, fixed = two - one, 2 * one - two
    n = (budget - fixed) // per_code
    if n < 1:
        raise ValueError(f"a KFS summary with these decoders ({fixed} B fixed, {per_code} B per "
                         f"code per class) does not fit the bytes of {ipc} images per class "
                         f"({budget} B): use fewer or smaller decoders, or a larger ipc")
    return int(n)


@SYNSETS.register("kfs")
class KFSSet(FactorizedSet):
    """``ipc`` codes per class of ``latent_channels x ceil(H/downsample) x ceil(W/downsample)``
    (``latent_channels`` None: the data's channels) and ``num_decoders`` shared ``TinyDecoder``s
    of width ``hidden``: ``ipc * num_decoders`` examples per class."""

    kind = "kfs"

    def __init__(self, info, *, ipc: int, latent_channels: int | None = None, downsample: int = 2,
                 num_decoders: int = 4, hidden: int = 8, label_format: str = "hard",
                 lr: float | None = None):
        if len(info.shape) != 3:
            raise ValueError(f"KFS needs images (C, H, W), got shape {tuple(info.shape)}")
        if downsample < 1 or num_decoders < 1 or hidden < 1:
            raise ValueError(f"downsample, num_decoders and hidden must be >= 1, got "
                             f"{downsample}, {num_decoders}, {hidden}")
        if latent_channels is not None and latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}")
        self.latent_channels = latent_channels
        self.downsample, self.hidden = int(downsample), int(hidden)
        self.n_decoders = int(num_decoders)
        super().__init__(info, ipc=ipc, code_shape=code_shape_for(info, latent_channels, downsample),
                         label_format=label_format, lr=lr)

    def build_decoders(self) -> None:
        cz = self.code_shape[0]
        self.decoders = nn.ModuleList(
            TinyDecoder(cz, self.info.shape[0], self.hidden, self.info.shape[1:])
            for _ in range(self.n_decoders))

    def decode(self, j: int, codes: Tensor) -> Tensor:
        return self.decoders[j](codes)

    def config(self) -> dict[str, Any]:
        return {"ipc": self.codes_per_class, "latent_channels": self.latent_channels,
                "downsample": self.downsample, "num_decoders": self.n_decoders,
                "hidden": self.hidden}

    @torch.no_grad()
    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        """Decoders: ``TinyDecoder.reset`` from ``generator``. Codes: ``real`` — each code is a
        random real image of its class, area-down-sampled to the code size (latent channels
        beyond the data's start at 0; fewer latent channels average the image channels they
        copy), so it decodes to (nearly) that image, up-sampled; ``noise`` — standard normal."""
        for dec in self.decoders:
            dec.reset(generator)
        cz, hz, wz = self.code_shape
        c = self.info.shape[0]
        for k in range(self.info.num_classes):
            sl = self.class_slice(k)
            n = sl.stop - sl.start
            if init != "real":
                self.codes[sl] = torch.randn(n, *self.code_shape, generator=generator).to(self.codes)
                continue
            imgs = real.sample_class(k, n, generator)
            if imgs.shape[0] < n:  # small classes: reuse images
                imgs = imgs.repeat(math.ceil(n / imgs.shape[0]), 1, 1, 1)[:n]
            small = F.adaptive_avg_pool2d(imgs.float(), (hz, wz))
            z = torch.zeros(n, cz, hz, wz)
            for j in range(min(cz, c)):  # latent channel j <- mean of the image channels it feeds
                z[:, j] = small[:, j::cz].mean(1)
            self.codes[sl] = z.to(self.codes)
