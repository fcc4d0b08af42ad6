"""Kernel ridge regression: the one closed-form solver shared by the meta-model methods
(KIP, RFAD, FRePO) and the recommender family (∞-AE, Distill-CF).

    alpha = (K_ss + lambda' I)^{-1} Y_s,      f(X_t) = K_ts alpha,
    lambda' = lambda * tr(K_ss) / n   when ``scale_by_trace`` (KIP's convention).

Everything is differentiable with respect to the kernels and targets (for learning X_s, Y_s).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def krr_solve(k_ss: Tensor, y_s: Tensor, reg: float = 1e-6, *, scale_by_trace: bool = True) -> Tensor:
    """Dual coefficients ``alpha`` [n, out] for support kernel ``k_ss`` [n, n] and targets ``y_s``."""
    n = k_ss.shape[0]
    if k_ss.shape != (n, n):
        raise ValueError(f"support kernel must be square, got {tuple(k_ss.shape)}")
    if y_s.shape[0] != n:
        raise ValueError(f"{n} support points but {y_s.shape[0]} targets")
    if not torch.isfinite(k_ss).all():
        raise FloatingPointError("support kernel contains NaN or inf")
    lam = reg * (torch.diagonal(k_ss).sum() / n if scale_by_trace else 1.0)
    eye = torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
    a = k_ss + lam * eye
    a = 0.5 * (a + a.T)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(y_s.to(a.dtype), chol)
    return torch.linalg.solve(a, y_s.to(a.dtype))  # not positive definite: plain LU solve


def krr_predict(k_ts: Tensor, alpha: Tensor) -> Tensor:
    return k_ts @ alpha


def krr_fit_predict(k_ss: Tensor, k_ts: Tensor, y_s: Tensor, reg: float = 1e-6, *,
                    scale_by_trace: bool = True) -> Tensor:
    return krr_predict(k_ts, krr_solve(k_ss, y_s, reg, scale_by_trace=scale_by_trace))


def krr_predict_batched(kernel: Callable[[Tensor, Tensor], Tensor], x_s: Tensor, y_s: Tensor,
                        x_t: Tensor, reg: float = 1e-6, *, batch: int = 1024,
                        scale_by_trace: bool = True) -> Tensor:
    """Predictions for a large ``x_t`` streamed in batches (the support set is small)."""
    alpha = krr_solve(kernel(x_s, x_s), y_s, reg, scale_by_trace=scale_by_trace)
    return torch.cat([kernel(x_t[i:i + batch], x_s) @ alpha for i in range(0, x_t.shape[0], batch)])
