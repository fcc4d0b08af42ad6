"""Training a fresh model on a (synthetic or real) labelled set, and testing it.

The one inner-training routine of the library: evaluation, coreset features, the full-data
reference and methods that train networks on summaries all call ``train_model``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import DSA
from .cutmix import CutMix
from .runtime import autocast


def label_loss(out: Tensor, y: Tensor, label_format: str = "hard") -> Tensor:
    """Cross-entropy for hard labels; soft labels are logits of the target distribution;
    regression labels are MSE targets (KIP/FRePO-style)."""
    out = out.float()
    if label_format == "hard":
        return F.cross_entropy(out, y)
    if label_format == "soft":
        return F.cross_entropy(out, F.softmax(y.float(), dim=-1))
    if label_format == "regression":
        return F.mse_loss(out, y.float())
    raise ValueError(f"unknown label format {label_format!r}")


#: ``train_model`` schedules: how the epochs and the lr step are laid out.
SCHEDULES = ("fraction", "reference", "multistep")
#: the ``multistep`` schedule (IDC's ``train.py``): MultiStepLR at these fractions of the
#: epochs (``2 * epochs // 3``, ``5 * epochs // 6``), lr x ``MULTISTEP_GAMMA`` at each
MULTISTEP_AT, MULTISTEP_GAMMA = ((2, 3), (5, 6)), 0.2


def train_model(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, generator: torch.Generator,
                lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                batch_size: int = 256, decay_at: float | None = 0.5, dsa: DSA | None = None,
                label_format: str = "hard", precision: str = "fp32",
                on_epoch: Callable[[int, float], None] | None = None,
                optimizer: torch.optim.Optimizer | None = None, compile: bool = False,
                schedule: str = "fraction", check_finite: bool = True,
                cutmix: CutMix | None = None, resume: dict[str, Any] | None = None,
                on_state: Callable[[dict[str, Any]], None] | None = None) -> nn.Module:
    """SGD with momentum on ``(x, y)``, lr x0.1 at ``decay_at`` of the epochs, shuffled
    mini-batches from ``generator``; per-example DSA when given, then CutMix when given
    (``cutmix.CutMix``: per mini-batch, after DSA, its draws from ``generator``; the loss is
    the label-mixed ``lam' * l(y) + (1 - lam') * l(y[perm])``; None, the default, draws
    nothing and changes nothing).

    ``schedule`` lays out the passes:

    - ``"fraction"`` (the inner loops of methods, the full-data reference): ``epochs`` passes; the
      lr drops to ``lr * 0.1`` at the start of pass ``int(epochs * decay_at)``, momentum kept.
    - ``"reference"`` (the field's evaluator, DatasetCondensation's ``evaluate_synset``, exactly):
      ``epochs + 1`` passes; after pass ``int(epochs * decay_at) + 1`` (``Epoch // 2 + 1`` there)
      a NEW SGD optimizer with ``lr * 0.1`` replaces the old one, so the momentum buffer restarts.
    - ``"multistep"`` (IDC's evaluation, ``train.py`` ``train``: ``MultiStepLR(milestones=[2E//3,
      5E//6], gamma=0.2)``, stepped after every epoch): ``epochs`` passes; the lr is multiplied by
      0.2 in place at the start of passes ``2 * epochs // 3`` and ``5 * epochs // 6``, momentum
      kept; ``decay_at`` is unused.

    ``optimizer`` continues an existing optimizer of ``model`` (its state, e.g. momentum, carries
    over between calls; ``lr``/``momentum``/``weight_decay`` are then unused, except that the
    ``reference`` schedule's new optimizer takes the given optimizer's momentum and weight decay).
    ``compile`` runs the forward and backward through ``torch.compile`` (the same math: the norm,
    activation and pooling passes are fused; on CPU about 1.3-1.5x faster per step for the field's
    ConvNet, after a one-off compilation of ~10 s).

    ``on_state`` is called after every pass with the training's state at that point: ``epoch``
    (passes done), ``model`` and ``optimizer`` (their ``state_dict``s: live tensors, to be saved
    or copied during the call; the ``reference`` schedule's new optimizer once it replaced the
    old one), ``generator`` (its state). Passing such a state back as ``resume``, to a call with
    the same data and arguments, continues after that pass and ends with the same model, bit for
    bit, as the uninterrupted training. Returns the trained model (in eval mode)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    x, y = x.detach(), y.detach()
    if x.shape[0] == 0:
        raise ValueError("cannot train on an empty set")
    # one read back per call; inner loops of a distiller whose summary is checked elsewhere pass
    # ``check_finite=False`` (no device->host sync per inner training)
    if check_finite and not bool(torch.isfinite(x).all() & torch.isfinite(y.float()).all()):
        raise ValueError("training data contains NaN or inf")
    opt = optimizer if optimizer is not None else torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    passes, decay_epoch = epochs, (int(epochs * decay_at) if decay_at else None)
    milestones = ([epochs * a // b for a, b in MULTISTEP_AT] if schedule == "multistep" else [])
    if schedule == "multistep":
        decay_epoch = None
    if schedule == "reference" and epochs > 0:
        # evaluate_synset: for ep in range(Epoch + 1): train; if ep in [Epoch // 2 + 1]: new SGD
        passes = epochs + 1
        decay_epoch = int(epochs * decay_at) + 2 if decay_at else None
    n, dev = x.shape[0], x.device
    start = 0
    if resume is not None:  # the state ``on_state`` was given after pass ``epoch``
        start = int(resume["epoch"])
        if not 0 <= start <= passes:
            raise ValueError(f"cannot resume after pass {start} of a {passes}-pass training")
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])  # (lr, momentum buffers: past any decay)
        generator.set_state(resume["generator"])
    model.train()
    fwd = torch.compile(model, dynamic=False) if compile else model
    for ep in range(start, passes):
        if ep == decay_epoch:
            if schedule == "reference":  # a new optimizer: the momentum buffer restarts
                g0 = opt.param_groups[0]
                opt = torch.optim.SGD(model.parameters(), lr=lr * 0.1, momentum=g0["momentum"],
                                      weight_decay=g0["weight_decay"])
            else:
                for g in opt.param_groups:
                    g["lr"] = lr * 0.1
        if ep in milestones:  # MultiStepLR: lr x gamma ** (milestones at this epoch), in place
            for g in opt.param_groups:
                g["lr"] = g["lr"] * MULTISTEP_GAMMA ** milestones.count(ep)
        perm = torch.randperm(n, generator=generator).to(dev)
        # the epoch's loss summed on the device in float64 (the same value as a Python float sum)
        # and read once per epoch, not once per mini-batch (a device->host sync each on CUDA)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if dsa is not None:
                xb = dsa(xb, generator)
            mix = None if cutmix is None else cutmix.sample(len(idx), xb.shape[-2:], generator)
            if mix is not None:
                xb = mix.mix(xb)
            with autocast(dev, precision):
                if mix is None:
                    loss = label_loss(fwd(xb), yb, label_format)
                else:
                    loss = mix.loss(fwd(xb), yb, lambda o, t: label_loss(o, t, label_format))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
        if on_epoch is not None:
            on_epoch(ep, float(total) / n)
        if on_state is not None:
            on_state({"epoch": ep + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                      "generator": generator.get_state()})
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500,
             precision: str = "fp32") -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        with autocast(x.device, precision):
            out = model(x[i:i + batch_size])
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(1, x.shape[0])
