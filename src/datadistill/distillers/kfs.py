"""KFS — Lee, Lee & Hwang, "Dataset Condensation with Latent Space Knowledge Factorization and
Sharing", arXiv 2208.10494 (2022).

The summary is factorized (``synsets/kfs.py``): per-class latent codes ``z`` in a space smaller
than the images and ``M`` tiny decoders ``g_1..g_M`` shared by all classes; every (code, decoder)
pair is one example, so ``n`` codes per class give ``n * M`` examples. Codes and decoders are
learned jointly with the distribution-matching objective (single-level, no inner training):

    min_{z, g}  sum_c || mean_{x ~ T_c} phi_theta(A_w(x)) - mean_{i, j} phi_theta(A_w(g_j(z_{c,i}))) ||^2,

``theta`` a freshly initialised random ConvNet every iteration and ``A_w`` one siamese DSA draw
per class — DM's step (``distillers/dm.py``), reused as is on the decoded examples.

The budget: ``--ipc`` is the *storage* budget in images per class. ``init_synset`` gives the
summary as many codes per class as fit in the stored bytes of a pixel summary of ``ipc`` images
per class, the decoders' weights and the codes' labels included (``synsets.kfs.budget_codes``;
Fashion-MNIST, defaults: ipc 1 -> 3 codes x 4 decoders = 12 examples per class, ipc 10 -> 39 x 4
= 156). ``codes_per_class`` set explicitly overrides the budget.

Defaults: the paper's text and code could not be read from this session (no public repository;
see docs/kfs.md), so the schedule is DM's published one (20,000 iterations, batch_real 256, DSA
``color_crop_cutout_flip_scale_rotate``, real initialisation, the codes by SGD lr 1 momentum
0.5) and the decoder (latent 2x down-sampled with the data's channels, 4 decoders of width 8,
Adam lr 1e-3 on the decoders) is the library's choice. ``batch_syn`` (a CPU option, default off)
matches a random subset of that many decoded examples per class each iteration. Left out (not
verifiable here): any auxiliary loss term of the paper beyond distribution matching.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError
from ..synsets.kfs import budget_codes
from .base import DISTILLERS
from .dm import DM


class _Subset:
    """The part of a summary that DM's step sees: the decoded examples ``idx`` (their gradient
    flows back into the codes and decoders of the full summary)."""

    def __init__(self, syn, idx: torch.Tensor):
        self.syn, self.idx = syn, idx

    def materialize(self):
        x, y = self.syn.materialize()
        return x[self.idx], y[self.idx]

    @property
    def class_ids(self):
        return self.syn.class_ids[self.idx]


@DISTILLERS.register("kfs")
@dataclasses.dataclass(kw_only=True)
class KFS(DM):
    """KFS (Lee, Lee & Hwang, arXiv 2208.10494): per-class latent codes and shared tiny decoders,
    learned jointly with distribution matching, min_{z,g} sum_c || mean phi(A_w(T_c)) -
    mean_{i,j} phi(A_w(g_j(z_{c,i}))) ||^2 with phi a fresh random ConvNet every iteration;
    ``--ipc`` is the storage budget (codes per class from the bytes of ``ipc`` images)."""

    name = "kfs"
    synset_kind = "kfs"
    presets = {
        "tiny": {"iterations": 3, "batch_real": 16, "num_decoders": 2, "hidden": 4},
        # Fashion-MNIST, 1 thread: ~9.5 CPU-min at ipc 1 (cpu-300), ~9.3 at ipc 10 (cpu-200)
        "cpu-100": {"iterations": 100},
        "cpu-200": {"iterations": 200, "batch_syn": 32},
        "cpu-300": {"iterations": 300, "batch_syn": 32},
    }

    iterations: int = 20000
    lr_data: float = 1.0  # codes: SGD, momentum 0.5 (DM's step on pixels)
    lr_decoder: float = 1e-3  # decoders: Adam
    latent_channels: int | None = None  # None: the data's channels
    downsample: int = 2
    num_decoders: int = 4
    hidden: int = 8
    codes_per_class: int | None = None  # None: from the --ipc storage budget
    batch_syn: int | None = None  # decoded examples per class matched per iteration (None: all)

    def __post_init__(self):
        if self.downsample < 1 or self.num_decoders < 1 or self.hidden < 1:
            raise ConfigError("downsample, num_decoders and hidden must be >= 1")
        if self.latent_channels is not None and self.latent_channels < 1:
            raise ConfigError(f"latent_channels must be >= 1, got {self.latent_channels}")
        if self.codes_per_class is not None and self.codes_per_class < 1:
            raise ConfigError(f"codes_per_class must be >= 1, got {self.codes_per_class}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ConfigError(f"batch_syn must be >= 1, got {self.batch_syn}")
        if self.lr_decoder < 0:
            raise ConfigError(f"lr_decoder must be >= 0, got {self.lr_decoder}")
        clash = sorted(k for k, v in (self.synset_args or {}).items()
                       if k in self.synset_options() and v != self.synset_options()[k])
        if clash:
            raise ConfigError(f"{self.name}: {', '.join(clash)} are parameters of the method; set "
                              f"them directly instead of through synset_args")
        super().__post_init__()

    def synset_options(self) -> dict:
        """The ``kfs`` summary's options, from this method's fields."""
        return {"latent_channels": self.latent_channels, "downsample": self.downsample,
                "num_decoders": self.num_decoders, "hidden": self.hidden}

    def default_synset_args(self, kind):
        return self.synset_options() if kind == "kfs" else {}

    def init_synset(self, real, *, ipc=None, **budget):
        """For the ``kfs`` kind, ``ipc`` is the storage budget in images per class: the summary
        gets the codes per class that fit (``budget_codes``, at ``storage``), unless
        ``codes_per_class`` is set. Other kinds (``synset``) take ``ipc`` as they always do."""
        if budget:
            raise ConfigError(f"{self.name} takes an ipc budget, not {sorted(budget)}")
        if self.summary_kind() != "kfs":
            return super().init_synset(real, ipc=ipc)
        n = self.codes_per_class
        if n is None:
            if ipc is None:
                raise ConfigError(f"{self.name} needs --ipc (the storage budget in images per "
                                  "class) or codes_per_class")
            try:
                n = budget_codes(real.info, ipc, label_format=self.label_format,
                                 storage=self.storage, **self.summary_args())
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{self.name}: {e}") from None
        return super().init_synset(real, ipc=n)

    def step(self, real, syn):
        if self.batch_syn is None:
            return super().step(real, syn)
        ids = syn.class_ids
        idx = []
        for c in range(real.info.num_classes):
            members = torch.nonzero(ids == c).flatten()
            pick = torch.randperm(members.numel(), generator=self.gen_)[:self.batch_syn]
            idx.append(members[pick.to(members.device)])
        return super().step(real, _Subset(syn, torch.cat(idx)))
