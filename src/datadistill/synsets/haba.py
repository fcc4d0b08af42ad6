"""HaBa's factorized summary (Liu et al., "Dataset Distillation via Factorization", NeurIPS'22):
*bases* (small images, one set per class) and *hallucinators* (tiny convolutional networks shared
by every class); every hallucinator applied to every base is one training example::

    x_{j,i} = H_j(b_i),   H_j(b) = dec_j( sigma_j * enc_j(b) + mu_j ),   y_{j,i} = label(b_i)

``enc`` is a ``k x k`` convolution without padding (``C_b -> C_h`` channels, ``H-k+1`` pixels),
``sigma``/``mu`` an affine transformation with one learned scale and shift per channel *and pixel*
(``[1, C_h, H-k+1, W-k+1]``, initialised to 1 and 0), ``dec`` a ``k x k`` transposed
convolution back to ``C`` channels and ``H x W``. The authors' code (Huage001/DatasetFactorization,
``utils.StyleTranslator``) uses ``k = 3``, ``C_h = C`` (the data's channels), ``C_b = C`` or 1
(``--single_channel``: grey bases, ``C`` channels out). ``materialize()`` (``FactorizedSet``)
returns all ``|H| x |B|`` examples, hallucinator-major; ``stored_bytes()`` counts the bases, the
hallucinators' weights, the labels and the learned step size.

Initialisation (``init_data``): bases from random real images of their class (their channel mean
for grey bases) or standard normal noise; hallucinators with PyTorch's default convolution
initialisation (kaiming-uniform weights, uniform biases), scale 1, shift 0, all drawn from the
caller's generator. A set built directly (without ``init_data``) has zero convolutions.

Budget: the constructor's ``ipc`` is *bases per class*. ``bases_for_budget`` maps a storage
budget of ``ipc`` images per class to bases per class so that bases + hallucinators fit in it
(see docs/haba.md: 9 bases per class with 5 hallucinators at IPC 10 on Fashion-MNIST or CIFAR-10;
at IPC 1 nothing fits beside 5 hallucinators, so it returns 1 base per class and the summary is
larger than the budget, as the authors' IPC-1 setting is).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SYNSETS
from .factorized import FactorizedSet


class Hallucinator(nn.Module):
    """``dec(scale * enc(x) + shift)``: encoder convolution (no padding), per-pixel affine,
    decoder transposed convolution (HaBa, Fig. 3 right)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int,
                 kernel_size: int, size: tuple[int, int]):
        super().__init__()
        k = int(kernel_size)
        h, w = size[0] - k + 1, size[1] - k + 1
        self.enc_weight = nn.Parameter(torch.zeros(hidden_channels, in_channels, k, k))
        self.enc_bias = nn.Parameter(torch.zeros(hidden_channels))
        self.scale = nn.Parameter(torch.ones(1, hidden_channels, h, w))
        self.shift = nn.Parameter(torch.zeros(1, hidden_channels, h, w))
        # (a transposed convolution's weight is [in, out, k, k])
        self.dec_weight = nn.Parameter(torch.zeros(hidden_channels, out_channels, k, k))
        self.dec_bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        z = F.conv2d(x, self.enc_weight, self.enc_bias)
        return F.conv_transpose2d(self.scale * z + self.shift, self.dec_weight, self.dec_bias)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default ``Conv2d``/``ConvTranspose2d`` initialisation (kaiming-uniform with
        a = sqrt(5), i.e. U(+-1/sqrt(fan_in)), fan_in = dim 1 x k x k; biases U(+-1/sqrt(fan_in)))
        from ``generator``; scale 1, shift 0."""
        for w, b in ((self.enc_weight, self.enc_bias), (self.dec_weight, self.dec_bias)):
            t = torch.empty(w.shape, dtype=w.dtype)
            w.copy_(nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator))
            bound = 1 / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])
            t = torch.empty(b.shape, dtype=b.dtype)
            b.copy_(nn.init.uniform_(t, -bound, bound, generator=generator))
        self.scale.fill_(1.0)
        self.shift.zero_()


def _channels(info, base_channels, hidden_channels) -> tuple[int, int, int]:
    c = int(info.shape[0])
    return c, (c if base_channels is None else int(base_channels)), \
        (c if hidden_channels is None else int(hidden_channels))


def hallucinator_numel(info, *, kernel_size: int = 3, base_channels: int | None = None,
                       hidden_channels: int | None = None) -> int:
    """Numbers stored per hallucinator for data of ``info.shape``."""
    c, cb, ch = _channels(info, base_channels, hidden_channels)
    k = int(kernel_size)
    h, w = info.shape[1] - k + 1, info.shape[2] - k + 1
    return ch * cb * k * k + ch + 2 * ch * h * w + ch * c * k * k + c


def bases_for_budget(info, ipc: int, *, num_hallucinators: int = 5, kernel_size: int = 3,
                     base_channels: int | None = None, hidden_channels: int | None = None) -> int:
    """Bases per class that, with ``num_hallucinators`` hallucinators, fit in the numbers of
    ``ipc`` full images per class: floor((K ipc |x| - |H| |h|) / (K |b|)), at least 1 (when not
    even one base per class fits beside the hallucinators, e.g. IPC 1, the summary exceeds the
    budget; docs/haba.md)."""
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    k = info.num_classes
    _, cb, _ = _channels(info, base_channels, hidden_channels)
    image = math.prod(info.shape)
    base = cb * math.prod(info.shape[1:])
    spare = k * ipc * image - num_hallucinators * hallucinator_numel(
        info, kernel_size=kernel_size, base_channels=base_channels, hidden_channels=hidden_channels)
    return max(1, spare // (k * base))


@SYNSETS.register("haba")
class HaBaSet(FactorizedSet):
    """Bases (``codes``: ``[K * ipc, C_b, H, W]``, class-major) and ``num_hallucinators``
    hallucinators (``decoders``); ``ipc`` = bases per class."""

    kind = "haba"

    def __init__(self, info, *, ipc: int, num_hallucinators: int = 5, kernel_size: int = 3,
                 base_channels: int | None = None, hidden_channels: int | None = None,
                 label_format: str = "hard", lr: float | None = None):
        if len(info.shape) != 3:
            raise ValueError(f"HaBa needs images (C, H, W), got shape {tuple(info.shape)}")
        if num_hallucinators < 1:
            raise ValueError(f"num_hallucinators must be >= 1, got {num_hallucinators}")
        if kernel_size < 1 or min(info.shape[1:]) < kernel_size:
            raise ValueError(f"kernel_size must be in 1..{min(info.shape[1:])} for images of "
                             f"{tuple(info.shape[1:])} pixels, got {kernel_size}")
        c = int(info.shape[0])
        if base_channels is not None and base_channels not in (1, c):
            raise ValueError(f"base_channels must be None (= {c}) or 1 (grey bases), got "
                             f"{base_channels}")
        if hidden_channels is not None and hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1 or None, got {hidden_channels}")
        # (read by build_decoders, which FactorizedSet.__init__ calls)
        self.num_hallucinators, self.kernel_size = int(num_hallucinators), int(kernel_size)
        self.base_channels, self.hidden_channels = base_channels, hidden_channels
        _, cb, _ = _channels(info, base_channels, hidden_channels)
        super().__init__(info, ipc=ipc, code_shape=(cb, *info.shape[1:]),
                         label_format=label_format, lr=lr)

    def build_decoders(self) -> None:
        c, cb, ch = _channels(self.info, self.base_channels, self.hidden_channels)
        self.decoders = nn.ModuleList(
            Hallucinator(cb, ch, c, self.kernel_size, tuple(self.info.shape[1:]))
            for _ in range(self.num_hallucinators))

    def decode(self, j: int, codes: Tensor) -> Tensor:
        return self.decoders[j](codes)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_hallucinators": self.num_hallucinators,
                "kernel_size": self.kernel_size, "base_channels": self.base_channels,
                "hidden_channels": self.hidden_channels}

    @torch.no_grad()
    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        """Bases from ``init`` ("real": random real images of their class, their channel mean
        for grey bases; "noise": N(0, 1)); then every hallucinator from ``generator``."""
        for c in range(self.info.num_classes):
            sl = self.class_slice(c)
            n = sl.stop - sl.start
            if init == "real":
                x = real.sample_class(c, n, generator)
                if self.codes.shape[1] != x.shape[1]:
                    x = x.mean(dim=1, keepdim=True)
            else:
                x = torch.randn(n, *self.code_shape, generator=generator)
            self.codes[sl] = x.to(self.codes)
        for h in self.decoders:
            h.reset_parameters(generator)
