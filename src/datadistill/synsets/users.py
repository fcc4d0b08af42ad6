"""Recommender summaries: a small matrix of (fake) user rows over the real item space.

``UserRowSet`` stores rows ``R_syn`` [users, items] (binary for subsets of real users and for
hard Gumbel samples). ``GumbelUserSet`` (Distill-CF) adds the learnable prior ``Ω`` (logits
[users, items]) from which ``R_syn`` is drawn by multi-step Gumbel sampling:

    R_syn = clip( sum_{s=1..γ} softmax((Ω + g_s) / τ), 0, 1 ),   g_s ~ Gumbel(0, 1)   (soft)
    R_syn = 1[ item i is the argmax of Ω_u + g_s for some s ]                            (hard)

The soft form is the reference code's (a relaxed sample, values in [0, 1]); the hard form keeps
the summary binary, with the soft form's gradient (straight-through). ``sample_expected`` is a
cheaper estimator (not the paper's): the same binary sample drawn directly, with the gradient of
its expectation 1 - (1 - softmax Ω)^γ. ``materialize()`` returns
``(R_syn, R_syn)``: an autoencoder recommender reconstructs its input rows.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import SYNSETS, SyntheticSet


@SYNSETS.register("user-rows")
class UserRowSet(SyntheticSet):
    kind = "user-rows"

    def __init__(self, info, *, users: int, label_format: str = "regression", lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if info.modality != "recsys":
            raise ValueError(f"{self.kind} summaries are for recommender data, not {info.modality!r}")
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        self.users_ = int(users)
        self.register_buffer("rows", torch.zeros(users, int(info.shape[0])))

    def config(self):
        return {"users": self.users_}

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.rows, self.rows

    @property
    def class_ids(self) -> Tensor:
        return torch.zeros(self.users_, dtype=torch.long, device=self.rows.device)

    @property
    def binary(self) -> bool:
        return bool(((self.rows == 0) | (self.rows == 1)).all())

    def stored_bytes(self) -> int:
        """Bytes of ``R_syn`` as a CSR matrix (int32 column indices + row pointers; float32
        values only when the rows are not binary), or as a dense float32 matrix when that is
        smaller (soft Distill-CF rows are dense). A Distill-CF folder also keeps the prior ``Ω``
        to continue distilling, which is not needed to use the summary."""
        nnz = int((self.rows != 0).sum())
        csr = 4 * (nnz + self.users_ + 1) + (0 if self.binary else 4 * nnz)
        return csr if self.binary else min(csr, 4 * self.rows.numel())

    def extra_repr(self) -> str:
        return (f"{self.info.name}, {self.users_} users x {self.info.shape[0]} items, "
                f"{int((self.rows != 0).sum())} interactions, binary={self.binary}")


class _MultiGumbel(torch.autograd.Function):
    """sum_s softmax((Ω + g_s)/τ) and the hard counts, with the Gumbel noise regenerated from the
    generator state in backward (the reference's scan + custom VJP: memory O(users x items))."""

    @staticmethod
    def forward(ctx, logits, tau, samples, generator, chunk):
        state = generator.get_state()
        soft, counts = torch.zeros_like(logits), torch.zeros_like(logits)
        for z in _noisy_logits(logits, tau, samples, generator, chunk):
            soft += torch.softmax(z, -1).sum(0)
            counts.scatter_add_(1, z.argmax(-1).T, torch.ones(z.shape[1], z.shape[0], device=z.device, dtype=z.dtype))
        ctx.save_for_backward(logits)
        ctx.tau, ctx.samples, ctx.state, ctx.chunk = tau, samples, state, chunk
        ctx.mark_non_differentiable(counts)
        return soft, counts

    @staticmethod
    def backward(ctx, grad_soft, _grad_counts):
        (logits,) = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        gen = torch.Generator()
        gen.set_state(ctx.state)
        for z in _noisy_logits(logits, ctx.tau, ctx.samples, gen, ctx.chunk):
            p = torch.softmax(z, -1)
            grad += (p * (grad_soft[None] - (p * grad_soft[None]).sum(-1, keepdim=True))).sum(0)
        return grad / ctx.tau, None, None, None, None


def _noisy_logits(logits: Tensor, tau: float, samples: int, gen: torch.Generator, chunk: int):
    """Yield (Ω + g)/τ for ``samples`` Gumbel draws, ``chunk`` at a time, drawn from ``gen``."""
    done = 0
    while done < samples:
        c = min(chunk, samples - done)
        # -log(-log U) ~ Gumbel(0, 1); U drawn on CPU (device-independent results), clamped off 0
        e = torch.rand(c, *logits.shape, generator=gen).clamp_min_(1e-12).log_().neg_()
        yield (logits[None] - e.log_().to(device=logits.device, dtype=logits.dtype)) / tau
        done += c


@SYNSETS.register("gumbel-users")
class GumbelUserSet(UserRowSet):
    kind = "gumbel-users"

    def __init__(self, info, *, users: int, label_format: str = "regression", lr: float | None = None):
        super().__init__(info, users=users, label_format=label_format, lr=lr)
        self.logits = nn.Parameter(torch.zeros(users, int(info.shape[0])))

    def sample(self, generator: torch.Generator, *, samples: int, tau: float, hard: bool,
               chunk_elements: int = 1 << 23) -> Tensor:
        """A differentiable draw of ``R_syn`` from ``Ω`` (see the module docstring)."""
        if samples < 1 or tau <= 0:
            raise ValueError(f"need samples >= 1 and tau > 0, got {samples}, {tau}")
        chunk = max(1, chunk_elements // self.logits.numel())
        soft, counts = _MultiGumbel.apply(self.logits, float(tau), int(samples), generator, chunk)
        soft = soft.clamp(max=1.0)  # the reference's hard_tanh (the sum is >= 0)
        if not hard:
            return soft
        return (counts > 0).to(soft.dtype) + (soft - soft.detach())  # straight-through: exact 0/1

    def sample_expected(self, generator: torch.Generator, *, samples: int) -> Tensor:
        """The binary union of ``samples`` categorical draws from softmax(Ω) (what the hard
        Gumbel-max sample is, in distribution), with the gradient of its expectation
        ``1 - (1 - softmax(Ω))^γ`` (straight-through on the mean: one pass, no γ-fold noise)."""
        p = torch.softmax(self.logits, -1)
        with torch.no_grad():
            draws = torch.multinomial(p.detach().cpu(), samples, replacement=True, generator=generator)
            hard = torch.zeros_like(p).scatter_(1, draws.to(p.device), 1.0)
        expected = 1 - (1 - p).pow(samples)
        return hard + (expected - expected.detach())

    def sample_mean(self, *, samples: int, tau: float) -> Tensor:
        """The expectation of the soft multi-Gumbel sample, ``clip(γ softmax(Ω/τ), 0, 1)``
        (deterministic, one pass). At the published τ = 10 a Gumbel draw moves Ω/τ by noise of
        std 0.13, the softmax denominators over thousands of items barely move, and the soft sum
        of γ = 200 draws is this mean within ~1 % per entry."""
        if samples < 1 or tau <= 0:
            raise ValueError(f"need samples >= 1 and tau > 0, got {samples}, {tau}")
        return (samples * torch.softmax(self.logits / tau, -1)).clamp(max=1.0)

    @torch.no_grad()
    def set_rows(self, rows: Tensor) -> None:
        self.rows.copy_(rows.detach())

