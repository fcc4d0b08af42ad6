"""Recommenders that fit on user rows and score other users from their context rows.

Every model has the same two calls: ``fit(rows, **hp)`` on a (real or synthetic) user x item
matrix, then ``scores(context)`` for any users' context rows. Item-space models therefore
transfer from fake users to real ones, which is how a summary is evaluated.

* ``inf-ae`` — ∞-AE (Sachdeva et al., NeurIPS'22): an autoencoder with one infinitely wide ReLU
  hidden layer, i.e. kernel ridge regression with its NTK from the user rows to themselves:
  ``scores(C) = K(C, X) (K(X, X) + λ tr(K)/n I)^{-1} X``; W_std² = 2, b_std = 0.1 as the
  reference's ``stax`` network. One hyper-parameter, λ, picked from the reference grid on
  validation. Shared pieces: ``kernels.fc_ntk`` and ``krr.krr_solve``.
* ``ease`` — EASE (Steck, WWW'19): ``B = I - P diag(1/diag P)``, ``P = (XᵀX + λI)^{-1}``.
* ``mf`` — implicit-feedback matrix factorization by alternating least squares (Hu, Koren &
  Volinsky, ICDM'08): confidence ``1 + α r_ui``, L2 ``λ``; new users are folded in by one
  user-side least-squares step on their context rows.
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..kernels.fc import fc_ntk
from ..kernels.krr import krr_predict, krr_solve
from ..registry import Registry

RECOMMENDERS: Registry = Registry("recommender")


class Recommender:
    name: ClassVar[str] = "base"
    deterministic: ClassVar[bool] = True
    #: hyper-parameter settings tried on validation (published grids where there is one)
    grid: ClassVar[list[dict[str, Any]]] = [{}]
    #: the setting used by the ``smoke`` protocol
    default: ClassVar[dict[str, Any]] = {}

    def fit(self, rows: Tensor, **hp: Any) -> "Recommender":
        raise NotImplementedError

    def scores(self, context: Tensor) -> Tensor:
        raise NotImplementedError


@RECOMMENDERS.register("inf-ae")
class InfiniteAE(Recommender):
    name = "inf-ae"
    grid = [{"reg": r} for r in (1e-5, 1e-3, 0.1, 1.0, 5.0, 50.0)]  # the reference's λ grid
    default = {"reg": 0.1}

    def __init__(self, *, depth: int = 1, w_var: float = 2.0, b_var: float = 0.01, seed: int = 0):
        self.depth, self.w_var, self.b_var = depth, w_var, b_var
        self._x = self._kss = self._ctx = self._kts = None

    def kernel(self, a: Tensor, b: Tensor) -> Tensor:
        return fc_ntk(a, b, depth=self.depth, w_var=self.w_var, b_var=self.b_var)

    def fit(self, rows: Tensor, *, reg: float = 0.1) -> "InfiniteAE":
        if rows is not self._x:  # the kernel is reused across the λ grid
            self._x, self._kss, self._ctx = rows, self.kernel(rows, rows), None
        self.alpha_ = krr_solve(self._kss, rows, reg, scale_by_trace=True)
        return self

    def scores(self, context: Tensor) -> Tensor:
        if context is not self._ctx:
            self._ctx, self._kts = context, self.kernel(context, self._x)
        return krr_predict(self._kts, self.alpha_)


@RECOMMENDERS.register("ease")
class EASE(Recommender):
    name = "ease"
    grid = [{"reg": r} for r in (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 3000.0)]
    default = {"reg": 250.0}

    def __init__(self, *, seed: int = 0):
        self._x = self._gram = None

    def fit(self, rows: Tensor, *, reg: float = 250.0) -> "EASE":
        if rows is not self._x:
            self._x, self._gram = rows, (rows.T.double() @ rows.double())
        g = self._gram.clone()
        g.diagonal().add_(reg)
        p = torch.linalg.inv(g)
        b = -p / torch.diagonal(p)[None, :]
        b.diagonal().zero_()
        self.weights_ = b.float()
        return self

    def scores(self, context: Tensor) -> Tensor:
        return context @ self.weights_


@RECOMMENDERS.register("mf")
class ImplicitMF(Recommender):
    name = "mf"
    deterministic = False
    grid = [{"reg": r, "alpha": a} for r in (1.0, 10.0, 100.0) for a in (2.0, 10.0)]
    default = {"reg": 10.0, "alpha": 10.0}

    def __init__(self, *, factors: int = 64, iterations: int = 15, seed: int = 0, chunk: int = 8192):
        self.factors, self.iterations, self.seed, self.chunk = factors, iterations, seed, chunk

    def _solve(self, r: Tensor, fixed: Tensor, reg: float, alpha: float) -> Tensor:
        """Rows of the other side: argmin_x sum_i (1 + α r_i)(1[r_i > 0] - x·y_i)² + λ|x|²."""
        k = fixed.shape[1]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            rs = r.to_sparse_csr()
        outer = (fixed[:, :, None] * fixed[:, None, :]).reshape(fixed.shape[0], k * k)
        a = torch.sparse.mm(rs, outer).reshape(-1, k, k) * alpha  # sum_i α r_i y_i y_iᵀ
        a += fixed.T @ fixed + reg * torch.eye(k)
        b = torch.sparse.mm(rs, fixed) * alpha + (r != 0).float() @ fixed  # sum_i (1 + α r_i) p_i y_i
        return torch.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)

    def fit(self, rows: Tensor, *, reg: float = 10.0, alpha: float = 10.0) -> "ImplicitMF":
        gen = torch.Generator().manual_seed(self.seed)
        n, m = rows.shape
        items = torch.randn(m, self.factors, generator=gen) * 0.01
        users = torch.zeros(n, self.factors)
        for _ in range(self.iterations):
            users = self._solve(rows, items, reg, alpha)
            items = self._solve(rows.T.contiguous(), users, reg, alpha)
        self.items_, self.reg_, self.alpha_ = items, reg, alpha
        return self

    def scores(self, context: Tensor) -> Tensor:
        return self._solve(context, self.items_, self.reg_, self.alpha_) @ self.items_.T


def create_recommender(name: str, **kw) -> Recommender:
    return RECOMMENDERS.create(name, **kw)


__all__ = ["RECOMMENDERS", "Recommender", "InfiniteAE", "EASE", "ImplicitMF", "create_recommender"]
