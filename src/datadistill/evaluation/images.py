"""The evaluation protocol for image summaries.

Trains K fresh models of each requested architecture on the summary and tests them on the real
test split; mean ± std per architecture and, when asked, the percentage of a cached full-data
model's accuracy. No choice is made on the test split: the final model after the fixed schedule
is tested, never the best epoch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from .. import dist
from ..data.base import RealData, Split
from ..data.zca import ZCA
from ..errors import DataFormatError
from ..models import create_model
from ..runtime import RunOptions, derive_seed, make_generator
from ..synsets.base import SyntheticSet
from ..train import accuracy, train_model
from .base import PUBLISHED_FULL, EvalReport, Protocol, accuracy_stats, check_loss
from .parallel import map_tasks


def matched_test_split(syn: SyntheticSet, real: RealData) -> Split:
    """The real test split in the summary's input space (applies the summary's stored ZCA when
    ``real`` was loaded without it); refuses summaries of another dataset shape."""
    si, ri = syn.info, real.info
    if tuple(si.shape) != tuple(ri.shape) or si.num_classes != ri.num_classes:
        raise DataFormatError(f"summary is for {si.name} {tuple(si.shape)} with {si.num_classes} classes "
                         f"but the data is {ri.name} {tuple(ri.shape)} with {ri.num_classes} classes")
    if tuple(si.mean) != tuple(ri.mean) or tuple(si.std) != tuple(ri.std):
        raise DataFormatError(f"summary normalization {si.mean}/{si.std} differs from the data's "
                         f"{ri.mean}/{ri.std}; load the dataset the summary was made from")
    if si.zca == ri.zca:
        return real.test
    if si.zca and not ri.zca:
        if "zca_matrix" not in syn.preprocess:
            raise DataFormatError("summary was distilled in ZCA space but carries no ZCA transform")
        zca = ZCA.from_state(syn.preprocess, si.extra.get("zca_reg", 0.1))
        return Split(zca(real.test.x), real.test.y)
    raise DataFormatError("the data is ZCA-whitened but the summary is not; load it without --zca")


def evaluate_images(syn: SyntheticSet, real: RealData, *, models: Sequence[str] | None,
                    protocol: Protocol, overrides: dict[str, Any], seed: int,
                    full_reference: bool | str | dict, on_model: Callable[[dict[str, Any]], None] | None,
                    run: RunOptions, state_dir: str | Path | None = None) -> EvalReport:
    """The field's protocol for image summaries: ``protocol.num_models`` fresh networks of each
    architecture trained on the summary (SGD, DSA, lr step at ``decay_at``, laid out by
    ``protocol.schedule``: by default DatasetCondensation's ``evaluate_synset`` exactly), tested
    on the real test split; ``run`` is resolved (``perf.resolve``).

    ``full_reference``: False, True (the field's converged full-data reference,
    ``reference.DEFAULT_FULL_REFERENCE``), a preset name of ``reference.FULL_PRESETS``
    (``converged``, ``converged-dsa``, ``quick``) or a settings dict; each result then records
    the reference's accuracy and its settings (epochs, augmentation, schedule).

    ``state_dir``: keep each model's training state there (at most every ``STATE_EVERY_S``
    seconds, and after its last pass) and its result once tested, so that an interrupted
    evaluation called again with the same folder continues each model where it stopped and skips
    the finished ones: the same accuracies, bit for bit with the same run options
    (``train_model``'s ``resume``). A state is used only by the same model of an evaluation with
    the same summary, test split, protocol and seed (its key); any other starts afresh. The report's
    ``summary["resumed_cpu_s"]`` is the CPU time the models took in earlier calls (up to their
    saved states), which the caller's clock did not see."""
    models = ("convnet",) if models is None else tuple(models)
    proto = protocol
    dev = torch.device(run.device)
    test = matched_test_split(syn, real).to(dev)
    with torch.no_grad():
        x, y = (t.detach().to(dev) for t in syn.materialize())
    lr = proto.lr
    if proto.use_learned_lr and syn.lr is not None:
        lr = float(syn.lr.detach())
        overrides["lr"] = f"{lr:.6g} (the summary's learned step size)"
    ctx = {"x": x, "y": y, "test_x": test.x, "test_y": test.y, "info": syn.info,
           "dsa": proto.augmentation(syn.info), "cutmix": proto.cutmix(),
           "label_format": syn.label_format, "proto": proto, "lr": lr, "run": run}
    if state_dir is not None:
        ctx["state_dir"] = str(state_dir)
        ctx["state_key"] = _state_key(ctx)
    # the K models of every architecture: sequentially, in run.workers processes and/or across
    # the ranks of a process group (parallel.map_tasks); each seeded derive_seed(seed, mi, k)
    tasks = [(mi, name, k, seed) for mi, name in enumerate(models) for k in range(proto.num_models)]
    report = None if on_model is None else (
        lambda i, res: on_model({"model": tasks[i][1], "index": tasks[i][2],
                                 "accuracy": res["accuracy"]}))
    fitted = map_tasks(fit_model, tasks, context=ctx, workers=run.workers, threads=run.threads,
                       allocator=run.allocator, on_result=report,
                       worker_context=lambda: {**ctx, **{k: ctx[k].cpu() for k in
                                                         ("x", "y", "test_x", "test_y")}})
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        accs, first_last = [], []
        for (tmi, _, k, _), res in zip(tasks, fitted):
            if tmi != mi:
                continue
            accs.append(res["accuracy"])
            losses = res["losses"]
            if losses:  # (epochs=0 trains nothing: nothing to check)
                first_last.append((losses[0], losses[-1]))
            if losses and losses[-1] > 2.0 * losses[0]:
                warnings.warn(f"{name} (model {k}) trained to a higher loss than it started from "
                              f"({losses[0]:.4g} -> {losses[-1]:.4g}, peak {max(losses):.4g}) at lr "
                              f"{lr:g}: the protocol's learning rate is too large for this network "
                              f"(wide networks need it scaled down, ~1/width)", RuntimeWarning,
                              stacklevel=2)
        r: dict[str, Any] = {**accuracy_stats(accs),
                             "published_full": PUBLISHED_FULL.get((syn.info.name, name)),
                             "train_loss_first_last": first_last}
        if full_reference is not False and full_reference is not None:
            from .reference import DEFAULT_FULL_REFERENCE, full_data_accuracy
            which = DEFAULT_FULL_REFERENCE if full_reference is True else full_reference
            full = dist.on_main(lambda: full_data_accuracy(real, name, device=dev, fused=run.fused,
                                                           settings=which))
            r["full_acc"] = full["accuracy"]
            r["full_settings"] = full["settings"]
            r["pct_of_full"] = 100.0 * r["mean"] / full["accuracy"] if full["accuracy"] else math.nan
        results[name] = r
    summary = {"dataset": syn.info.name, "ipc": syn.ipc, "num_examples": syn.num_examples,
               "stored_bytes": syn.stored_bytes(), "label_format": syn.label_format,
               "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
               "params": syn.meta.get("params")}
    if state_dir is not None:  # CPU the models took before an interruption (this call: not)
        summary["resumed_cpu_s"] = round(sum(r.get("cpu_s_before", 0.0) for r in fitted), 3)
    return EvalReport(dataclasses.asdict(proto), summary, results, overrides, run.to_dict())


def fit_model(ctx: dict[str, Any], task: tuple[int, str, int, int]) -> dict[str, Any]:
    """One evaluation model: fresh ``name`` (architecture ``mi``, model ``k``) seeded
    ``derive_seed(seed, mi, k)``, trained on the summary in ``ctx`` and tested on its test split;
    ``{"accuracy": %, "losses": per-epoch training losses}`` (module level: worker processes and
    ranks run it, ``parallel.map_tasks``)."""
    mi, name, k, seed = task
    run: RunOptions = ctx["run"]
    proto: Protocol = ctx["proto"]
    lr = ctx["lr"]
    dev = torch.device(run.device)
    x, y = ctx["x"].to(dev), ctx["y"].to(dev)
    gen = make_generator(derive_seed(seed, mi, k))
    net = create_model(name, ctx["info"], generator=gen, device=dev, fused=run.fused)
    losses: list[float] = []
    folder = Path(ctx["state_dir"]) / f"{mi}-{name}-{k}" if ctx.get("state_dir") else None
    key = f"{ctx.get('state_key')}/{mi}-{name}-{k}-{seed}"
    resume, on_state = None, None
    before, t0 = 0.0, time.process_time()  # CPU seconds this model took in earlier calls
    if folder is not None:
        done = _read_state(folder, "result", key)
        if done is not None:  # tested before the interruption
            return {"accuracy": float(done["accuracy"]), "losses": list(done["losses"]),
                    "cpu_s_before": float(done["cpu_s"])}
        resume = _read_state(folder, "train", key)
        if resume is not None:
            losses, before = list(resume["losses"]), float(resume["cpu_s"])
        last = [time.monotonic()]
        passes = proto.epochs + (1 if proto.schedule == "reference" and proto.epochs > 0 else 0)

        def on_state(state: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] >= STATE_EVERY_S or state["epoch"] == passes:
                ckpt.save_state({**state, "key": key, "losses": losses, "passes": passes,
                                 "cpu_s": before + time.process_time() - t0}, folder, "train")
                last[0] = now
    train_model(net, x, y, epochs=proto.epochs, generator=gen, lr=lr,
                momentum=proto.momentum, weight_decay=proto.weight_decay,
                batch_size=proto.batch_size, decay_at=proto.decay_at, dsa=ctx["dsa"],
                label_format=ctx["label_format"], precision=run.precision,
                compile=run.compile, schedule=proto.schedule, cutmix=ctx.get("cutmix"),
                on_epoch=lambda ep, loss: check_loss(losses, ep, loss, name, lr),
                resume=resume, on_state=on_state)
    acc = 100.0 * accuracy(net, ctx["test_x"].to(dev), ctx["test_y"].to(dev),
                           precision=run.precision)
    if folder is not None:
        ckpt.save_state({"key": key, "accuracy": acc, "losses": losses,
                         "cpu_s": before + time.process_time() - t0}, folder, "result")
    return {"accuracy": acc, "losses": losses, "cpu_s_before": before}


#: how often (wall seconds) an evaluation model's training state is saved with ``state_dir``
STATE_EVERY_S = 60.0


def _state_key(ctx: dict[str, Any]) -> str:
    """What an evaluation model's saved state must match to be continued: the summary's values,
    the test split, the protocol and the step size. Not the run options: like a distillation's
    ``--resume``, a continued evaluation may run with other speed settings (the same function;
    bit for bit the uninterrupted one when they are the same)."""
    h = hashlib.sha256()
    for k in ("x", "y", "test_x", "test_y"):
        t = ctx[k].detach().cpu().contiguous()
        h.update(f"{k}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                 else t.numpy().tobytes())
    meta = {"proto": dataclasses.asdict(ctx["proto"]), "lr": ctx["lr"],
            "label_format": ctx["label_format"], "dsa": repr(ctx["dsa"]),
            "cutmix": repr(ctx["cutmix"])}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _read_state(folder: Path, name: str, key: str) -> dict[str, Any] | None:
    """The saved state ``name`` of this model (None: none, unreadable, or another key's)."""
    if not ckpt.exists(folder, name):
        return None
    try:
        state = ckpt.load_state(folder, name)
    except ckpt.CheckpointError:
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None
