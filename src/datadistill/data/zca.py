"""ZCA whitening (as in KIP/MTT: eigendecomposition of the train covariance, regularized).

The fitted transform is stored with every summary distilled in ZCA space, so evaluation applies
exactly the same transform to the test split anywhere.
"""
from __future__ import annotations

import torch
from torch import Tensor


class ZCA:
    def __init__(self, mean: Tensor, matrix: Tensor, reg: float):
        self.mean, self.matrix, self.reg = mean, matrix, float(reg)

    @classmethod
    def fit(cls, x: Tensor, reg: float = 0.1) -> "ZCA":
        """Fit on images ``x`` [N, ...]; ``reg`` is added relative to the mean eigenvalue."""
        flat = x.reshape(x.shape[0], -1).double()
        mean = flat.mean(0)
        xc = flat - mean
        cov = xc.T @ xc / flat.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(0) + reg * evals.clamp_min(0).mean()
        matrix = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        return cls(mean.float(), matrix.float(), reg)

    def __call__(self, x: Tensor, batch: int = 4096) -> Tensor:
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        m, w = self.mean.to(x.device), self.matrix.to(x.device)
        out = torch.cat([(flat[i:i + batch] - m) @ w for i in range(0, shape[0], batch)]) \
            if shape[0] else flat
        return out.reshape(shape)

    def state(self) -> dict[str, Tensor]:
        return {"zca_mean": self.mean.contiguous(), "zca_matrix": self.matrix.contiguous()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], reg: float) -> "ZCA":
        return cls(state["zca_mean"], state["zca_matrix"], reg)
