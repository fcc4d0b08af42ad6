"""The evaluation protocol for text summaries (embedding sequences or sentence embeddings).

K fresh text classifiers of each architecture (default: ``textcnn`` and ``boe-mlp`` on embedding
sequences, ``mlp`` on sentence embeddings) are trained on the summary with the field's
optimizer (SGD momentum 0.9, weight decay 5e-4, lr 0.01, batch 256, lr x0.1 at half, the
reference schedule; no augmentation) and tested on the real test split encoded by the same
frozen encoder. ``paper``: 1000 epochs x 20 models; ``fast``: 300 x 3; ``smoke``: 20 x 1. The
final model is tested, never the best epoch. ``full_reference`` trains the same architecture on
the whole training split (``FULL_TEXT``: 20 epochs, lr 0.01, lr x0.1 at half) and reports the
summary's accuracy as a percentage of it. A summary made in another embedding table (another
vocabulary, seed or data) is refused: its ``encoder_sha256`` must match the data's.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import DataFormatError
from ..models import create_model
from ..runtime import RunOptions, derive_seed, make_generator
from ..synsets.base import SyntheticSet
from ..train import train_model
from .base import EvalReport, Protocol, accuracy_stats, check_loss, get_protocol

PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", epochs=1000, num_models=20, dsa=False),
    "fast": Protocol("fast", epochs=300, num_models=3, dsa=False),
    "smoke": Protocol("smoke", epochs=20, num_models=1, dsa=False),
}
#: the full-data reference's schedule (the same optimizer, on the whole training split)
FULL_TEXT = {"epochs": 20, "lr": 0.01, "batch_size": 256, "decay_at": 0.5}


def text_protocol(protocol, num_models: int | None, overrides: dict[str, Any]) -> Protocol:
    proto = PROTOCOLS[protocol] if isinstance(protocol, str) and protocol in PROTOCOLS \
        else get_protocol(protocol)
    if num_models is not None and num_models != proto.num_models:
        overrides["num_models"] = num_models
        proto = dataclasses.replace(proto, num_models=num_models)
    return proto


def check_text_match(syn: SyntheticSet, real) -> None:
    si, ri = syn.info, real.info
    if tuple(si.shape) != tuple(ri.shape) or si.num_classes != ri.num_classes:
        raise DataFormatError(f"summary is for {si.name} {tuple(si.shape)} with {si.num_classes} "
                              f"classes but the data is {ri.name} {tuple(ri.shape)} with "
                              f"{ri.num_classes} classes")
    from ..data.text import same_table

    a, b = si.extra.get("encoder"), ri.extra.get("encoder")
    if a != b or (a == "embedding" and not same_table(si.extra, ri.extra)) or \
            si.extra.get("standardized") != ri.extra.get("standardized"):
        raise DataFormatError(f"summary was distilled in encoder {a!r} (table sha256 "
                              f"{str(si.extra.get('encoder_sha256'))[:12]}) but the data is encoded "
                              f"by {b!r} ({str(ri.extra.get('encoder_sha256'))[:12]}); load the "
                              f"dataset with the summary's settings")


@torch.no_grad()
def predict(net, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def scores(pred: torch.Tensor, y: torch.Tensor, k: int) -> tuple[float, float]:
    """(accuracy %, balanced accuracy % = mean recall over the classes present in ``y``)."""
    pred, y = pred.cpu(), y.cpu()
    acc = 100.0 * float((pred == y).float().mean())
    rec = [float((pred[y == c] == c).float().mean()) for c in range(k) if int((y == c).sum())]
    return acc, 100.0 * sum(rec) / max(1, len(rec))


def fit_networks(name: str, mi: int, x, y, test, info, *, proto: Protocol, label_format: str,
                 seed: int, run: RunOptions, lr: float, on_model=None) -> tuple[list, list]:
    """``proto.num_models`` fresh ``name`` networks trained on (x, y), tested on ``test``:
    (accuracies %, balanced accuracies %). In ``run.workers`` processes and/or across the ranks
    of a process group (``parallel.map_tasks``), each seeded ``derive_seed(seed, mi, k)``."""
    from .parallel import map_tasks

    ctx = {"x": x, "y": y, "test_x": test.x, "test_y": test.y, "info": info, "proto": proto,
           "label_format": label_format, "run": run, "lr": lr}
    tasks = [(mi, name, k, seed) for k in range(proto.num_models)]
    report = None if on_model is None else (
        lambda i, res: on_model({"model": name, "index": i, "accuracy": res[0]}))
    res = map_tasks(fit_network, tasks, context=ctx, workers=run.workers, threads=run.threads,
                    allocator=run.allocator, on_result=report,
                    worker_context=lambda: {**ctx, **{k: ctx[k].cpu() for k in
                                                      ("x", "y", "test_x", "test_y")}})
    return [a for a, _ in res], [b for _, b in res]


def fit_network(ctx: dict[str, Any], task: tuple[int, str, int, int]) -> tuple[float, float]:
    """One fresh network of ``fit_networks`` (module level: worker processes run it)."""
    mi, name, k, seed = task
    run, proto, lr = ctx["run"], ctx["proto"], ctx["lr"]
    dev = torch.device(run.device)
    gen = make_generator(derive_seed(seed, mi, k))
    net = create_model(name, ctx["info"], generator=gen, device=dev)
    losses: list[float] = []
    train_model(net, ctx["x"].to(dev), ctx["y"].to(dev), epochs=proto.epochs, generator=gen,
                lr=lr, momentum=proto.momentum, weight_decay=proto.weight_decay,
                batch_size=proto.batch_size, decay_at=proto.decay_at,
                label_format=ctx["label_format"], precision=run.precision,
                schedule=proto.schedule,
                on_epoch=lambda ep, loss: check_loss(losses, ep, loss, name, lr))
    return scores(predict(net, ctx["test_x"].to(dev)), ctx["test_y"], ctx["info"].num_classes)


def full_accuracy(name: str, real, info, *, seed: int, run: RunOptions, test) -> float:
    """Accuracy % of ``name`` trained on the whole training split (``FULL_TEXT``)."""
    dev = torch.device(run.device)
    gen = make_generator(derive_seed(seed, 99))
    net = create_model(name, info, generator=gen, device=dev)
    train_model(net, real.train.x.to(dev), real.train.y.to(dev), epochs=FULL_TEXT["epochs"],
                generator=gen, lr=FULL_TEXT["lr"], batch_size=FULL_TEXT["batch_size"],
                decay_at=FULL_TEXT["decay_at"], precision=run.precision)
    return scores(predict(net, test.x), test.y, info.num_classes)[0]


def summary_record(syn: SyntheticSet) -> dict[str, Any]:
    return {"dataset": syn.info.name, "ipc": syn.ipc, "num_examples": syn.num_examples,
            "stored_bytes": syn.stored_bytes(), "label_format": syn.label_format,
            "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
            "params": syn.meta.get("params")}


def evaluate_text(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
                  protocol: str | Protocol = "fast", num_models: int | None = None, seed: int = 0,
                  full_reference: bool | str | dict = False,
                  on_model: Callable[[dict[str, Any]], None] | None = None,
                  run: RunOptions) -> EvalReport:
    """Text summaries: ``num_models`` fresh text classifiers per architecture trained on the
    summary, tested on the real test split (accuracy %, mean ± std)."""
    from ..distillers.text import default_model

    check_text_match(syn, real)
    overrides: dict[str, Any] = {}
    proto = text_protocol(protocol, num_models, overrides)
    if models is None:
        models = ("textcnn", "boe-mlp") if default_model(syn.info) == "textcnn" else ("mlp",)
    dev = torch.device(run.device)
    test = real.test.to(dev)
    with torch.no_grad():
        x, y = (t.detach().to(dev) for t in syn.materialize())
    lr = proto.lr
    if proto.use_learned_lr and syn.lr is not None:
        lr = float(syn.lr.detach())
        overrides["lr"] = f"{lr:.6g} (the summary's learned step size)"
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        accs, _ = fit_networks(name, mi, x, y, test, syn.info, proto=proto,
                               label_format=syn.label_format, seed=seed, run=run, lr=lr,
                               on_model=on_model)
        r: dict[str, Any] = {**accuracy_stats(accs), "published_full": None}
        if full_reference:
            full = full_accuracy(name, real, syn.info, seed=seed, run=run, test=test)
            r.update({"full_acc": full, "full_settings": {**FULL_TEXT, "description":
                      f"{name} on the full training split, {FULL_TEXT['epochs']} epochs"},
                      "pct_of_full": 100.0 * r["mean"] / full if full else math.nan})
        results[name] = r
    return EvalReport(dataclasses.asdict(proto), summary_record(syn), results, overrides, run.to_dict())
