"""Neural architecture search with data summaries: does a summary rank architectures as the
full data does? (The survey's §4; DC-BENCH, Cui et al., NeurIPS 2022.)

For every architecture of a ConvNet search space (``nas_space``: depth x width x normalization x
activation x pooling, DC-BENCH's 720 or a fixed sample of it):

- the **proxy score**: the validation accuracy of fresh networks trained on a summary with the
  evaluation protocol (several methods and budgets, and a random real subset of the same size);
- the **ground truth**: the test accuracy of a network trained on the full training split
  (cached per architecture and settings under ``$DATADISTILL_CACHE/nas``; the epochs are stated
  in every output).

The proxy never looks at the test split (the search would choose on it). Per summary: Spearman's
and Kendall's rank correlations between proxy and truth (``scipy.stats``), the overlap of the two
top-5 sets, the true accuracy of the architecture the proxy ranks first against the best one, and
the speed-up of the search (CPU time of training every architecture on the full data over that
on the summary; also with the distillation's own CPU time added). Cui et al. report that the
correlation weakens as the space grows: ``rho@n`` is Spearman's rho over random subsets of ``n``
architectures (mean over draws), so a reader sees where ours stands.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.base import RealData
from ..errors import ConfigError
from ..synsets.base import SyntheticSet
from . import _common as C
from .nas_space import Arch, register

#: full-data training of the ground truth (the ``quick`` reference's optimizer; epochs stated)
FULL_DEFAULTS = {"epochs": 20, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                 "batch_size": 256, "decay_at": 0.5, "dsa": False, "seed": 0}


def full_data_scores(real: RealData, archs: Sequence[Arch], *, settings: dict[str, Any],
                     run=None, log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per architecture: test and validation accuracy (%) of one network trained on the whole
    training split of ``real`` with ``settings`` (SGD, lr x0.1 at ``decay_at``, no augmentation),
    and the CPU seconds it took; cached as JSON by data, architecture and settings."""
    from ..data.files import cache_root
    from ..models import create_model
    from ..runtime import make_generator
    from ..train import accuracy, train_model

    log = log or (lambda msg: None)
    register(archs)
    dev = torch.device(run.device) if run is not None else torch.device("cpu")
    fused = bool(run.fused) if run is not None else False
    info = real.info
    out: dict[str, dict] = {}
    tr = va = te = None
    for a in archs:
        blob = json.dumps({"data": [info.name, list(info.shape), info.num_classes,
                                    len(real.train), list(info.mean), info.zca],
                           "arch": a.kwargs, **settings}, sort_keys=True)
        path = cache_root() / "nas" / f"{info.name}-{a.name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}.json"
        if path.exists():
            out[a.name] = {**json.loads(path.read_text()), "cached": True}
            continue
        if tr is None:
            tr, va, te = real.train.to(dev), real.val.to(dev), real.test.to(dev)
        log(f"full data: {a.name} ({settings['epochs']} epochs on {len(tr)} examples)")
        gen = make_generator(settings["seed"])
        with C.Timer() as t:
            net = create_model(a.name, info, generator=gen, device=dev, fused=fused)
            train_model(net, tr.x, tr.y, epochs=settings["epochs"], generator=gen,
                        lr=settings["lr"], momentum=settings["momentum"],
                        weight_decay=settings["weight_decay"], batch_size=settings["batch_size"],
                        decay_at=settings["decay_at"],
                        precision=run.precision if run is not None else "fp32")
        rec = {"arch": a.name, "test_acc": 100 * accuracy(net, te.x, te.y),
               "val_acc": 100 * accuracy(net, va.x, va.y), "cpu_s": t.cpu, "wall_s": t.wall,
               "settings": settings, "train_examples": len(tr)}
        C.write_json(path, rec)
        out[a.name] = {**rec, "cached": False}
    return out


def summary_scores(syn: SyntheticSet, real: RealData, archs: Sequence[Arch], *,
                   protocol: str = "fast", epochs: int | None = None,
                   num_models: int | None = None, seed: int = 0, run=None,
                   log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per architecture: validation accuracy (%, the proxy; mean over ``num_models`` fresh
    networks trained on ``syn`` with the evaluation ``protocol``, ``epochs`` overriding its
    epochs), test accuracy (for reference only), CPU seconds of the training."""
    from ..evaluation.base import get_protocol
    from ..models import create_model
    from ..runtime import derive_seed, make_generator
    from ..train import accuracy, train_model

    register(archs)
    proto = get_protocol(protocol)
    n_models = proto.num_models if num_models is None else num_models
    n_epochs = proto.epochs if epochs is None else epochs
    dev = torch.device(run.device) if run is not None else torch.device("cpu")
    fused = bool(run.fused) if run is not None else False
    precision = run.precision if run is not None else "fp32"
    x, y = (t.to(dev) for t in C.summary_tensors(syn))
    lr = float(syn.lr.detach()) if (proto.use_learned_lr and syn.lr is not None) else proto.lr
    dsa = proto.augmentation(syn.info)
    va, te = real.val.to(dev), real.test.to(dev)
    out = {}
    for ai, a in enumerate(archs):
        vals, tests = [], []
        with C.Timer() as t:
            for k in range(n_models):
                gen = make_generator(derive_seed(seed, ai, k))
                net = create_model(a.name, syn.info, generator=gen, device=dev, fused=fused)
                train_model(net, x, y, epochs=n_epochs, generator=gen, lr=lr,
                            momentum=proto.momentum, weight_decay=proto.weight_decay,
                            batch_size=proto.batch_size, decay_at=proto.decay_at, dsa=dsa,
                            label_format=syn.label_format, precision=precision,
                            schedule=proto.schedule, cutmix=proto.cutmix())
                vals.append(100 * accuracy(net, va.x, va.y))
                tests.append(100 * accuracy(net, te.x, te.y))
        out[a.name] = {"val_acc": statistics.fmean(vals), "test_acc": statistics.fmean(tests),
                       "val_accs": vals, "cpu_s": t.cpu}
        if log:
            log(f"  {a.name}: val {out[a.name]['val_acc']:.2f} %")
    return out


def rank_agreement(proxy: Sequence[float], truth: Sequence[float], *, top: int = 5,
                   subsets: Sequence[int] = (10, 20), draws: int = 50,
                   seed: int = 0) -> dict[str, Any]:
    """Spearman's rho and Kendall's tau (``scipy.stats``; ties averaged, tau-b), the overlap of
    the top-``top`` sets, the rank (by truth) of the proxy's first choice, and ``rho@n``: mean
    Spearman's rho over ``draws`` random subsets of ``n`` architectures."""
    from scipy import stats
    n = len(proxy)
    if n != len(truth) or n < 3:
        raise ConfigError(f"rank agreement needs >= 3 paired scores, got {n} and {len(truth)}")
    rho = stats.spearmanr(proxy, truth).statistic
    tau = stats.kendalltau(proxy, truth).statistic
    k = min(top, n)
    order_p = sorted(range(n), key=lambda i: (-proxy[i], i))
    order_t = sorted(range(n), key=lambda i: (-truth[i], i))
    overlap = len(set(order_p[:k]) & set(order_t[:k]))
    chosen = order_p[0]
    g = torch.Generator().manual_seed(seed)
    at = {}
    for m in subsets:
        if m >= n or m < 3:
            continue
        vals = []
        for _ in range(draws):
            idx = torch.randperm(n, generator=g)[:m].tolist()
            r = stats.spearmanr([proxy[i] for i in idx], [truth[i] for i in idx]).statistic
            if not math.isnan(r):
                vals.append(float(r))
        at[f"rho@{m}"] = statistics.fmean(vals) if vals else math.nan
    at[f"rho@{n}"] = float(rho)
    return {"spearman": float(rho), "kendall": float(tau), "top_overlap": overlap,
            "top_k": k, "chosen_true_acc": truth[chosen], "best_true_acc": max(truth),
            "chosen_true_rank": order_t.index(chosen) + 1, "rho_by_size": at}


def run_nas(real: RealData, archs: Sequence[Arch], summaries: Sequence[tuple[str, SyntheticSet]],
            *, full_real: RealData | None = None, full_settings: dict[str, Any] | None = None,
            protocol: str = "fast", epochs: int | None = None, num_models: int | None = 1,
            seed: int = 0, run=None, log: Callable[[str], None] | None = None,
            make_cpu_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Score ``archs`` on each labelled summary and on the full data (``full_real``, default
    ``real``; e.g. a per-class subset at a reduced scale), then compare the rankings."""
    if len(archs) < 3:
        raise ConfigError(f"a search needs at least 3 architectures, got {len(archs)}")
    if not summaries:
        raise ConfigError("no summary to rank the architectures with")
    for label, syn in summaries:
        C.check_summary(syn, real, f"summary {label}")
    register(archs)
    fs = {**FULL_DEFAULTS, **(full_settings or {})}
    full = full_data_scores(full_real or real, archs, settings=fs, run=run, log=log)
    names = [a.name for a in archs]
    truth = [full[n]["test_acc"] for n in names]
    full_cpu = sum(full[n]["cpu_s"] for n in names)
    rows = {}
    for label, syn in summaries:
        if log:
            log(f"summary {label}: {syn.num_examples} examples, training {len(archs)} "
                f"architectures")
        sc = summary_scores(syn, real, archs, protocol=protocol, epochs=epochs,
                            num_models=num_models, seed=seed, run=run, log=log)
        proxy = [sc[n]["val_acc"] for n in names]
        cpu = sum(sc[n]["cpu_s"] for n in names)
        made = (make_cpu_s or {}).get(label, 0.0)
        rows[label] = {"method": syn.meta.get("method"), "ipc": syn.ipc,
                       "num_examples": syn.num_examples, "stored_bytes": syn.stored_bytes(),
                       "iterations": syn.meta.get("iterations"),
                       **rank_agreement(proxy, truth, seed=seed),
                       "search_cpu_s": cpu, "make_cpu_s": made,
                       "speedup": full_cpu / cpu if cpu > 0 else math.nan,
                       "speedup_with_making": full_cpu / (cpu + made) if cpu + made > 0 else math.nan,
                       "scores": {n: sc[n] for n in names}}
    from ..evaluation.base import get_protocol
    proto = get_protocol(protocol)
    settings = {"dataset": real.info.name, "architectures": names, "num_archs": len(names),
                "proxy": {"protocol": proto.name,
                          "epochs": proto.epochs if epochs is None else epochs,
                          "num_models": proto.num_models if num_models is None else num_models,
                          "dsa": proto.dsa, "lr": proto.lr, "schedule": proto.schedule,
                          "score": "validation accuracy"},
                "full": {**fs, "train_examples": len((full_real or real).train),
                         "score": "test accuracy, one network", "augmentation": "none",
                         "schedule": "fraction (lr x0.1 at decay_at)",
                         "cpu_s_all_archs": full_cpu,
                         "cached": sum(bool(full[n]["cached"]) for n in names)}}
    return {"settings": settings, "full": {n: full[n] for n in names}, "results": rows}


def results_table(res: dict[str, Any]) -> str:
    rows = []
    for label, r in res["results"].items():
        sizes = r["rho_by_size"]
        rows.append([label, r["num_examples"], f"{r['spearman']:.3f}", f"{r['kendall']:.3f}",
                     f"{r['top_overlap']}/{r['top_k']}",
                     f"{r['chosen_true_acc']:.2f} (#{r['chosen_true_rank']})",
                     "  ".join(f"{k}={v:.2f}" for k, v in sizes.items()),
                     f"{r['speedup']:.1f}x", f"{r['speedup_with_making']:.1f}x"])
    best = max(res["full"].values(), key=lambda v: v["test_acc"])
    return (C.text_table(["summary", "examples", "Spearman", "Kendall", "top-5", "chosen: true "
                          "acc % (rank)", "rho by space size", "speed-up", "incl. making"], rows)
            + f"\nbest architecture on the full data: {best['arch']} {best['test_acc']:.2f} %")


def plot(res: dict[str, Any], path) -> None:
    """Proxy (validation accuracy on the summary) against truth (full-data test accuracy), one
    panel per summary, with the rank correlations."""
    names = res["settings"]["architectures"]
    truth = [res["full"][n]["test_acc"] for n in names]
    items = list(res["results"].items())
    cols = min(3, len(items))
    nrows = math.ceil(len(items) / cols)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, (label, r) in zip(axes.flat, items):
        proxy = [r["scores"][n]["val_acc"] for n in names]
        ax.scatter(truth, proxy, s=14, alpha=0.8)
        ax.set_title(f"{label}: ρ={r['spearman']:.2f}, τ={r['kendall']:.2f}", fontsize=9)
        ax.set_xlabel("full-data test accuracy (%)", fontsize=8)
        ax.set_ylabel("summary-trained val. accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    fs = res["settings"]["full"]
    fig.suptitle(f"{res['settings']['dataset']}: {len(names)} ConvNets; truth: {fs['epochs']} "
                 f"epochs on {fs['train_examples']} examples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
