"""Differentiable Siamese Augmentation (Zhao & Bilen, ICML'21).

``sample(n, generator)`` draws the parameters of one augmentation; ``apply(x, params)`` applies
them differentiably. Siamese by construction: sample once with ``n=None`` (one parameter set
shared by the whole batch, as in the reference code's seeded mode) and apply the same params to
the real and the synthetic batch. With ``n`` given, each example gets its own parameters (used
when training evaluation models). Published magnitudes: brightness 1.0, saturation 2.0,
contrast 0.5, crop/pad 0.125, cutout 0.5, scale 1.2, rotate 15 degrees, flip p=0.5; mode
``single`` picks one transform per call (reference ``aug_mode='S'``), ``multiple`` applies them
all, ``idc`` is IDC's ``DiffAug``: flip and color on every call, then one transform picked from
the rest, then cutout on every call (in that order).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
MODES = ("single", "multiple", "idc")
#: mode ``idc``: the transforms applied on every call (IDC's DiffAug), before / after the pick
IDC_ALWAYS_FIRST, IDC_ALWAYS_LAST = ("flip", "color"), ("cutout",)


@dataclass
class AugParams:
    ops: tuple[str, ...]
    values: dict[str, Tensor] = field(default_factory=dict)
    n: int | None = None  # None: one parameter set shared by any batch


@dataclass(frozen=True)
class DSA:
    strategy: str = DEFAULT_STRATEGY
    mode: str = "single"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    flip_prob: float = 0.5

    def __post_init__(self):
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"unknown DSA transforms {bad or [self.strategy]}; known: {', '.join(OPS)}")
        if self.mode not in MODES:
            raise ValueError(f"DSA mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}")

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(o for o in self.strategy.split("_") if o)

    @classmethod
    def for_data(cls, info, strategy: str = DEFAULT_STRATEGY, **kw) -> "DSA":
        """The strategy without ``flip`` when flipping changes labels (digits)."""
        if not info.flip:
            strategy = "_".join(o for o in strategy.split("_") if o != "flip")
        return cls(strategy, **kw)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, n: int | None, generator: torch.Generator, size: tuple[int, int] = (32, 32)) -> AugParams:
        """Parameters for a batch of ``n`` (or shared by any batch when ``n`` is None);
        ``size`` is the image size (crop and cutout offsets depend on it)."""
        if self.mode == "single":
            ops = (self.ops[int(torch.randint(len(self.ops), (1,), generator=generator))],)
        elif self.mode == "idc":
            # IDC's DiffAug: flip and color always, one of the rest, cutout always (that order)
            fixed = IDC_ALWAYS_FIRST + IDC_ALWAYS_LAST
            rest = [o for o in self.ops if o not in fixed]
            pick = [rest[int(torch.randint(len(rest), (1,), generator=generator))]] if rest else []
            ops = tuple([o for o in IDC_ALWAYS_FIRST if o in self.ops] + pick
                        + [o for o in IDC_ALWAYS_LAST if o in self.ops])
        else:
            ops = self.ops
        m = 1 if n is None else n
        g = generator
        v: dict[str, Tensor] = {}
        h, w = size
        for op in ops:
            if op == "color":
                v["brightness"] = (torch.rand(m, 1, 1, 1, generator=g) - 0.5) * self.brightness
                v["saturation"] = torch.rand(m, 1, 1, 1, generator=g) * self.saturation
                v["contrast"] = torch.rand(m, 1, 1, 1, generator=g) + self.contrast
            elif op == "crop":
                sx, sy = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
                v["crop_x"] = torch.randint(-sx, sx + 1, (m, 1, 1), generator=g)
                v["crop_y"] = torch.randint(-sy, sy + 1, (m, 1, 1), generator=g)
            elif op == "cutout":
                cx, cy = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
                v["cut_x"] = torch.randint(0, h + (1 - cx % 2), (m, 1, 1), generator=g)
                v["cut_y"] = torch.randint(0, w + (1 - cy % 2), (m, 1, 1), generator=g)
            elif op == "flip":
                v["flip"] = torch.rand(m, 1, 1, 1, generator=g) < self.flip_prob
            elif op == "scale":
                lo = 1.0 / self.scale
                v["scale"] = torch.rand(m, 2, generator=g) * (self.scale - lo) + lo
            elif op == "rotate":
                v["angle"] = (torch.rand(m, generator=g) - 0.5) * 2 * self.rotate / 180 * math.pi
        return AugParams(ops, v, n)

    # -- applying ---------------------------------------------------------------------------
    def apply(self, x: Tensor, p: AugParams) -> Tensor:
        if p.n is not None and p.n != x.shape[0]:
            raise ValueError(f"augmentation sampled for {p.n} examples applied to {x.shape[0]}")
        v = {k: t.to(x.device) for k, t in p.values.items()}
        for op in p.ops:
            x = getattr(self, f"_{op}")(x, v)
        return x

    def __call__(self, x: Tensor, generator: torch.Generator, shared: bool = False) -> Tensor:
        return self.apply(x, self.sample(None if shared else x.shape[0], generator, x.shape[-2:]))

    @staticmethod
    def _color(x, v):
        x = x + v["brightness"].to(x.dtype)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * v["saturation"].to(x.dtype) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * v["contrast"].to(x.dtype) + m

    @staticmethod
    def _flip(x, v):
        return torch.where(v["flip"], x.flip(3), x)

    @staticmethod
    def _affine(x, theta):
        theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _scale(self, x, v):
        s = v["scale"]
        z = torch.zeros_like(s[:, 0])
        theta = torch.stack([torch.stack([s[:, 0], z, z], 1), torch.stack([z, s[:, 1], z], 1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x, v):
        a = v["angle"]
        c, s, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
        theta = torch.stack([torch.stack([c, s, z], 1), torch.stack([-s, c, z], 1)], 1)
        return self._affine(x, theta)

    @staticmethod
    def _crop(x, v):
        n, _, h, w = x.shape
        dev = x.device
        gx = (torch.arange(h, device=dev).view(1, h, 1) + v["crop_x"] + 1).clamp(0, h + 1)
        gy = (torch.arange(w, device=dev).view(1, 1, w) + v["crop_y"] + 1).clamp(0, w + 1)
        gx, gy = gx.expand(n, h, w), gy.expand(n, h, w)
        b = torch.arange(n, device=dev).view(n, 1, 1).expand(n, h, w)
        xp = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
        return xp[b, gx, gy].permute(0, 3, 1, 2)

    def _cutout(self, x, v):
        n, _, h, w = x.shape
        dev = x.device
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        gx = (torch.arange(ch, device=dev).view(1, ch, 1) + v["cut_x"] - ch // 2).clamp(0, h - 1)
        gy = (torch.arange(cw, device=dev).view(1, 1, cw) + v["cut_y"] - cw // 2).clamp(0, w - 1)
        m = v["cut_x"].shape[0]
        mask = torch.ones(m, h, w, device=dev, dtype=x.dtype)
        b = torch.arange(m, device=dev).view(m, 1, 1).expand(m, ch, cw)
        mask[b, gx.expand(m, ch, cw), gy.expand(m, ch, cw)] = 0
        return x * mask.unsqueeze(1)
