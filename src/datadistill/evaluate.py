"""The evaluation protocol, and nothing else.

``evaluate(syn, real)`` trains K fresh models of each requested architecture on the summary and
tests them on the real test split; it reports mean ± std per architecture and, when a full-data
reference is available, the percentage of full-data accuracy. The protocol is one of the named
``PROTOCOLS`` (``paper`` = the field's standard, ``fast`` = a CPU reduction, clearly labelled);
every setting and every override lands in the report. No choice is made on the test split:
the final model after the fixed schedule is tested, never the best epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .augment import DSA
from .data.base import RealData, Split
from .data.zca import ZCA
from .models import create_model
from .registry import Registry
from .runtime import fused_kernels, make_generator, resolve_device
from .synsets.base import SyntheticSet
from .train import accuracy, train_model


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    epochs: int
    num_models: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at: float = 0.5
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    use_learned_lr: bool = True  # a summary's learned step size (MTT/TESLA) replaces ``lr``
    precision: str = "fp32"
    compile: bool = False  # torch.compile the training steps (same math, faster on CPU)
    fused: bool = False  # the fused CPU norm/ReLU/pool kernel (same math, runtime.fused_kernels)


PROTOCOLS: dict[str, Protocol] = {
    # DC/DSA/DM papers: SGD momentum 0.9, wd 5e-4, lr 0.01 x0.1 at half, batch 256,
    # 1000 epochs with DSA, 20 models.
    "paper": Protocol("paper", epochs=1000, num_models=20),
    # CPU reduction: same optimizer and augmentation, fewer epochs and models.
    "fast": Protocol("fast", epochs=300, num_models=3),
    # for tests and smoke runs only
    "smoke": Protocol("smoke", epochs=20, num_models=1),
}

#: Published full-data test accuracy (%) of the field's networks (DC/DM papers' tables).
PUBLISHED_FULL = {
    ("fashion-mnist", "convnet"): 93.5, ("mnist", "convnet"): 99.6,
    ("cifar10", "convnet"): 84.8, ("cifar100", "convnet"): 56.2,
}


@dataclasses.dataclass
class EvalReport:
    protocol: dict[str, Any]
    summary: dict[str, Any]
    results: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        lines = [f"protocol: {self.protocol['name']} ({self.protocol['epochs']} epochs, "
                 f"{self.protocol['num_models']} models, lr {self.protocol['lr']}"
                 + (", DSA" if self.protocol["dsa"] else "") + ")"
                 + ("" if not self.overrides else f"  overrides: {self.overrides}"),
                 f"summary: {self.summary.get('method', '?')} on {self.summary['dataset']}, "
                 f"{self.summary['ipc']:g} per class, {self.summary['stored_bytes']} stored bytes",
                 f"{'model':<14}{'accuracy %':>16}{'% of full':>12}{'full %':>9}{'published full':>16}"]
        for m, r in self.results.items():
            pct = f"{r['pct_of_full']:.1f}" if r.get("pct_of_full") is not None else "-"
            full = f"{r['full_acc']:.1f}" if r.get("full_acc") is not None else "-"
            pub = f"{r['published_full']:.1f}" if r.get("published_full") is not None else "-"
            lines.append(f"{m:<14}{r['mean']:>9.2f} ± {r['std']:<5.2f}{pct:>12}{full:>9}{pub:>16}")
        return "\n".join(lines)


def accuracy_stats(accs: Sequence[float]) -> dict[str, Any]:
    """Accuracies of several fresh models -> {accs, mean, std (population)}; shared by every
    modality's evaluator."""
    accs = list(accs)
    return {"accs": accs, "mean": statistics.fmean(accs),
            "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0}


def _check_loss(losses: list[float], epoch: int, loss: float, model: str, lr: float) -> None:
    """Record one epoch's training loss; a non-finite loss stops the evaluation (the network
    diverged: its accuracy would be meaningless)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"training {model} diverged: loss {loss} at epoch {epoch} (lr "
                                 f"{lr:g}); use a smaller learning rate for this network")
    losses.append(loss)


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def matched_test_split(syn: SyntheticSet, real: RealData) -> Split:
    """The real test split in the summary's input space (applies the summary's stored ZCA when
    ``real`` was loaded without it); refuses summaries of another dataset shape."""
    si, ri = syn.info, real.info
    if tuple(si.shape) != tuple(ri.shape) or si.num_classes != ri.num_classes:
        raise ValueError(f"summary is for {si.name} {tuple(si.shape)} with {si.num_classes} classes "
                         f"but the data is {ri.name} {tuple(ri.shape)} with {ri.num_classes} classes")
    if tuple(si.mean) != tuple(ri.mean) or tuple(si.std) != tuple(ri.std):
        raise ValueError(f"summary normalization {si.mean}/{si.std} differs from the data's "
                         f"{ri.mean}/{ri.std}; load the dataset the summary was made from")
    if si.zca == ri.zca:
        return real.test
    if si.zca and not ri.zca:
        if "zca_matrix" not in syn.preprocess:
            raise ValueError("summary was distilled in ZCA space but carries no ZCA transform")
        zca = ZCA.from_state(syn.preprocess, si.extra.get("zca_reg", 0.1))
        return Split(zca(real.test.x), real.test.y)
    raise ValueError("the data is ZCA-whitened but the summary is not; load it without --zca")


#: modality -> evaluate function with the same signature as ``evaluate`` (graphs, recsys, ...).
#: Image summaries use the protocol below; other modalities register their own protocol here.
MODALITY_EVALUATORS: Registry = Registry("modality evaluator")


def evaluate(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
             protocol: str | Protocol = "fast", num_models: int | None = None, seed: int = 0,
             device=None, full_reference: bool = False, compile: bool | None = None,
             fused: bool | None = None,
             on_model: Callable[[dict[str, Any]], None] | None = None) -> EvalReport:
    """Train ``num_models`` fresh models per architecture on ``syn``; test on ``real.test``.

    ``num_models``, ``compile`` (``torch.compile`` the training steps) and ``fused`` (the fused
    CPU kernel of ``runtime.fused_kernels``) override the protocol's settings (recorded in
    ``overrides``). With
    ``full_reference`` the cached full-data accuracy of each architecture is reported beside.
    """
    modality = syn.info.modality
    if modality != "image":
        if compile or fused:
            raise ValueError(f"compile=True and fused=True apply to image summaries, not "
                             f"{modality!r} ones")
        if modality not in MODALITY_EVALUATORS:  # modality packages register their evaluator on import
            import importlib.util
            if importlib.util.find_spec(f"{__package__}.{modality}") is not None:
                importlib.import_module(f"{__package__}.{modality}")
        return MODALITY_EVALUATORS.get(modality)(
            syn, real, models=models, protocol=protocol, num_models=num_models, seed=seed,
            device=device, full_reference=full_reference, on_model=on_model)
    models = ("convnet",) if models is None else tuple(models)
    proto = get_protocol(protocol)
    overrides: dict[str, Any] = {}
    if num_models is not None and num_models != proto.num_models:
        overrides["num_models"] = num_models
        proto = dataclasses.replace(proto, num_models=num_models)
    if compile is not None and compile != proto.compile:
        overrides["compile"] = compile
        proto = dataclasses.replace(proto, compile=compile)
    if fused is not None and fused != proto.fused:
        overrides["fused"] = fused
        proto = dataclasses.replace(proto, fused=fused)
    with fused_kernels() if proto.fused else contextlib.nullcontext():
        return _evaluate_images(syn, real, models, proto, overrides, seed, device,
                                full_reference, on_model)


def _evaluate_images(syn, real, models, proto, overrides, seed, device, full_reference,
                     on_model) -> EvalReport:
    dev = resolve_device(device)
    test = matched_test_split(syn, real).to(dev)
    with torch.no_grad():
        x, y = (t.detach().to(dev) for t in syn.materialize())
    lr = proto.lr
    if proto.use_learned_lr and syn.lr is not None:
        lr = float(syn.lr.detach())
        overrides["lr"] = f"{lr:.6g} (the summary's learned step size)"
    dsa = DSA.for_data(syn.info, proto.dsa_strategy) if proto.dsa else None
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        accs, first_last = [], []
        for k in range(proto.num_models):
            gen = make_generator(seed * 1_000_003 + mi * 1009 + k)
            net = create_model(name, syn.info, generator=gen, device=dev)
            losses: list[float] = []
            train_model(net, x, y, epochs=proto.epochs, generator=gen, lr=lr,
                        momentum=proto.momentum, weight_decay=proto.weight_decay,
                        batch_size=proto.batch_size, decay_at=proto.decay_at, dsa=dsa,
                        label_format=syn.label_format, precision=proto.precision,
                        compile=proto.compile,
                        on_epoch=lambda ep, loss: _check_loss(losses, ep, loss, name, lr))
            acc = 100.0 * accuracy(net, test.x, test.y, precision=proto.precision)
            accs.append(acc)
            if losses:  # (epochs=0 trains nothing: nothing to check)
                first_last.append((losses[0], losses[-1]))
            if losses and losses[-1] > 2.0 * losses[0]:
                warnings.warn(f"{name} (model {k}) trained to a higher loss than it started from "
                              f"({losses[0]:.4g} -> {losses[-1]:.4g}, peak {max(losses):.4g}) at lr "
                              f"{lr:g}: the protocol's learning rate is too large for this network "
                              f"(wide networks need it scaled down, ~1/width)", RuntimeWarning,
                              stacklevel=2)
            if on_model is not None:
                on_model({"model": name, "index": k, "accuracy": acc})
        r: dict[str, Any] = {**accuracy_stats(accs),
                             "published_full": PUBLISHED_FULL.get((syn.info.name, name)),
                             "train_loss_first_last": first_last}
        if full_reference:
            from .reference import full_data_accuracy
            full = full_data_accuracy(real, name, device=dev)
            r["full_acc"] = full["accuracy"]
            r["full_settings"] = full["settings"]
            r["pct_of_full"] = 100.0 * r["mean"] / full["accuracy"] if full["accuracy"] else math.nan
        results[name] = r
    summary = {"dataset": syn.info.name, "ipc": syn.ipc, "num_examples": syn.num_examples,
               "stored_bytes": syn.stored_bytes(), "label_format": syn.label_format,
               "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
               "params": syn.meta.get("params")}
    return EvalReport(dataclasses.asdict(proto), summary, results, overrides)
