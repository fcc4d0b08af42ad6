"""Nested state (dicts, lists, tensors, numbers, strings) on disk without pickle.

A checkpoint is two files: ``<name>.json`` holds the structure and every plain value, and
``<name>-<k>.safetensors`` holds every tensor, named by its path in the structure. Loading
never executes code (unlike ``torch.load(weights_only=False)``), so a run folder someone shared
is safe to resume. Writing is atomic as a pair: the tensor file gets a fresh name, then the JSON
that points to it replaces the old one, then older tensor files are removed; a crash at any
point leaves the previous checkpoint readable.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

_T, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu().clone(memory_format=torch.contiguous_format)
        return {_T: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _T not in obj and _DICT not in obj \
                and _TUPLE not in obj:
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        # non-string keys (optimizer states are keyed by int): a list of [key, value] pairs
        return {_DICT: [[_encode(k, tensors, f"{path}.k{i}"), _encode(v, tensors, f"{path}.v{i}")]
                        for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {path or 'root'}); "
                    f"use tensors, numbers, strings, lists and dicts")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _T in obj:
            return tensors[obj[_T]]
        if _TUPLE in obj:
            return tuple(_decode(v, tensors) for v in obj[_TUPLE])
        if _DICT in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj[_DICT]}
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_state(state: Any, directory: str | os.PathLike, name: str) -> Path:
    """Write ``state`` as ``<name>.json`` + ``<name>-<k>.safetensors`` in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": "datadistill-state/1", "state": _encode(state, tensors, "")}
    old = sorted(d.glob(f"{name}-*.safetensors"))
    k = 1 + max((int(p.stem.rsplit("-", 1)[1]) for p in old
                 if p.stem.rsplit("-", 1)[1].isdigit()), default=0)
    tfile = d / f"{name}-{k}.safetensors"
    save_file(tensors, str(tfile))
    doc["tensors"] = tfile.name
    tmp = d / f"{name}.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, d / f"{name}.json")
    for p in old:
        p.unlink(missing_ok=True)
    return d / f"{name}.json"


def exists(directory: str | os.PathLike, name: str) -> bool:
    return (Path(directory) / f"{name}.json").exists()


def load_state(directory: str | os.PathLike, name: str) -> Any:
    """Read what ``save_state`` wrote; ``CheckpointError`` if it is missing or inconsistent."""
    d = Path(directory)
    j = d / f"{name}.json"
    if not j.exists():
        raise CheckpointError(f"no checkpoint {j}")
    try:
        doc = json.loads(j.read_text())
        tensors = load_file(str(d / doc["tensors"]))
        return _decode(doc["state"], tensors)
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {j} is unreadable or incomplete ({e})") from e
