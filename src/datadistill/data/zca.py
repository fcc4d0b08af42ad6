"""ZCA whitening: eigendecomposition of the train covariance, regularized.

Two regularisations (``ZCA_MODES``), each the one its authors' code uses:

* ``"kornia"`` (default; MTT/TESLA, whose ``utils.get_dataset(..., zca=True)`` uses kornia's
  ``ZCAWhitening(eps=0.1)``): fitted on the raw [0, 1] pixels, *unbiased* covariance (N - 1),
  ``reg`` added to every eigenvalue as an absolute amount. The published MTT/TESLA ``lr_img``
  values were tuned on data whitened this way.
* ``"kip"`` (KIP-style, as the KIP/RFAD/FRePO code whitens): biased covariance (N), ``reg``
  times the mean eigenvalue added (scale-free), fitted on the data as given (the library's
  per-channel-normalized pixels).

The fitted transform takes the library's normalized images (``(x - mean) / std`` per channel)
whatever it was fitted on, and is stored with every summary distilled in ZCA space, so
evaluation applies exactly the same transform to the test split anywhere.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ZCA_MODES = ("kornia", "kip")


class ZCA:
    def __init__(self, mean: Tensor, matrix: Tensor, reg: float):
        self.mean, self.matrix, self.reg = mean, matrix, float(reg)

    @classmethod
    def fit(cls, x: Tensor, reg: float = 0.1, *, mode: str = "kornia",
            pixel_std: Sequence[float] | None = None) -> "ZCA":
        """Fit on images ``x`` [N, ...] (``mode``: module docstring). ``pixel_std``: the
        per-channel std ``x`` was normalized with; the covariance is then that of the raw pixels
        ``x * std`` (the mean cancels), as MTT fits on [0, 1] pixels, and the returned transform
        still maps the normalized ``x``: (x_raw - m_raw) T = (x - m) diag(std) T."""
        if mode not in ZCA_MODES:
            raise ValueError(f"unknown ZCA mode {mode!r}; known: {', '.join(ZCA_MODES)}")
        flat = x.flatten(1).double()
        scale = None
        if pixel_std is not None:
            scale = torch.as_tensor(tuple(pixel_std), dtype=torch.float64)
            scale = scale.repeat_interleave(flat.shape[1] // len(scale))
            flat = flat * scale
        mean = flat.mean(0)
        xc = flat - mean
        n = flat.shape[0]
        cov = xc.T @ xc / (n - 1 if mode == "kornia" and n > 1 else n)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(0)
        evals = evals + (reg if mode == "kornia" else reg * evals.mean())
        matrix = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        if scale is not None:  # back to the normalized input's coordinates
            mean, matrix = mean / scale, scale[:, None] * matrix
        return cls(mean.float(), matrix.float(), reg)

    def __call__(self, x: Tensor, batch: int = 4096) -> Tensor:
        shape = x.shape
        flat = x.flatten(1)  # (reshape(0, -1) is ambiguous for an empty split)
        m, w = self.mean.to(x.device), self.matrix.to(x.device)
        out = torch.cat([(flat[i:i + batch] - m) @ w for i in range(0, shape[0], batch)]) \
            if shape[0] else flat
        return out.reshape(shape)

    def state(self) -> dict[str, Tensor]:
        return {"zca_mean": self.mean.contiguous(), "zca_matrix": self.matrix.contiguous()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], reg: float) -> "ZCA":
        return cls(state["zca_mean"], state["zca_matrix"], reg)
