"""Factorized summaries (survey §2.5): stored *codes* plus *decoders* that turn them into examples.

A factorized summary stores ``codes`` (one per stored item, each with a class label) and a list
of ``decoders`` (modules or plain tensors such as linear bases); ``materialize()`` runs every
decoder on every code, differentiably, so the objective (DM, gradient or trajectory matching, an
unrolled meta-loss) back-propagates into both. The materialized examples are decoder-major::

    x = [decoders[0](codes); decoders[1](codes); ...],   y = labels of the codes, repeated

so a summary of ``n`` codes and ``m`` decoders holds ``n * m`` examples while it stores only the
codes, the decoders' weights and the labels — ``stored_bytes()`` counts all of them (everything
in ``state_dict``: nothing that must be stored to rebuild the examples is left out).

The three published forms are subclasses that choose the codes and the decoders:

- LinBa (``synsets/linba.py``): codes are coefficient vectors, the decoder is a shared matrix of
  bases in input space (``x = a @ B``);
- HaBa (``synsets/haba.py``): codes are base images, decoders are small convolutional
  hallucinators;
- KFS (``synsets/kfs.py``): codes are per-class latent vectors, decoders are shared generators.

Subclasses implement ``build_decoders()`` and ``decode(j, codes)``; the base owns the codes, the
labels (hard, or learned soft labels per code), ``class_ids`` and the decoder-major layout.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SyntheticSet


class FactorizedSet(SyntheticSet):
    """Base of the factorized parametrizations (not registered itself).

    ``ipc``: stored codes per class; ``code_shape``: the shape of one code. A subclass sets
    ``self.decoders`` (an ``nn.ModuleList`` or a ``ParameterList``) in ``build_decoders`` and
    maps codes to examples of ``info.shape`` in ``decode``.
    """

    kind = "factorized"

    def __init__(self, info, *, ipc: int, code_shape: tuple[int, ...], label_format: str = "hard",
                 lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if ipc < 1:
            raise ValueError(f"ipc (codes per class) must be >= 1, got {ipc}")
        if label_format == "regression":
            raise ValueError("factorized summaries support hard or soft labels")
        k = info.num_classes
        self.codes_per_class = int(ipc)
        self.code_shape = tuple(int(s) for s in code_shape)
        self.codes = nn.Parameter(torch.zeros(k * ipc, *self.code_shape))
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))
        self.y = nn.Parameter(F.one_hot(self.labels, k).float()) if label_format == "soft" else None
        self.build_decoders()

    # -- to implement -------------------------------------------------------------------------
    def build_decoders(self) -> None:
        raise NotImplementedError

    @property
    def num_decoders(self) -> int:
        return len(self.decoders)

    def decode(self, j: int, codes: Tensor) -> Tensor:
        """Examples ``[n, *info.shape]`` of decoder ``j`` for ``codes`` ``[n, *code_shape]``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"ipc": self.codes_per_class}

    def materialize(self) -> tuple[Tensor, Tensor]:
        x = torch.cat([self.decode(j, self.codes) for j in range(self.num_decoders)])
        y = self.labels if self.y is None else self.y
        return x, y.repeat(self.num_decoders, *([1] * (y.dim() - 1)))

    @property
    def class_ids(self) -> Tensor:
        return self.labels.repeat(self.num_decoders)

    def class_slice(self, c: int) -> slice:
        """Stored codes of class ``c``."""
        return slice(c * self.codes_per_class, (c + 1) * self.codes_per_class)

    def decoder_parameters(self) -> list[nn.Parameter]:
        return list(self.decoders.parameters())

    def code_parameters(self) -> list[nn.Parameter]:
        """The codes and, with soft labels, the labels (everything but decoders and step size)."""
        return [self.codes] + ([self.y] if self.y is not None else [])
