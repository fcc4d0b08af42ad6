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
    """Distill-CF's summary: the prior ``Ω`` (``logits``) and the rows ``R_syn`` drawn from it.

    Compact storage (optional; layout in ``synsets.compact_users``): ``compact={"topk": k,
    "dtype": "uint8"}`` (or ``set_compact``, or the run parameter ``storage`` = float16 /
    bfloat16 / uint8, which keeps every non-zero) stores ``R_syn`` as its ``topk`` largest entries
    per user, quantized. It is quantization-aware: every draw (``sample``, ``sample_mean``,
    ``sample_expected``) returns the stored values (straight-through gradient to the float draw),
    ``set_rows`` keeps the stored values, ``stored_bytes`` counts the compact layout, and ``save``
    writes the ``topk-users`` summary (without ``Ω``: a run's checkpoint keeps ``Ω`` to resume)."""

    kind = "gumbel-users"

    def __init__(self, info, *, users: int, label_format: str = "regression", lr: float | None = None,
                 compact: dict | None = None):
        super().__init__(info, users=users, label_format=label_format, lr=lr)
        self.logits = nn.Parameter(torch.zeros(users, int(info.shape[0])))
        self.compact = None
        if compact is not None:
            self.set_compact(**compact)

    def set_compact(self, *, topk: int | None = None, dtype: str = "float16") -> "GumbelUserSet":
        """Keep ``R_syn`` as its ``topk`` largest entries per user (None: every non-zero) with
        ``dtype`` values from now on (the current rows are compacted too)."""
        from ..compact import VALUE_DTYPES, check_dtype
        from .compact_users import check_topk

        self.compact = {"topk": check_topk(topk), "dtype": check_dtype(dtype, VALUE_DTYPES)}
        self.set_rows(self.rows)
        return self

    def set_storage(self, storage) -> "GumbelUserSet":
        """The run parameter ``storage`` (``Distiller.storage``), a precision: float16 / bfloat16
        / uint8 (uint8-channel: the same, the ranges are per user anyway) keep the rows in the
        compact layout at that precision, with the top-k of ``compact`` if set (else every
        non-zero); float32 leaves dense rows dense."""
        from .storage import Storage

        st = Storage.parse(storage)
        topk = self.compact["topk"] if self.compact else None
        if st.exact and self.compact is None:
            return self
        return self.set_compact(topk=topk, dtype="uint8" if st.name.startswith("uint8") else st.name)

    def config(self):
        return {**super().config(), **({"compact": dict(self.compact)} if self.compact else {})}

    def stored_view(self, rows: Tensor) -> Tensor:
        """``rows`` as the compact layout stores them (straight-through gradient); ``rows`` as
        they are without compact storage."""
        if self.compact is None:
            return rows
        from .compact_users import decode_rows, encode_rows

        with torch.no_grad():
            layout = encode_rows(rows, **self.compact)
            stored = decode_rows(layout, self.users_, int(self.info.shape[0]), self.compact["dtype"])
        return stored.to(rows.device, rows.dtype) + (rows - rows.detach())

    def to_compact(self):
        """The ``topk-users`` summary of the current rows (with this summary's metadata)."""
        if self.compact is None:
            raise ValueError("this summary has no compact storage; use datadistill.compact.compact")
        from .compact_users import CompactUserSet

        out = CompactUserSet.from_rows(self.info, self.rows, label_format=self.label_format,
                                       **self.compact)
        out.meta = {**self.meta, "compact": out.config()}
        out.preprocess = dict(self.preprocess)
        return out

    def stored_bytes(self) -> int:
        if self.compact is None:
            return super().stored_bytes()
        from .compact_users import encode_rows, layout_bytes

        return layout_bytes(encode_rows(self.rows, **self.compact))

    def save(self, path):
        if self.compact is None:
            return super().save(path)
        return self.to_compact().save(path)

    def sample(self, generator: torch.Generator, *, samples: int, tau: float, hard: bool,
               chunk_elements: int = 1 << 23) -> Tensor:
        """A differentiable draw of ``R_syn`` from ``Ω`` (see the module docstring)."""
        if samples < 1 or tau <= 0:
            raise ValueError(f"need samples >= 1 and tau > 0, got {samples}, {tau}")
        chunk = max(1, chunk_elements // self.logits.numel())
        soft, counts = _MultiGumbel.apply(self.logits, float(tau), int(samples), generator, chunk)
        soft = soft.clamp(max=1.0)  # the reference's hard_tanh (the sum is >= 0)
        if not hard:
            return self.stored_view(soft)
        # straight-through: exact 0/1
        return self.stored_view((counts > 0).to(soft.dtype) + (soft - soft.detach()))

    def sample_expected(self, generator: torch.Generator, *, samples: int) -> Tensor:
        """The binary union of ``samples`` categorical draws from softmax(Ω) (what the hard
        Gumbel-max sample is, in distribution), with the gradient of its expectation
        ``1 - (1 - softmax(Ω))^γ`` (straight-through on the mean: one pass, no γ-fold noise)."""
        p = torch.softmax(self.logits, -1)
        with torch.no_grad():
            draws = torch.multinomial(p.detach().cpu(), samples, replacement=True, generator=generator)
            hard = torch.zeros_like(p).scatter_(1, draws.to(p.device), 1.0)
        expected = 1 - (1 - p).pow(samples)
        return self.stored_view(hard + (expected - expected.detach()))

    def sample_mean(self, *, samples: int, tau: float) -> Tensor:
        """The expectation of the soft multi-Gumbel sample, ``clip(γ softmax(Ω/τ), 0, 1)``
        (deterministic, one pass). At the published τ = 10 a Gumbel draw moves Ω/τ by noise of
        std 0.13, the softmax denominators over thousands of items barely move, and the soft sum
        of γ = 200 draws is this mean within ~1 % per entry."""
        if samples < 1 or tau <= 0:
            raise ValueError(f"need samples >= 1 and tau > 0, got {samples}, {tau}")
        return self.stored_view((samples * torch.softmax(self.logits / tau, -1)).clamp(max=1.0))

    @torch.no_grad()
    def set_rows(self, rows: Tensor) -> None:
        self.rows.copy_(self.stored_view(rows.detach()))

