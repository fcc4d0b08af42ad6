"""The architecture search space of the NAS application: ConvNet variants from the model
registry's parts (``models/convnet.py``'s ``ConvNet`` with ``models/layers.py``'s norms,
activations and pooling), as DC-BENCH builds it (Cui et al., NeurIPS 2022 Datasets and
Benchmarks: depth x width x normalization x activation x pooling, 720 ConvNets).

An architecture is registered in ``MODELS`` under a name that spells its parts,
``convnet_d3_w128_in_relu_ap`` (the tags of ``convnet.py``'s own variants), by binding
``ConvNet``'s arguments: ``register(archs)`` registers only the ones asked for, when asked, so
importing this module adds nothing to the registry (the model contract tests stay the size of
the hand-registered zoo).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Sequence

import torch

from ..errors import ConfigError

#: DC-BENCH's axes (the registry's parts): 4 x 4 x 5 x 3 x 3 = 720 architectures
DEPTHS = (1, 2, 3, 4)
WIDTHS = (32, 64, 128, 256)
NORMS = ("none", "batch", "layer", "instance", "group")
ACTS = ("sigmoid", "relu", "leakyrelu")
POOLS = ("none", "max", "avg")

NORM_TAGS = {"none": "nn", "batch": "bn", "instance": "in", "layer": "ln", "group": "gn"}
POOL_TAGS = {"avg": "ap", "max": "mp", "none": "np"}
ACT_TAGS = {"relu": "relu", "sigmoid": "sigmoid", "leakyrelu": "lrelu", "gelu": "gelu"}
_NAME = re.compile(r"^convnet_d(\d+)_w(\d+)_([a-z]+)_([a-z]+)_([a-z]+)$")


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    """One ConvNet of the space: ``ConvNet(info, depth=, width=, norm=, act=, pool=)``."""
    depth: int
    width: int
    norm: str
    act: str
    pool: str

    def __post_init__(self):
        from ..models.layers import NORMS as _N, POOLS as _P
        if self.depth < 1 or self.width < 1:
            raise ConfigError(f"depth and width must be >= 1: {self}")
        if self.norm not in _N or self.pool not in _P or self.act not in ACT_TAGS:
            raise ConfigError(f"unknown part in {self}: norms {_N}, activations "
                              f"{tuple(ACT_TAGS)}, pooling {_P}")

    @property
    def name(self) -> str:
        return (f"convnet_d{self.depth}_w{self.width}_{NORM_TAGS[self.norm]}_"
                f"{ACT_TAGS[self.act]}_{POOL_TAGS[self.pool]}")

    @property
    def kwargs(self) -> dict:
        return {"depth": self.depth, "width": self.width, "norm": self.norm, "act": self.act,
                "pool": self.pool}

    @classmethod
    def parse(cls, name: str) -> "Arch":
        """``convnet_d3_w128_in_relu_ap`` -> Arch(3, 128, "instance", "relu", "avg")."""
        m = _NAME.match(name.strip().lower())
        inv = lambda d, v: {t: k for k, t in d.items()}.get(v)  # noqa: E731
        if m is None or None in (inv(NORM_TAGS, m[3]), inv(ACT_TAGS, m[4]), inv(POOL_TAGS, m[5])):
            raise ConfigError(f"{name!r} is not an architecture name like "
                              f"convnet_d3_w128_in_relu_ap (norm {'/'.join(NORM_TAGS.values())}, "
                              f"activation {'/'.join(ACT_TAGS.values())}, pooling "
                              f"{'/'.join(POOL_TAGS.values())})")
        return cls(int(m[1]), int(m[2]), inv(NORM_TAGS, m[3]), inv(ACT_TAGS, m[4]),
                   inv(POOL_TAGS, m[5]))


#: the field's ConvNet (DC/DSA/DM/MTT) as a point of the space
FIELD_CONVNET = Arch(3, 128, "instance", "relu", "avg")


def search_space(depths: Sequence[int] = DEPTHS, widths: Sequence[int] = WIDTHS,
                 norms: Sequence[str] = NORMS, acts: Sequence[str] = ACTS,
                 pools: Sequence[str] = POOLS) -> list[Arch]:
    """Every combination of the axes (the default: DC-BENCH's 720 ConvNets), sorted."""
    return sorted(Arch(*p) for p in itertools.product(depths, widths, norms, acts, pools))


def sample_space(space: Sequence[Arch], n: int | None, seed: int = 0,
                 include: Iterable[Arch] = (FIELD_CONVNET,)) -> list[Arch]:
    """``n`` architectures drawn without replacement from ``space`` (a fixed draw from
    ``seed``), always holding those of ``include`` that are in the space; ``None`` or
    ``n >= len(space)`` keeps the whole space."""
    space = list(space)
    if n is None or n >= len(space):
        return space
    if n < 3:
        raise ConfigError(f"a search needs at least 3 architectures, got {n}")
    keep = [a for a in include if a in space][:n]
    rest = [a for a in space if a not in keep]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(rest), generator=g)[:n - len(keep)].tolist()
    return sorted(keep + [rest[i] for i in pick])


def register(archs: Iterable[Arch]) -> list[str]:
    """Register each architecture in ``MODELS`` (``ConvNet`` with bound arguments) unless a
    model of that name exists; returns their names."""
    from ..models import MODELS
    from ..models.convnet import ConvNet
    names = []
    for a in archs:
        if a.name not in MODELS:
            MODELS.register(a.name, ConvNet, **a.kwargs)
        names.append(a.name)
    return names
