"""Full-data references: a network trained on the whole training split with a standard schedule,
cached on disk (weights + accuracy) so evaluation and coreset selection reuse it.

The validation split is what the cache records besides test accuracy; no choice uses the test
split (the schedule is fixed; the final model is kept).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from safetensors.torch import load_file, save_file

from ..augment import DSA
from ..data.base import RealData
from ..data.files import cache_root
from ..models import create_model
from ..runtime import make_generator, resolve_device
from ..train import accuracy, train_model

#: A standard full-data schedule ("tens of epochs"): SGD momentum 0.9, lr 0.01 x0.1 at half.
FULL_SETTINGS = {"epochs": 20, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                 "batch_size": 256, "dsa": False, "seed": 0, "precision": "fp32"}


def cache_dir() -> Path:
    return cache_root() / "full"


def _key(real: RealData, model: str, settings: dict[str, Any]) -> str:
    info = real.info
    blob = json.dumps({"data": [info.name, list(info.shape), info.num_classes, len(real.train),
                                list(info.mean), info.zca], "model": model, **settings},
                      sort_keys=True)
    return f"{info.name}-{model}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def full_data_model(real: RealData, model: str = "convnet", *, device=None, fused: bool = False,
                    settings: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The cached full-data model (trained now if absent) and its record; ``fused``: train it
    with the fused CPU kernels (a speed setting)."""
    s = {**FULL_SETTINGS, **(settings or {})}
    dev = resolve_device(device)
    key = _key(real, model, s)
    d = cache_dir()
    wpath, jpath = d / f"{key}.safetensors", d / f"{key}.json"
    gen = make_generator(s["seed"])
    net = create_model(model, real.info, generator=gen, fused=fused)
    if wpath.exists() and jpath.exists():
        net.load_state_dict(load_file(str(wpath)))
        return net.to(dev).eval(), json.loads(jpath.read_text())
    net = net.to(dev)
    dsa = DSA.for_data(real.info) if s["dsa"] else None
    tr = real.train.to(dev)
    train_model(net, tr.x, tr.y, epochs=s["epochs"], generator=gen, lr=s["lr"],
                momentum=s["momentum"], weight_decay=s["weight_decay"],
                batch_size=s["batch_size"], dsa=dsa, precision=s["precision"])
    rec = {"dataset": real.info.name, "model": model, "settings": s,
           "val_accuracy": 100 * accuracy(net, real.val.x.to(dev), real.val.y.to(dev)),
           "accuracy": 100 * accuracy(net, real.test.x.to(dev), real.test.y.to(dev))}
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
              str(wpath) + ".tmp")
    os.replace(str(wpath) + ".tmp", wpath)
    jpath.write_text(json.dumps(rec, indent=2))
    return net.eval(), rec


def full_data_accuracy(real: RealData, model: str = "convnet", *, device=None, fused: bool = False,
                       settings: dict[str, Any] | None = None) -> dict[str, Any]:
    return full_data_model(real, model, device=device, fused=fused, settings=settings)[1]
