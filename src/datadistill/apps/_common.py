"""What the applications share: checking a summary against the data, subsets of the real data,
making a summary through the public API, training on (x, y) by the evaluation protocol, CPU
time, results files in the benchmark schema and figures. Only public library calls."""
from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.base import RealData, Split
from ..errors import ConfigError, DataFormatError
from ..runtime import RunOptions
from ..synsets.base import SyntheticSet


def check_image_summary(syn: SyntheticSet, info, *, what: str = "summary") -> None:
    """Refuse a summary of another modality, class count or example shape than ``info``'s."""
    si = syn.info
    if si.modality != "image" or info.modality != "image":
        raise DataFormatError(f"this application takes image summaries; the {what} is a "
                              f"{si.modality} summary and the data is {info.modality}")
    if si.num_classes != info.num_classes:
        raise DataFormatError(f"the {what} has {si.num_classes} classes but {info.name} has "
                              f"{info.num_classes}")
    if tuple(si.shape) != tuple(info.shape):
        raise DataFormatError(f"the {what} holds examples of shape {tuple(si.shape)} but "
                              f"{info.name}'s are {tuple(info.shape)}")


def train_subset(real: RealData, idx: Tensor, *, classes: Sequence[int] | None = None) -> RealData:
    """``real`` whose training split is the examples ``idx`` (validation and test kept). With
    ``classes`` only those classes are kept and relabelled 0..len(classes)-1 (``info`` says how
    many), so a method can distill a part of the data that lacks some classes."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    x, y = real.train.x[idx], real.train.y[idx]
    info = real.info
    if classes is not None:
        classes = [int(c) for c in classes]
        keep = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
        x, y = x[keep], y[keep]
        remap = torch.full((info.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        y = remap[y]
        names = tuple(info.class_names[c] for c in classes) if info.class_names else ()

        def sub(s: Split) -> Split:
            k = torch.isin(s.y, torch.tensor(classes, dtype=s.y.dtype))
            return Split(s.x[k], remap[s.y[k]])

        return RealData(info.replace(num_classes=len(classes), class_names=names),
                        Split(x, y), sub(real.val), sub(real.test), real.zca)
    return RealData(info, Split(x, y), real.val, real.test, real.zca)


class TensorSet(SyntheticSet):
    """A fixed summary held as tensors (a union of summaries, a subset): what ``evaluate`` and
    the applications' training take. Not a learnable parametrization; not registered."""

    kind = "tensors"

    def __init__(self, info, x: Tensor, y: Tensor, *, label_format: str = "hard",
                 lr: float | None = None, meta: dict[str, Any] | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ConfigError(f"a summary needs as many labels as examples (> 0); got "
                              f"{x.shape[0]} examples and {y.shape[0]} labels")
        self.register_buffer("x", x.detach().clone())
        self.register_buffer("y", y.detach().clone())
        self.meta.update(meta or {})

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.x, self.y

    @property
    def class_ids(self) -> Tensor:
        return self.y if self.label_format == "hard" else self.y.argmax(-1)

    def config(self) -> dict[str, Any]:
        return {"num_examples": int(self.x.shape[0])}


def is_baseline(method: str) -> bool:
    from ..baselines import names
    return method in names("image")


def make_summary(real: RealData, method: str, ipc: int, *, seed: int = 0,
                 iterations: int | None = None, preset: str | None = None,
                 params: dict[str, Any] | None = None, run: RunOptions | None = None,
                 feature_settings: dict[str, Any] | None = None,
                 callbacks: Iterable[Callable[[dict[str, Any]], None]] = ()) -> SyntheticSet:
    """A summary of ``real`` by ``method`` (a registered distiller, or a baseline subset:
    random / herding / kcenter, whose feature network follows ``feature_settings``) at ``ipc``
    examples per class, through the public API."""
    if is_baseline(method):
        from ..baselines.images import select_coreset
        dev = None if run is None or run.device == "auto" else run.device
        return select_coreset(real, ipc, method, seed=seed, device=dev,
                              feature_settings=feature_settings)
    from ..distillers import create_distiller
    kw = {"seed": seed, **(params or {})}
    if iterations is not None:
        kw["iterations"] = iterations
    d = create_distiller(method, preset, **kw)
    syn = d.init_synset(real, ipc=ipc)
    d.distill(real, syn, callbacks, run=run)
    return syn


def train_on(x: Tensor, y: Tensor, info, *, model: str = "convnet", protocol="fast",
             seed: int = 0, label_format: str = "hard", lr: float | None = None,
             run: RunOptions | None = None) -> nn.Module:
    """One fresh ``model`` trained on ``(x, y)`` exactly as the evaluation protocol trains it
    (optimizer, schedule, DSA); returns the trained network (eval mode)."""
    from .. import perf
    from ..evaluation import get_protocol
    from ..models import create_model
    from ..runtime import make_generator
    from ..train import train_model

    proto = get_protocol(protocol)
    run = perf.resolve(run)
    dev = torch.device(run.device)
    with perf.activate(run):
        gen = make_generator(seed)
        net = create_model(model, info, generator=gen, device=dev, fused=run.fused)
        dsa = proto.augmentation(info)
        train_model(net, x.to(dev), y.to(dev), epochs=proto.epochs, generator=gen,
                    lr=proto.lr if lr is None else lr, momentum=proto.momentum,
                    weight_decay=proto.weight_decay, batch_size=proto.batch_size,
                    decay_at=proto.decay_at, dsa=dsa, label_format=label_format,
                    precision=run.precision, schedule=proto.schedule, cutmix=proto.cutmix())
    return net


def cpu_seconds() -> float:
    """CPU time (user + sys) of this process and its waited-for children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def write_bench_results(path: str | os.PathLike, *, suite: str, title: str, notes: str,
                        rows: dict[str, dict[str, Any]], threads: int | None = None) -> Path:
    """A results file in the benchmark schema (``bench/results.py``), so ``python -m
    datadistill.bench report`` lists an application's rows: each row needs ``label``,
    ``method``, ``dataset``, ``budget``, ``accuracy`` {mean, std, n}, ``protocol``, ``cpu_s``;
    the environment (machine, threads, commit, date) and the command line are added here. Rows
    are kept out of the report's headline table (``declared.summary = False``): they measure an
    application, not a method."""
    from ..bench.machine import describe
    from ..bench.results import SCHEMA, UNITS, save_results

    root = Path(__file__).resolve().parents[3]
    env = describe(root, threads)
    command = "datadistill " + " ".join(sys.argv[1:]) if sys.argv else ""
    out = {}
    for rid, r in rows.items():
        declared = {"method": r.get("method"), "summary": False, "notes": r.pop("notes", "")}
        out[rid] = {"id": rid, "kind": "accuracy", "status": "done", "declared": declared, "env": env,
                    "source": {"command": command}, "iterations_run": None, **r}
    data = {"schema": SCHEMA, "suite": suite, "title": title, "notes": notes,
            "units": UNITS, "machine": env, "rows": out}
    return save_results(Path(path), json.loads(json.dumps(data, default=str)))


def figure(ncols: int = 1, width: float = 5.5, height: float = 4.0):
    """A matplotlib figure (Agg backend: no display needed) and its axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# == appended for the continual-learning and NAS applications (append below; do not rewrite) ==

def class_view(real: RealData, classes: Sequence[int]) -> RealData:
    """The real data restricted to ``classes`` (train, validation and test), labels renumbered
    ``0..len(classes)-1`` in the given order; its ``DataInfo`` names the classes
    (``fashion-mnist[c0,1]``), so cached references (herding features) of different views never
    collide. A class without training examples is an error."""
    k = real.info.num_classes
    classes = [int(c) for c in classes]
    if not classes or any(not 0 <= c < k for c in classes) or len(set(classes)) != len(classes):
        raise ConfigError(f"classes {classes} are not distinct classes of {real.info.name} "
                          f"(0..{k - 1})")
    view = train_subset(real, torch.arange(len(real.train)), classes=classes)
    empty = [c for i, c in enumerate(classes) if not bool((view.train.y == i).any())]
    if empty:
        raise DataFormatError(f"{real.info.name}: classes {empty} have no training examples")
    info = view.info.replace(name=f"{real.info.name}[c{','.join(map(str, classes))}]")
    return RealData(info, view.train, view.val, view.test, real.zca)


def per_class_subset(real: RealData, n: int | None, seed: int = 0) -> RealData:
    """``real`` with at most ``n`` training examples per class (a fixed random choice from
    ``seed``; validation and test unchanged); ``None`` keeps everything."""
    if n is None:
        return real
    if n < 1:
        raise ConfigError(f"examples per class must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    picks = [real.class_indices(c)[torch.randperm(len(real.class_indices(c)), generator=g)[:n]]
             for c in range(real.info.num_classes)]
    return train_subset(real, torch.cat(picks).sort().values)


def check_summary(syn: SyntheticSet, real: RealData, what: str = "summary") -> None:
    """``check_image_summary`` plus the preprocessing: the same normalization and ZCA."""
    check_image_summary(syn, real.info, what=what)
    si, ri = syn.info, real.info
    if (tuple(si.mean) != tuple(ri.mean) or tuple(si.std) != tuple(ri.std)
            or bool(si.zca) != bool(ri.zca)):
        raise DataFormatError(f"the {what} was made with another preprocessing of {si.name} "
                              f"(normalization {si.mean}/{si.std}, zca {si.zca}) than the data "
                              f"({ri.mean}/{ri.std}, zca {ri.zca})")


def load_summary(path: str | os.PathLike, real: RealData) -> SyntheticSet:
    """A saved summary (a summary folder or a run folder holding ``summary/``), checked against
    ``real`` (modality, classes, shape, preprocessing)."""
    p = Path(path)
    if (p / "summary").is_dir():
        p = p / "summary"
    syn = SyntheticSet.load(p)
    check_summary(syn, real, f"summary {path}")
    return syn


def summary_for(real: RealData, method: str, ipc: int, *, seed: int = 0,
                iterations: int | None = None, preset: str | None = None,
                params: dict[str, Any] | None = None, run: RunOptions | None = None,
                feature_settings: dict[str, Any] | str | None = None,
                feature_model: str | None = None) -> SyntheticSet:
    """``make_summary`` with an ``iterations`` override for methods and, for herding / k-center,
    the feature network (``feature_model``, default the ConvNet) and its training settings
    (``evaluation.reference`` presets or overrides)."""
    if is_baseline(method):
        from ..baselines import select_baseline
        from ..runtime import resolve_device
        dev = resolve_device(None if run is None else run.device)
        kw = {"feature_settings": feature_settings} if feature_settings is not None else {}
        return select_baseline(real, method, ipc=ipc, seed=seed, device=dev, model=feature_model,
                               **kw)
    over = dict(params or {})
    if iterations is not None:
        over["iterations"] = iterations
    return make_summary(real, method, ipc=ipc, preset=preset, params=over, seed=seed, run=run)


def globalize_labels(y: Tensor, fmt: str, classes: Sequence[int], k: int) -> Tensor:
    """Labels of a summary made on a view of ``classes`` (``0..len(classes)-1``: a class view,
    a client's classes) in the global space of ``k`` classes."""
    cls = torch.tensor(list(classes), device=y.device)
    if fmt == "hard":
        return cls[y.long()]
    fill = -30.0 if fmt == "soft" else 0.0  # soft labels are logits: ~zero probability elsewhere
    out = torch.full((y.shape[0], k), fill, dtype=y.dtype, device=y.device)
    out[:, cls] = y
    return out


def summary_tensors(syn: SyntheticSet) -> tuple[Tensor, Tensor]:
    """The summary's ``(x, y)``, detached."""
    with torch.no_grad():
        x, y = syn.materialize()
    return x.detach(), y.detach()


class Timer:
    """Wall and CPU seconds of a block: ``with Timer() as t: ...``; then ``t.wall``, ``t.cpu``."""

    def __enter__(self) -> "Timer":
        import time
        self._w, self._c = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        import time
        self.wall = time.perf_counter() - self._w
        self.cpu = cpu_seconds() - self._c


def environment(threads: int | None = None) -> dict[str, Any]:
    """The machine record of a results file (CPU, cores, threads, torch, commit, date)."""
    from ..bench.machine import describe
    return describe(Path(__file__).resolve().parents[3], threads)


def write_json(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """``record`` as indented JSON at ``path`` (atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, p)
    return p


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for j, r in enumerate(cells):
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                             for i, c in enumerate(r)).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)








def int_list(text: str, what: str) -> list[int]:
    """``"1,10"`` -> [1, 10]; a clear error otherwise."""
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not out:
        raise ConfigError(f"{what} is empty")
    return out


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> a dict (values read as JSON where they parse)."""
    out: dict[str, Any] = {}
    for s in sets:
        key, eq, val = s.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got {s!r}")
        try:
            out[key.strip()] = json.loads(val)
        except ValueError:
            out[key.strip()] = val
    return out


def parse_method(spec: str) -> tuple[str, int | None]:
    """``"dm"`` -> ("dm", None); ``"dm:200"`` -> ("dm", 200 iterations)."""
    name, _, it = spec.partition(":")
    if not name.strip():
        raise ConfigError(f"empty method in {spec!r}")
    try:
        return name.strip().lower(), (int(it) if it else None)
    except ValueError:
        raise ConfigError(f"{spec!r}: the iterations after ':' must be an integer") from None
