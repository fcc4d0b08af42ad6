"""SyntheticSet: the learnable data summary, and its save/load format.

A summary is an ``nn.Module`` whose ``materialize()`` returns a differentiable ``(x, y)``; ``y``
is hard class indices or soft targets depending on ``label_format``. ``class_ids`` gives the hard
class of every materialized example (for per-class matching). On disk a summary is a folder with
``summary.safetensors`` (its tensors, plus preprocessing tensors such as ZCA under ``pre.``)
and ``summary.json`` (kind, constructor config, dataset info, label format, learned step size,
method and all its parameters, seed, library version, iterations, wall time, stored bytes).

Storage precision (``synsets/storage.py``): ``set_storage("uint8")`` (or float16 / bfloat16)
makes every subclass quantization-aware without touching its ``materialize()``: the base class
wraps each subclass's ``materialize`` so that it runs inside ``as_stored()``, where the data
tensors read as their stored (fake-quantized, straight-through) values. Code that reads a data
tensor directly (``syn.x``) instead of through ``materialize()`` should do so inside
``with syn.as_stored():``. ``save`` writes the stored form, ``load`` restores it, and
``stored_bytes()`` counts it. Integer tensors are stored (and counted) at the smallest integer
dtype that holds them.
"""
from __future__ import annotations

import contextlib
import functools
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
from .storage import HI, LO, Storage, is_stored_float, smallest_int_dtype

SYNSETS: Registry = Registry("summary type")
#: 1: float32 data (readable by every version); 2: data at a lower storage precision
FORMAT_VERSION = 1
QUANTIZED_FORMAT_VERSION = 2
READABLE_FORMATS = (FORMAT_VERSION, QUANTIZED_FORMAT_VERSION)
LABEL_FORMATS = ("hard", "soft", "regression")
TENSORS_FILE, META_FILE = "summary.safetensors", "summary.json"


class SyntheticSet(nn.Module):
    kind = "base"
    #: the storage precision (``set_storage``); a class attribute so that every subclass, whatever
    #: its constructor, starts at float32
    storage: Storage = Storage()
    _stored_depth: int = 0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        own = cls.__dict__.get("materialize")
        if own is not None and not getattr(own, "_stored_view", False):
            cls.materialize = _stored_materialize(own)

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
        """Bytes of the summary's own tensors as stored (labels and step size included): data
        tensors at the storage precision (uint8: with their ranges), integer tensors at the
        smallest integer dtype that holds them."""
        total = 0
        quantized = self._stored_names()
        for k, t in self.state_dict().items():
            if k in quantized:
                st = self.storage
                total += t.numel() * st.bytes_per_number() + 8 * st.num_ranges(t)
            elif not t.is_floating_point() and not t.is_complex():
                total += t.numel() * torch.empty((), dtype=smallest_int_dtype(t)).element_size()
            else:
                total += t.numel() * t.element_size()
        return total

    # -- storage precision --------------------------------------------------------------------
    def set_storage(self, storage: "str | Storage | None") -> "SyntheticSet":
        """Store the data tensors at ``storage`` (float32, float16, bfloat16, uint8,
        uint8-channel); from now on ``materialize()`` returns the stored values. Summaries that
        count their bytes their own way (graphs, recommender users) support float32 only."""
        st = Storage.parse(storage)
        if not st.exact and type(self).stored_bytes is not SyntheticSet.stored_bytes:
            raise ValueError(f"{self.kind} summaries count their stored bytes their own way and "
                             f"support storage float32 only, not {st.name}")
        self.storage = st
        return self

    def _stored_tensors(self) -> list[tuple[nn.Module, str, str, bool]]:
        """(module, attribute, state_dict key, is_parameter) of every data tensor stored at the
        storage precision."""
        out = []
        for prefix, mod in self.named_modules():
            for name, t in list(mod._parameters.items()) + list(mod._buffers.items()):
                if t is None:
                    continue
                is_param = name in mod._parameters
                key = f"{prefix}.{name}" if prefix else name
                if is_param or name not in mod._non_persistent_buffers_set:
                    if is_stored_float(key, t, is_param=is_param):
                        out.append((mod, name, key, is_param))
        return out

    def _stored_names(self) -> set[str]:
        return set() if self.storage.exact else {k for _, _, k, _ in self._stored_tensors()}

    @contextlib.contextmanager
    def as_stored(self):
        """Inside, every data tensor reads as its stored value (fake-quantized, with a
        straight-through gradient to the float32 parameter). Re-entrant; a no-op at float32.
        ``materialize()`` of every subclass runs inside it."""
        swapped = []
        if not self.storage.exact and self._stored_depth == 0:
            for mod, name, _, is_param in self._stored_tensors():
                table = mod._parameters if is_param else mod._buffers
                swapped.append((table, name, table[name]))
        self._stored_depth += 1
        try:
            for table, name, t in swapped:
                table[name] = self.storage.fake_quantize(t)
            yield self
        finally:
            self._stored_depth -= 1
            for table, name, t in swapped:
                table[name] = t

    def _stored_state(self) -> dict[str, Tensor]:
        """The tensors ``save`` writes: data at the storage precision (uint8: codes plus
        ``q.lo.<key>`` / ``q.hi.<key>`` ranges), integers at their smallest dtype."""
        quantized = self._stored_names()
        out: dict[str, Tensor] = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            if k in quantized:
                enc = self.storage.encode(v)
                out[k] = enc[""]
                if "lo" in enc:
                    out[LO + k], out[HI + k] = enc["lo"], enc["hi"]
            elif not v.is_floating_point() and not v.is_complex() and v.dtype != torch.bool:
                out[k] = v.to(smallest_int_dtype(v))
            else:
                out[k] = v
        return {k: v.contiguous() for k, v in out.items()}

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
        tensors = self._stored_state()
        tensors.update({f"pre.{k}": v.detach().cpu().contiguous() for k, v in self.preprocess.items()})
        meta = {
            "format_version": FORMAT_VERSION if self.storage.exact else QUANTIZED_FORMAT_VERSION,
            "library": "datadistill", "library_version": __version__,
            "kind": self.kind, "config": self.config(), "info": self.info.to_dict(),
            "storage": self.storage.name,
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
        if meta.get("format_version") not in READABLE_FORMATS:
            raise SummaryFormatError(f"{path}: summary format {meta.get('format_version')} is not "
                                     f"supported by this version (expects one of "
                                     f"{', '.join(map(str, READABLE_FORMATS))})")
        try:
            tensors = load_file(str(path / TENSORS_FILE))
        except (SafetensorError, OSError, FileNotFoundError) as e:
            raise SummaryFormatError(f"{path / TENSORS_FILE} is missing or corrupted: {e}") from e
        try:
            cls = SYNSETS.get(meta["kind"])
            info = DataInfo.from_dict(meta["info"])
            syn = cls(info, label_format=meta["label_format"], lr=meta["lr"], **meta["config"])
            syn.set_storage(meta.get("storage", "float32"))
            own = {k: v for k, v in tensors.items()
                   if not k.startswith(("pre.", LO, HI))}
            for k in list(own):
                if LO + k in tensors:  # uint8 codes -> the stored values
                    own[k] = syn.storage.decode({"": own[k], "lo": tensors[LO + k],
                                                 "hi": tensors[HI + k]})
            state = syn.state_dict()
            for k, v in own.items():  # low-precision floats and small integers -> own dtype
                if k in state and v.dtype != state[k].dtype:
                    own[k] = v.to(state[k].dtype)
            syn.load_state_dict(own, strict=True)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise SummaryFormatError(f"{path}: summary is incompatible with its metadata: {e}") from e
        syn.preprocess = {k[4:]: v for k, v in tensors.items() if k.startswith("pre.")}
        syn.meta = {k: v for k, v in meta.items() if k not in (
            "format_version", "library", "kind", "config", "info", "label_format", "lr",
            "num_examples", "ipc", "stored_bytes", "storage")}
        return syn.to(device) if device is not None else syn

    def extra_repr(self) -> str:
        return (f"{self.info.name}, {self.num_examples} examples ({self.ipc:g}/class), "
                f"labels={self.label_format}, stored={self.stored_bytes()} B"
                + ("" if self.storage.exact else f" at {self.storage.name}"))


def _stored_materialize(fn):
    """A subclass's ``materialize`` run inside ``as_stored()`` (quantization-aware storage)."""
    @functools.wraps(fn)
    def materialize(self, *args, **kw):
        if self.storage.exact:
            return fn(self, *args, **kw)
        with self.as_stored():
            return fn(self, *args, **kw)
    materialize._stored_view = True
    return materialize


def _json_default(o):
    if isinstance(o, (Path, torch.device)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
