"""Continual learning with data summaries: "compress then recall" (the survey's §4).

Class-incremental learning: the classes arrive in tasks of ``classes_per_task`` (Fashion-MNIST:
5 tasks of 2 classes); one network with a single head over all classes; after each task it is
tested on the test examples of every class seen so far, predicting among the seen classes.

Strategies, all at the same memory (``ipc`` stored examples per seen class; the stored bytes are
reported beside):

- ``finetune``: train on each new task's data only (the forgetting floor, no memory).
- ``replay-X``: experience replay (Chaudhry et al. 2019): every minibatch of the new task's data
  is joined by an equal-sized batch drawn from the memory of the earlier tasks. ``X`` is where
  each task's memory comes from: real exemplars (``random``, ``herding``, ``kcenter``;
  ``baselines.select_baseline`` on that task's data) or a summary distilled from that task's data
  by any registered method (``dm`` by default), or ``summary``: the classes of a saved summary
  of the whole dataset (``--summary PATH``).
- ``recall-X``: compress then recall (Deng & Russakovsky, "Remember the Past: Distilling
  Datasets into Addressable Memories for Neural Networks", NeurIPS 2022): only the memories are
  kept, and after each task a fresh network is trained from scratch on all of them with the
  evaluation protocol (``fast``: 300 epochs, DSA). With real exemplars this is GDumb (Prabhu et
  al. 2020), the control that separates "distilled" from "retrained from scratch".

Metrics: ``A[t][j]`` = accuracy (%) on task ``j``'s test classes after training on task ``t``;
average accuracy after task ``t`` = mean_{j<=t} A[t][j]; final average accuracy = the last one;
forgetting = mean_{j<T-1} (max_{l<T-1} A[l][j] - A[T-1][j]) (Chaudhry et al. 2018).
A memory is made once per (seed, source, task) and shared by ``replay-X`` and ``recall-X``
(``continual_memory.py``: memories and the replay training).
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.base import RealData
from ..errors import ConfigError
from ..synsets.base import SyntheticSet
from . import _common as C
from .continual_memory import Memory, _globalize, _train_increment, make_memory  # noqa: F401

KINDS = ("finetune", "replay", "recall")
#: the default strategies (``{method}`` is ``--method``, DM by default)
DEFAULT_STRATEGIES = ("finetune", "replay-random", "replay-herding", "replay-{method}",
                      "recall-random", "recall-{method}")


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    kind: str               # finetune | replay | recall
    source: str | None      # where memories come from: a baseline, a method, or "summary"


def parse_strategies(spec: str | Sequence[str], method: str = "dm") -> list[Strategy]:
    """``"finetune,replay-random,recall-dm"`` -> strategies (``{method}`` expands)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Strategy] = []
    for raw in items:
        name = raw.strip().lower().replace("{method}", method)
        if not name:
            continue
        kind, _, source = name.partition("-")
        if kind not in KINDS or (kind == "finetune") != (source == ""):
            raise ConfigError(f"unknown strategy {raw!r}: use finetune, replay-X or recall-X "
                              f"(X: random, herding, kcenter, a method name or summary)")
        if kind != "finetune" and source != "summary" and not C.is_baseline(source):
            from ..distillers import DISTILLERS
            DISTILLERS.get(source)  # unknown method -> error listing the known ones
        out.append(Strategy(name, kind, source or None))
    if not out:
        raise ConfigError("no strategy given")
    if len({s.name for s in out}) != len(out):
        raise ConfigError(f"a strategy is listed twice in {spec!r}")
    return out


def split_tasks(num_classes: int, classes_per_task: int = 2,
                order: Sequence[int] | None = None) -> list[list[int]]:
    """Consecutive groups of ``classes_per_task`` classes (in ``order``, default 0..K-1)."""
    order = list(range(num_classes)) if order is None else [int(c) for c in order]
    if sorted(order) != list(range(num_classes)):
        raise ConfigError(f"class order {order} is not a permutation of 0..{num_classes - 1}")
    if classes_per_task < 1 or num_classes % classes_per_task:
        raise ConfigError(f"{num_classes} classes do not split into tasks of {classes_per_task}")
    if num_classes // classes_per_task < 2:
        raise ConfigError("continual learning needs at least 2 tasks")
    return [order[i:i + classes_per_task] for i in range(0, num_classes, classes_per_task)]


@torch.no_grad()
def task_accuracies(net, tests: Sequence[tuple[Tensor, Tensor]], seen: Sequence[int],
                    precision: str = "fp32") -> list[float]:
    """Accuracy (%) on each task's test split, predicting among the ``seen`` classes only."""
    from ..runtime import autocast
    net.eval()
    out = []
    for x, y in tests:
        correct = 0
        for i in range(0, x.shape[0], 1000):
            with autocast(x.device, precision):
                logits = net(x[i:i + 1000]).float()
            mask = torch.full_like(logits, float("-inf"))
            mask[:, list(seen)] = 0
            correct += int(((logits + mask).argmax(1) == y[i:i + 1000]).sum())
        out.append(100.0 * correct / max(1, x.shape[0]))
    return out


def metrics(acc: Sequence[Sequence[float]]) -> dict[str, Any]:
    """From ``acc[t][j]`` (j <= t): the average accuracy after each task, the final average
    accuracy and the forgetting of the earlier tasks."""
    T = len(acc)
    avg = [statistics.fmean(acc[t][:t + 1]) for t in range(T)]
    forget = [max(acc[l][j] for l in range(j, T - 1)) - acc[T - 1][j] for j in range(T - 1)]
    return {"avg_acc": avg, "final_avg_acc": avg[-1],
            "forgetting": statistics.fmean(forget) if forget else 0.0}


def run_continual(real: RealData, *, strategies: Sequence[Strategy], ipc: int = 10,
                  classes_per_task: int = 2, class_order: Sequence[int] | None = None,
                  model: str = "convnet", epochs: int = 5, batch_size: int = 128,
                  lr: float = 0.01, recall_protocol: str = "fast",
                  recall_epochs: int | None = None, iterations: int | None = None,
                  preset: str | None = None, params: dict[str, Any] | None = None,
                  summary: SyntheticSet | None = None, feature_epochs: int = 20,
                  seeds: Sequence[int] = (0,), run=None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every strategy on the class-incremental split of ``real``; returns the settings and,
    per strategy, the accuracy matrices (one per seed) and their metrics (mean ± std over
    seeds). ``run``: resolved ``RunOptions`` (device, precision, fused kernels)."""
    from ..evaluation.base import get_protocol
    from ..models import create_model
    from ..runtime import derive_seed, make_generator
    from ..train import train_model

    log = log or (lambda msg: None)
    k = real.info.num_classes
    if real.info.modality != "image":
        raise ConfigError(f"continual learning runs on image data; {real.info.name} is "
                          f"{real.info.modality}")
    tasks = split_tasks(k, classes_per_task, class_order)
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}")
    if summary is not None:
        C.check_summary(summary, real, "the saved summary")
    elif any(s.source == "summary" for s in strategies):
        raise ConfigError("strategies *-summary need --summary PATH")
    proto = get_protocol(recall_protocol)
    r_epochs = proto.epochs if recall_epochs is None else recall_epochs
    dev = torch.device(run.device) if run is not None else torch.device("cpu")
    precision = run.precision if run is not None else "fp32"
    fused = bool(run.fused) if run is not None else False
    data = real.to(dev)
    views = [C.class_view(data, cl) for cl in tasks]
    # task views renumber their classes 0..; map back to the global labels
    train = [(v.train.x, torch.tensor(cl, device=dev)[v.train.y]) for v, cl in zip(views, tasks)]
    tests = [(v.test.x, torch.tensor(cl, device=dev)[v.test.y]) for v, cl in zip(views, tasks)]
    feats = {"preset": "quick", "epochs": feature_epochs}
    dsa = proto.augmentation(real.info)  # the protocol's DSA (and its mode), CutMix below
    per: dict[str, dict[str, Any]] = {s.name: {"acc": [], "cpu_s": 0.0, "memory_cpu_s": 0.0,
                                               "stored_bytes": 0, "examples": 0}
                                      for s in strategies}
    for si, seed in enumerate(seeds):
        memories: dict[tuple[str, int], Memory] = {}
        made = [0.0]  # CPU seconds spent making memories (counted apart from the training)

        def memory(source: str, t: int) -> Memory:
            if (source, t) not in memories:
                log(f"seed {seed}: memory of task {t + 1} ({tasks[t]}) by {source}")
                memories[(source, t)] = make_memory(
                    data, tasks[t], source, ipc, seed=derive_seed(seed, t), summary=summary,
                    iterations=iterations, preset=preset, params=params, run=run,
                    feature_settings=feats, feature_model=model)
                made[0] += memories[(source, t)].cpu_s
            return memories[(source, t)]

        for s in strategies:
            acc: list[list[float]] = []
            net = None
            made0 = made[0]
            with C.Timer() as timer:
                for t, cl in enumerate(tasks):
                    seen = [c for cls in tasks[:t + 1] for c in cls]
                    gen = make_generator(derive_seed(seed, 1 + t))
                    if s.kind == "recall":
                        mems = [memory(s.source, j) for j in range(t + 1)]
                        fmt = mems[0].label_format
                        x = torch.cat([m.x for m in mems]).to(dev)
                        y = torch.cat([m.y for m in mems]).to(dev)
                        lrs = [m.lr for m in mems if m.lr is not None]
                        step = statistics.fmean(lrs) if lrs and proto.use_learned_lr else proto.lr
                        net = create_model(model, real.info, generator=gen, device=dev,
                                           fused=fused)
                        train_model(net, x, y, epochs=r_epochs, generator=gen, lr=step,
                                    momentum=proto.momentum, weight_decay=proto.weight_decay,
                                    batch_size=proto.batch_size, decay_at=proto.decay_at,
                                    dsa=dsa, label_format=fmt, precision=precision,
                                    schedule=proto.schedule, cutmix=proto.cutmix())
                    else:
                        if net is None:
                            net = create_model(model, real.info, generator=gen, device=dev,
                                               fused=fused)
                        buf = None
                        if s.kind == "replay" and t > 0:
                            mems = [memory(s.source, j) for j in range(t)]
                            buf = Memory(torch.cat([m.x for m in mems]).to(dev),
                                         torch.cat([m.y for m in mems]).to(dev),
                                         mems[0].label_format, 0, None, 0.0)
                        _train_increment(net, *train[t], buf, epochs=epochs,
                                         batch_size=batch_size, lr=lr, generator=gen,
                                         precision=precision)
                    acc.append(task_accuracies(net, tests[:t + 1], seen, precision))
                    log(f"seed {seed} {s.name}: after task {t + 1}/{len(tasks)} average "
                        f"accuracy {statistics.fmean(acc[-1]):.2f} %")
            rec = per[s.name]
            rec["acc"].append(acc)
            # CPU of the strategy's training; making its memories is counted in memory_cpu_s
            rec["cpu_s"] += timer.cpu - (made[0] - made0)
            if s.kind != "finetune":
                mems = [memory(s.source, j) for j in range(len(tasks))]
                rec["memory_cpu_s"] += sum(m.cpu_s for m in mems)
                if si == 0:
                    rec["stored_bytes"] = sum(m.stored_bytes for m in mems)
                    rec["examples"] = sum(int(m.x.shape[0]) for m in mems)
    results = {}
    for s in strategies:
        rec = per[s.name]
        ms = [metrics(a) for a in rec["acc"]]
        avg = [[m["avg_acc"][t] for m in ms] for t in range(len(tasks))]
        final = [m["final_avg_acc"] for m in ms]
        forget = [m["forgetting"] for m in ms]
        results[s.name] = {
            "kind": s.kind, "source": s.source,
            "avg_acc": [statistics.fmean(v) for v in avg],
            "avg_acc_std": [statistics.pstdev(v) for v in avg],
            "final_avg_acc": statistics.fmean(final), "final_avg_acc_std": statistics.pstdev(final),
            "forgetting": statistics.fmean(forget), "forgetting_std": statistics.pstdev(forget),
            "acc_matrices": rec["acc"],
            "memory_examples_per_class": rec["examples"] / k if s.kind != "finetune" else 0,
            "memory_bytes_per_class": rec["stored_bytes"] / k if s.kind != "finetune" else 0,
            "cpu_s": round(rec["cpu_s"], 1), "memory_cpu_s": round(rec["memory_cpu_s"], 1)}
    settings = {"dataset": real.info.name, "tasks": tasks, "ipc": ipc, "model": model,
                "train_examples": len(real.train), "seeds": list(seeds),
                "incremental": {"epochs_per_task": epochs, "batch_size": batch_size, "lr": lr,
                                "optimizer": "SGD momentum 0.9, weight decay 5e-4, constant lr",
                                "augmentation": "none",
                                "replay": "equal-sized memory batch joined to every batch"},
                "recall": {"protocol": proto.name, "epochs": r_epochs, "lr": proto.lr,
                           "dsa": proto.dsa, "schedule": proto.schedule,
                           "note": "a fresh network per task, trained on all memories"},
                "distillation": {"iterations": iterations, "preset": preset,
                                 "params": dict(params or {})},
                "herding_features": {**feats, "model": model,
                                     "note": "a network trained on each task's data "
                                             "(evaluation.reference settings)"},
                "evaluation": "test split of every seen task, predicting among seen classes"}
    return {"settings": settings, "results": results}


def results_table(res: dict[str, Any]) -> str:
    T = len(res["settings"]["tasks"])
    heads = ["strategy", "mem/class", "bytes/class"] + [f"after {t + 1}" for t in range(T)] + \
        ["final avg %", "forgetting", "CPU s"]
    rows = []
    for name, r in res["results"].items():
        pm = lambda m, s: f"{m:.2f} ± {s:.2f}"  # noqa: E731
        rows.append([name, f"{r['memory_examples_per_class']:g}",
                     f"{r['memory_bytes_per_class']:.0f}", *[f"{a:.1f}" for a in r["avg_acc"]],
                     pm(r["final_avg_acc"], r["final_avg_acc_std"]),
                     pm(r["forgetting"], r["forgetting_std"]),
                     f"{r['cpu_s'] + r['memory_cpu_s']:.0f}"])
    return C.text_table(heads, rows)


def plot(res: dict[str, Any], path) -> None:
    """Average accuracy after each task, a line per strategy (± std over seeds as a band)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = res["settings"]["tasks"]
    xs = list(range(1, len(tasks) + 1))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, r in res["results"].items():
        m, s = r["avg_acc"], r["avg_acc_std"]
        style = {"finetune": ":", "replay": "-", "recall": "--"}[r["kind"]]
        ax.plot(xs, m, style, marker="o", label=name)
        if any(v > 0 for v in s):
            ax.fill_between(xs, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                            alpha=0.15)
    ax.set_xticks(xs, [f"{t}\n{','.join(map(str, c))}" for t, c in zip(xs, tasks)])
    ax.set_xlabel("task (classes)")
    ax.set_ylabel("average accuracy on seen tasks (%)")
    st = res["settings"]
    ax.set_title(f"class-incremental {st['dataset']}: {st['ipc']} per class in memory",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
