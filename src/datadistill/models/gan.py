"""A small class-conditional DCGAN-style generator and discriminator (IT-GAN's "training part").

IT-GAN (Zhao & Bilen, 2022) freezes a pre-trained conditional GAN and learns its latent vectors;
the authors use BigGAN on CIFAR. Here the GAN is a small DCGAN-style pair trained on the real
data by ``gan_cache.py`` (cached like expert trajectories), for any image shape:

- ``Generator(info, dim_z, width)``: ``[z, one_hot(y)] -> Linear -> (c0, h0, w0)``, BN, ReLU,
  then ``n`` stages of (nearest upsample x2, 3x3 conv halving the channels, BN, ReLU) and a 3x3
  conv to the image channels with ``tanh``: images in ``[-1, 1]`` (the GAN's pixel space, as
  BigGAN's; ``to_data_space`` maps them to the dataset's normalized space as the authors'
  ``renormalize``). ``n`` is the largest number of halvings that keeps the bottom size an integer
  of at least 4 pixels (28x28: 7x7 -> 14 -> 28; 32x32: 4 -> 8 -> 16 -> 32; 8x8: 4 -> 8).
- ``Discriminator(info, width)``: 3x3 conv, ``n`` stride-2 4x4 convs (LeakyReLU 0.2, no norm),
  global sum pooling, a linear output plus a class projection (Miyato & Koyama, 2018).

Neither is registered in ``MODELS`` (those are classifiers with ``embed``). Initialisation is
DCGAN's N(0, 0.02) for convolutions/linear maps/embeddings, drawn from a ``torch.Generator``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def num_stages(shape: tuple[int, ...]) -> int:
    """Upsampling stages for an image ``(C, H, W)``: the most halvings keeping ``H/2^n`` and
    ``W/2^n`` integers >= 4 (0 for tiny or odd sizes)."""
    _, h, w = shape
    n = 0
    while h % 2 ** (n + 1) == 0 and w % 2 ** (n + 1) == 0 and min(h, w) // 2 ** (n + 1) >= 4:
        n += 1
    return n


@torch.no_grad()
def init_gan(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> nn.Module:
    """DCGAN initialisation from ``generator``: N(0, std) weights, zero biases, BN (1, 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
            m.weight.copy_(w.normal_(0.0, std, generator=generator))
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()
    return module


def check_image_info(info) -> None:
    if len(info.shape) != 3:
        raise ValueError(f"the GAN needs images (C, H, W), got shape {tuple(info.shape)}")


class Generator(nn.Module):
    """Class-conditional generator ``G(z, y) -> [N, C, H, W]`` in ``[-1, 1]``."""

    def __init__(self, info, *, dim_z: int = 128, width: int = 32):
        super().__init__()
        check_image_info(info)
        if dim_z < 1 or width < 1:
            raise ValueError(f"dim_z and width must be >= 1, got {dim_z}, {width}")
        c, h, w = info.shape
        self.num_classes, self.dim_z, self.shape = info.num_classes, int(dim_z), tuple(info.shape)
        n = num_stages(info.shape)
        self.h0, self.w0, self.c0 = h // 2 ** n, w // 2 ** n, width * 2 ** n
        self.fc = nn.Linear(dim_z + info.num_classes, self.c0 * self.h0 * self.w0)
        self.bn0 = nn.BatchNorm2d(self.c0)
        blocks = []
        ch = self.c0
        for _ in range(n):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(ch, ch // 2, 3, padding=1), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(ch, c, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        onehot = F.one_hot(y.long(), self.num_classes).to(z.dtype)
        h = self.fc(torch.cat([z, onehot], 1)).reshape(-1, self.c0, self.h0, self.w0)
        h = self.blocks(F.relu(self.bn0(h)))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """Projection discriminator ``D(x, y) -> [N]`` logits (x in the GAN's ``[-1, 1]`` space)."""

    def __init__(self, info, *, width: int = 32):
        super().__init__()
        check_image_info(info)
        c = info.shape[0]
        n = num_stages(info.shape)
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(n):
            layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(ch, 1)
        self.embed = nn.Embedding(info.num_classes, ch)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.features(x).sum(dim=(2, 3))
        return self.fc(h).squeeze(1) + (self.embed(y.long()) * h).sum(1)


def data_space_affine(info, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """``(a, b)`` [1, C, 1, 1] with ``x_data = a * g + b`` for ``g`` in the GAN's [-1, 1] space:
    ``((g * 0.5 + 0.5) - mean) / std`` (the authors' ``renormalize``)."""
    c = info.shape[0]
    mean = torch.tensor(info.mean or (0.0,) * c, dtype=torch.float64)
    std = torch.tensor(info.std or (1.0,) * c, dtype=torch.float64)
    a, b = 0.5 / std, (0.5 - mean) / std
    return a.to(dtype).view(1, c, 1, 1), b.to(dtype).view(1, c, 1, 1)


def to_data_space(g: Tensor, info) -> Tensor:
    a, b = data_space_affine(info, g.dtype)
    return g * a.to(g.device) + b.to(g.device)


def to_gan_space(x: Tensor, info) -> Tensor:
    a, b = data_space_affine(info, x.dtype)
    return (x - b.to(x.device)) / a.to(x.device)
