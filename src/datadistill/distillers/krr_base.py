"""Shared pieces of the KRR-based meta-model methods (KIP, RFAD, FRePO).

The inner "training" on the summary is kernel ridge regression in closed form (``krr.py``):
``f(X_t) = K_ts (K_ss + lambda' I)^{-1} Y_s`` with ``lambda' = reg * tr(K_ss) / n``; the outer
loss compares ``f(X_t)`` with the labels of a random batch of real training examples. The
summary holds learnable pixels and (optionally learnable) regression targets
(``label_format="regression"``; evaluation then trains networks with MSE on them).

All three authors' codes regress on centred one-hot targets (one-hot - 1/K: KIP's
``one_hot(..., center=True)``, RFAD's ``one_hot - 1/n_classes``, FRePO's ``y_transform``), so
``center_labels`` is on by default; ``center_labels=False`` (plain one-hot) is a named deviation.
``class_balanced`` draws the real batch with ``batch_real / K`` examples of each class (KIP's
``class_balanced_sample``) instead of uniformly.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.krr import krr_fit_predict
from ..errors import ConfigError
from .image import ImageDistiller


@dataclasses.dataclass(kw_only=True)
class KRRDistiller(ImageDistiller):
    """Not registered: the common configuration of KIP, RFAD and FRePO."""

    label_format = "regression"
    #: the optimizer steps ``syn.x`` (and RFAD rewrites it): stored images only
    synset_kinds = ("pixels",)

    lr_data: float = 0.01
    lr_labels: float | None = None  # None: same as lr_data
    learn_labels: bool = True
    center_labels: bool = True  # one-hot minus 1/K (all three authors' codes)
    reg: float = 1e-6
    batch_real: int = 5000
    class_balanced: bool = False  # the real batch: batch_real / K per class (KIP) or uniform
    dsa: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.reg < 0:
            raise ConfigError(f"reg must be >= 0, got {self.reg}")
        if self.batch_real < 1:
            raise ConfigError(f"batch_real must be >= 1, got {self.batch_real}")

    def init_synset(self, real, *, ipc=None, **budget):
        syn = super().init_synset(real, ipc=ipc, **budget)
        if self.center_labels:
            with torch.no_grad():
                syn.y.sub_(1.0 / real.info.num_classes)
        return syn

    def make_optimizer(self, syn) -> torch.optim.Optimizer:
        if syn.label_format != "regression":
            raise ConfigError(f"{self.name} needs a summary with regression labels, "
                              f"got {syn.label_format!r}")
        groups = [{"params": [syn.x], "lr": self.lr_data}]
        if self.learn_labels:
            groups.append({"params": [syn.y], "lr": self.lr_labels or self.lr_data})
        return torch.optim.Adam(groups + self.extra_param_groups())

    def extra_param_groups(self) -> list[dict]:
        """More learnable scalars (RFAD's Platt temperature) optimized with the summary."""
        return []

    def real_batch(self, real) -> tuple[Tensor, Tensor]:
        """``batch_real`` random training examples (without replacement) and their targets;
        with ``class_balanced`` ``batch_real // K`` of each class (the remainder to classes
        drawn at random; a class with fewer examples gives all of them), as KIP's
        ``class_balanced_sample``."""
        n = len(real.train)
        if self.class_balanced:
            idx = self._balanced_indices(real.train.y, real.info.num_classes)
        else:
            idx = torch.randperm(n, generator=self.gen_)[:self.batch_real]
        idx = idx.to(real.train.x.device)
        x, y = real.train.x[idx].to(self.device_), real.train.y[idx].to(self.device_)
        return x, self.targets(y, real.info.num_classes)

    def _balanced_indices(self, labels: Tensor, num_classes: int) -> Tensor:
        per, extra = divmod(self.batch_real, num_classes)
        bonus = set(torch.randperm(num_classes, generator=self.gen_)[:extra].tolist())
        labels = labels.cpu()
        out = []
        for c in range(num_classes):
            members = torch.nonzero(labels == c).flatten()
            take = per + (c in bonus)
            out.append(members[torch.randperm(len(members), generator=self.gen_)[:take]])
        return torch.cat(out)

    def targets(self, y: Tensor, num_classes: int) -> Tensor:
        t = F.one_hot(y, num_classes).float()
        return t - 1.0 / num_classes if self.center_labels else t

    @staticmethod
    def mse(pred: Tensor, y: Tensor) -> Tensor:
        """The authors' regression loss: 0.5 * mean over examples and classes of the squared
        error (KIP's ``0.5 * jnp.mean((pred - y) ** 2)``)."""
        return 0.5 * ((pred - y) ** 2).mean()

    def krr(self, k_ss: Tensor, k_ts: Tensor, y_s: Tensor) -> Tensor:
        """KRR predictions on the real batch, solved in float64 (``reg`` is tiny)."""
        return krr_fit_predict(k_ss.double(), k_ts.double(), y_s.double(), self.reg).float()

    def update(self, loss: Tensor) -> None:
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
