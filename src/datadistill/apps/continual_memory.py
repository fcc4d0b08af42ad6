"""The memories of the continual-learning app (``continual.py``): one task's stored examples
(``Memory``, labels in the global class space), made from that task's data only by a baseline
or a method, or taken from a saved summary of all classes (``make_memory``); and the incremental
training that replays them beside the new task's data (``_train_increment``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import RealData
from ..errors import ConfigError
from ..synsets.base import SyntheticSet
from . import _common as C


@dataclasses.dataclass
class Memory:
    """One task's stored examples with labels in the global class space."""
    x: Tensor
    y: Tensor
    label_format: str
    stored_bytes: int
    lr: float | None
    cpu_s: float


_globalize = C.globalize_labels  # (the name the tests and continual.py know)


def make_memory(real: RealData, classes: Sequence[int], source: str, ipc: int, *, seed: int,
                summary: SyntheticSet | None = None, iterations: int | None = None,
                preset: str | None = None, params: dict[str, Any] | None = None, run=None,
                feature_settings: dict[str, Any] | None = None,
                feature_model: str | None = None) -> Memory:
    """The memory of one task: ``ipc`` examples per class of ``classes`` made by ``source``
    from that task's data only (or taken from a saved ``summary`` of all classes)."""
    k = real.info.num_classes
    with C.Timer() as t:
        if source == "summary":
            if summary is None:
                raise ConfigError("strategy *-summary needs a saved summary (--summary PATH)")
            x, y = C.summary_tensors(summary)
            keep = torch.isin(summary.class_ids.cpu(), torch.tensor(list(classes)))
            x, y = x[keep.to(x.device)], y[keep.to(y.device)]
            fmt = summary.label_format
            nbytes = round(summary.stored_bytes() * len(classes) / k)
            lr = None if summary.lr is None else float(summary.lr.detach())
        else:
            view = C.class_view(real, classes)
            syn = C.summary_for(view, source, ipc, seed=seed, iterations=iterations,
                                 preset=preset, params=params, run=run,
                                 feature_settings=feature_settings,
                                 feature_model=feature_model)
            x, y = C.summary_tensors(syn)
            fmt, nbytes = syn.label_format, syn.stored_bytes()
            y = _globalize(y, fmt, classes, k)
            lr = None if syn.lr is None else float(syn.lr.detach())
    return Memory(x.cpu(), y.cpu(), fmt, int(nbytes), lr, t.cpu)


def _train_increment(net, x: Tensor, y: Tensor, buf: Memory | None, *, epochs: int,
                     batch_size: int, lr: float, generator: torch.Generator,
                     precision: str = "fp32") -> None:
    """SGD (momentum 0.9, weight decay 5e-4, constant lr) on the new task's data; with ``buf``
    each minibatch is joined by as many examples drawn from the memory (without replacement)."""
    from ..runtime import autocast
    from ..train import label_loss
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    n, dev = x.shape[0], x.device
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(dev)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            with autocast(dev, precision):
                if buf is None:
                    loss = F.cross_entropy(net(xb).float(), yb)
                else:
                    j = torch.randperm(buf.x.shape[0], generator=generator)[:len(idx)].to(dev)
                    if buf.label_format == "hard":  # one batch, as experience replay does
                        loss = F.cross_entropy(net(torch.cat([xb, buf.x[j]])).float(),
                                               torch.cat([yb, buf.y[j]]))
                    else:
                        m, mb = len(idx), len(j)
                        loss = (m * F.cross_entropy(net(xb).float(), yb) + mb * label_loss(
                            net(buf.x[j]), buf.y[j], buf.label_format)) / (m + mb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
