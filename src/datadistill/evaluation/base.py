"""What every modality's evaluation shares: the protocol record, the report, the statistics."""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError


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
    #: ``train.train_model``'s schedule. "reference": DatasetCondensation's ``evaluate_synset``
    #: exactly (epochs + 1 passes; after pass int(epochs * decay_at) + 1 a new SGD with lr x0.1,
    #: so the momentum restarts); "fraction": epochs passes, lr x0.1 at decay_at, momentum kept
    #: (the library's schedule before the parity check, an opt-in deviation)
    schedule: str = "reference"
    #: the DSA mode of the evaluation models (``augment.MODES``): "single" (DSA's evaluator: one
    #: transform per mini-batch), "idc" (IDC's ``DiffAug``: flip and color always + one of the rest)
    dsa_mode: str = "single"
    #: CutMix per mini-batch after DSA (``cutmix.CutMix``): probability (0: off) and Beta parameter
    cutmix_p: float = 0.0
    cutmix_beta: float = 1.0

    def __post_init__(self):
        from ..augment import MODES
        from ..train import SCHEDULES
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        if self.dsa_mode not in MODES:
            raise ConfigError(f"unknown DSA mode {self.dsa_mode!r}; known: {', '.join(MODES)}")
        from ..cutmix import CutMix
        CutMix(self.cutmix_p, self.cutmix_beta)  # validates the probability and beta

    def augmentation(self, info) -> Any:
        """The evaluation models' per-example DSA for data ``info`` (None without DSA)."""
        from ..augment import DSA
        return DSA.for_data(info, self.dsa_strategy, mode=self.dsa_mode) if self.dsa else None

    def cutmix(self) -> Any:
        """The evaluation models' ``cutmix.CutMix`` (None when ``cutmix_p`` is 0)."""
        from ..cutmix import CutMix
        return CutMix(self.cutmix_p, self.cutmix_beta) if self.cutmix_p > 0 else None


PROTOCOLS: dict[str, Protocol] = {
    # DC/DSA/DM papers (evaluate_synset): SGD momentum 0.9, wd 5e-4, lr 0.01, batch 256,
    # 1000 epochs (+1 pass) with DSA, lr x0.1 by a new optimizer after pass 501, 20 models.
    "paper": Protocol("paper", epochs=1000, num_models=20),
    # CPU reduction: same optimizer and augmentation, fewer epochs and models.
    "fast": Protocol("fast", epochs=300, num_models=3),
    # for tests and smoke runs only
    "smoke": Protocol("smoke", epochs=20, num_models=1),
    # the paper protocol + CutMix as IDC's authors evaluate (Efficient-Dataset-Condensation,
    # argument.py: --mixup cut, --beta 1.0, mix_p 0.5 on CIFAR/SVHN/MNIST/Fashion-MNIST, and
    # cutout dropped from the evaluation DSA when CutMix is on); everything else is `paper`'s
    "paper-cutmix": Protocol("paper-cutmix", epochs=1000, num_models=20,
                             dsa_strategy="color_crop_flip_scale_rotate", cutmix_p=0.5),
    # IDC's evaluation (test.py -> train.py train/train_epoch) as a whole: 1000 epochs, batch
    # 64, SGD lr 0.01 mom 0.9 wd 5e-4, MultiStepLR x0.2 at 2/3 and 5/6 of the epochs, per-example
    # DiffAug (flip and color always + one of crop/scale/rotate), CutMix p 0.5 beta 1.0
    "idc": Protocol("idc", epochs=1000, num_models=20, batch_size=64, schedule="multistep",
                    dsa_strategy="color_crop_flip_scale_rotate", dsa_mode="idc", cutmix_p=0.5),
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
    #: how it ran (resolved ``RunOptions``: device, precision, kernels ...), never what
    run: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        sched = self.protocol.get("schedule")
        lines = [f"protocol: {self.protocol['name']} ({self.protocol['epochs']} epochs, "
                 f"{self.protocol['num_models']} models, lr {self.protocol['lr']}"
                 + (", DSA" if self.protocol["dsa"] else "")
                 + (f", CutMix p {self.protocol['cutmix_p']:g}" if self.protocol.get("cutmix_p")
                    else "")
                 + (f", {sched} schedule" if sched else "") + ")"
                 + ("" if not self.overrides else f"  overrides: {self.overrides}"),
                 f"summary: {self.summary.get('method', '?')} on {self.summary['dataset']}, "
                 f"{self.summary['ipc']:g} per class, {self.summary['stored_bytes']} stored bytes",
                 f"{'model':<14}{'accuracy %':>16}{'% of full':>12}{'full %':>9}{'published full':>16}"]
        for m, r in self.results.items():
            pct = f"{r['pct_of_full']:.1f}" if r.get("pct_of_full") is not None else "-"
            full = f"{r['full_acc']:.1f}" if r.get("full_acc") is not None else "-"
            pub = f"{r['published_full']:.1f}" if r.get("published_full") is not None else "-"
            lines.append(f"{m:<14}{r['mean']:>9.2f} ± {r['std']:<5.2f}{pct:>12}{full:>9}{pub:>16}")
        fulls = {r["full_settings"].get("description") for r in self.results.values()
                 if isinstance(r.get("full_settings"), dict) and r["full_settings"].get("description")}
        for desc in sorted(fulls):
            lines.append(f"full: {desc}")
        return "\n".join(lines)


def accuracy_stats(accs: Sequence[float]) -> dict[str, Any]:
    """Accuracies of several fresh models -> {accs, mean, std (population)}; shared by every
    modality's evaluator."""
    accs = list(accs)
    return {"accs": accs, "mean": statistics.fmean(accs),
            "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0}


def check_loss(losses: list[float], epoch: int, loss: float, model: str, lr: float) -> None:
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
        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]
