"""What every consumer needs to know about a dataset, and the split container."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import DataFormatError, DatasetNotFoundError  # noqa: F401 (raised by the loaders)
from ..registry import Registry

#: name -> loader(data_dir=None, download=True, **kw) -> a data object with ``.info``
DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class DataInfo:
    """Dataset facts shared by models, augmentation, summaries and evaluation.

    ``shape`` is the shape of one example (``(C, H, W)`` for images). ``mean``/``std`` are the
    per-channel normalization already applied to the tensors. ``flip`` says whether a horizontal
    flip preserves labels (False for digits). ``zca`` says the tensors are ZCA-whitened. ``task``
    is what a graph dataset's labels belong to: ``"node"`` or ``"graph"`` (None elsewhere).
    """

    name: str
    modality: str
    num_classes: int
    shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    flip: bool = True
    zca: bool = False
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.shape[1:])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("shape", "mean", "std", "class_names"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DataInfo fields {sorted(unknown)}")
        d = dict(d)
        extra = d.get("extra") or {}
        if "task" in extra and "task" not in d:  # summaries saved before ``task`` was a field
            d["extra"] = {k: v for k, v in extra.items() if k != "task"}
            d["task"] = extra["task"]
        for k in ("shape", "mean", "std", "class_names"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **kw: Any) -> "DataInfo":
        return dataclasses.replace(self, **kw)


@dataclass
class Split:
    """A labelled tensor split: ``x`` float (normalized), ``y`` long class indices."""

    x: Tensor
    y: Tensor

    def __post_init__(self):
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


class RealData:
    """The real dataset: train / validation / test splits plus ``DataInfo``.

    The validation split is carved from train with a fixed seed; the test split is never used
    for any choice (only by ``evaluate``). ``preprocess`` maps raw normalized tensors into the
    space the splits live in (identity, or ZCA), so evaluation can reproduce it anywhere.
    """

    def __init__(self, info: DataInfo, train: Split, val: Split, test: Split, zca=None):
        self.info, self.train, self.val, self.test, self.zca = info, train, val, test, zca
        self._by_class: list[Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.train.x.device

    def to(self, device) -> "RealData":
        return RealData(self.info, self.train.to(device), self.val.to(device),
                        self.test.to(device), self.zca)

    def class_indices(self, c: int) -> Tensor:
        """Indices of training examples of class ``c`` (on CPU)."""
        if self._by_class is None:
            y = self.train.y.cpu()
            self._by_class = [torch.nonzero(y == k).flatten() for k in range(self.info.num_classes)]
        return self._by_class[c]

    def class_counts(self) -> list[int]:
        return [len(self.class_indices(c)) for c in range(self.info.num_classes)]

    def sample_class(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """``min(n, class size)`` random training images of class ``c``, without replacement
        (as the reference code's ``get_images``)."""
        idx = self.class_indices(c)
        pick = idx[torch.randperm(len(idx), generator=generator)[:n]]
        return self.train.x[pick.to(self.train.x.device)]

    def __repr__(self) -> str:
        return (f"RealData({self.info.name}: train {len(self.train)}, val {len(self.val)}, "
                f"test {len(self.test)}, {self.info.num_classes} classes, shape {self.info.shape})")

