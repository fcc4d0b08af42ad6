"""SyntheticSet: the learnable data summary, and its save/load format.

A summary is an ``nn.Module`` whose ``materialize()`` returns a differentiable ``(x, y)``; ``y``
is hard class indices or soft targets depending on ``label_format``. ``class_ids`` gives the hard
class of every materialized example (for per-class matching). On disk a summary is a folder with
``summary.safetensors`` (its tensors, plus preprocessing tensors such as ZCA under ``pre.``)
and ``summary.json`` (kind, constructor config, dataset info, label format, learned step size,
method and all its parameters, seed, library version, iterations, wall time, stored bytes).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.base import DataInfo
from ..errors import SummaryFormatError
from ..registry import Registry

SYNSETS: Registry = Registry("summary type")
FORMAT_VERSION = 1
LABEL_FORMATS = ("hard", "soft", "regression")
TENSORS_FILE, META_FILE = "summary.safetensors", "summary.json"


class SyntheticSet(nn.Module):
    kind = "base"

    def __init__(self, info: DataInfo, *, label_format: str = "hard", lr: float | None = None):
        super().__init__()
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"unknown label format {label_format!r}; known: {', '.join(LABEL_FORMATS)}")
        self.info, self.label_format = info, label_format
        # learned step size (MTT-style), stored as a parameter so optimizers can learn it
        self.lr = None if lr is None else nn.Parameter(torch.tensor(float(lr)))
        self.meta: dict[str, Any] = {}
        self.preprocess: dict[str, Tensor] = {}  # e.g. ZCA; saved, not counted as stored bytes

    # -- to implement -------------------------------------------------------------------------
    def materialize(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def class_ids(self) -> Tensor:
        """Hard class index of each materialized example."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor keywords (besides ``info``) that rebuild an empty set of this shape."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def data_parameters(self) -> list[nn.Parameter]:
        """The parameters that hold data (everything but the learned step size)."""
        return [p for n, p in self.named_parameters() if n != "lr"]

    def stored_bytes(self) -> int:
        """Bytes of the summary's own tensors (labels and step size included)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    @property
    def num_examples(self) -> int:
        return int(self.class_ids.numel())

    @property
    def ipc(self) -> float:
        """Materialized examples per class."""
        return self.num_examples / self.info.num_classes

    def check_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/summary.safetensors`` and ``path/summary.json`` (atomically each)."""
        from safetensors.torch import save_file

        from .. import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tensors.update({f"pre.{k}": v.detach().cpu().contiguous() for k, v in self.preprocess.items()})
        meta = {
            "format_version": FORMAT_VERSION, "library": "datadistill", "library_version": __version__,
            "kind": self.kind, "config": self.config(), "info": self.info.to_dict(),
            "label_format": self.label_format,
            "lr": None if self.lr is None else float(self.lr.detach()),
            "num_examples": self.num_examples, "ipc": self.ipc, "stored_bytes": self.stored_bytes(),
            **{k: v for k, v in self.meta.items() if k not in ("kind", "config", "info")},
        }
        tmp = path / (TENSORS_FILE + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path / TENSORS_FILE)
        tmp = path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default))
        os.replace(tmp, path / META_FILE)
        return path

    @staticmethod
    def load(path: str | os.PathLike, device=None) -> "SyntheticSet":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_file() and path.name in (TENSORS_FILE, META_FILE):
            path = path.parent
        if not path.is_dir() or not (path / META_FILE).exists():
            raise SummaryFormatError(f"{path} is not a summary folder (no {META_FILE})")
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SummaryFormatError(f"{path / META_FILE} is corrupted: {e}") from e
        if not isinstance(meta, dict) or meta.get("library") != "datadistill":
            raise SummaryFormatError(f"{path / META_FILE} is not a datadistill summary")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SummaryFormatError(f"{path}: summary format {meta.get('format_version')} is not "
                                     f"supported by this version (expects {FORMAT_VERSION})")
        try:
            tensors = load_file(str(path / TENSORS_FILE))
        except (SafetensorError, OSError, FileNotFoundError) as e:
            raise SummaryFormatError(f"{path / TENSORS_FILE} is missing or corrupted: {e}") from e
        try:
            cls = SYNSETS.get(meta["kind"])
            info = DataInfo.from_dict(meta["info"])
            syn = cls(info, label_format=meta["label_format"], lr=meta["lr"], **meta["config"])
            own = {k: v for k, v in tensors.items() if not k.startswith("pre.")}
            syn.load_state_dict(own, strict=True)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise SummaryFormatError(f"{path}: summary is incompatible with its metadata: {e}") from e
        syn.preprocess = {k[4:]: v for k, v in tensors.items() if k.startswith("pre.")}
        syn.meta = {k: v for k, v in meta.items() if k not in (
            "format_version", "library", "kind", "config", "info", "label_format", "lr",
            "num_examples", "ipc", "stored_bytes")}
        return syn.to(device) if device is not None else syn

    def extra_repr(self) -> str:
        return (f"{self.info.name}, {self.num_examples} examples ({self.ipc:g}/class), "
                f"labels={self.label_format}, stored={self.stored_bytes()} B")


def _json_default(o):
    if isinstance(o, (Path, torch.device)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
