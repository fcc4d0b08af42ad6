"""Storage precision of a summary: the bytes on disk as a budget lever (survey §2.5).

A summary's data tensors (every floating-point parameter but the learned step size ``lr``, and
every floating-point buffer but batch-norm statistics) can be stored at

- ``float32`` (the default: nothing changes),
- ``float16`` / ``bfloat16`` (2 bytes a number),
- ``uint8`` (1 byte a number, plus one affine range ``(lo, hi)`` per tensor: 8 bytes), or
  ``uint8-channel`` (one range per slice along the first dimension — per stored example for
  pixels and codes, per output channel for decoder weights; 1-D tensors keep one range).

It is quantization-aware: ``materialize()`` returns the values that are stored. While a summary is
distilled its parameters stay float32 ("latent" values the optimizer steps); every
``materialize()`` sees them fake-quantized, with a straight-through gradient (the rounding is the
identity for the gradient), so what is optimized is what is saved. ``save`` writes the
low-precision tensors (uint8 codes with their ranges), ``load`` restores the latent values as the
decoded stored values, and ``stored_bytes()`` counts at the stored precision, ranges included.

uint8 decoding is ``torch.lerp(lo, hi, code / 255)``: exactly ``lo`` at code 0 and ``hi`` at code
255, so decoding, re-quantizing and decoding again gives the same numbers bit for bit (the range
recomputed from decoded values is the stored range). The codes are ``round((t - lo) / (hi - lo) *
255)``; a constant tensor stores ``lo = hi`` and codes 0.

Integer tensors (hard labels, indices) are stored at the smallest integer dtype that holds their
values (``uint8`` for fewer than 256 classes) at every precision, and restored to their dtype.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

#: accepted spellings -> canonical storage names
ALIASES = {"float32": "float32", "fp32": "float32", "f32": "float32",
           "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16",
           "uint8": "uint8", "u8": "uint8",
           "uint8-channel": "uint8-channel", "uint8:channel": "uint8-channel"}
STORAGES = ("float32", "float16", "bfloat16", "uint8", "uint8-channel")
_FLOAT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: safetensors key prefixes of the uint8 ranges
LO, HI = "q.lo.", "q.hi."
_BN_STATS = ("running_mean", "running_var")


@dataclasses.dataclass(frozen=True)
class Storage:
    """A storage precision (``Storage.parse("uint8")``)."""

    name: str = "float32"

    @staticmethod
    def parse(spec: "str | Storage | None") -> "Storage":
        if spec is None:
            return Storage()
        if isinstance(spec, Storage):
            return spec
        key = str(spec).strip().lower()
        if key not in ALIASES:
            raise ValueError(f"unknown storage {spec!r}; known: {', '.join(STORAGES)} "
                             f"(also fp32, fp16, bf16)")
        return Storage(ALIASES[key])

    @property
    def exact(self) -> bool:
        """float32: the values are stored as they are (no quantization)."""
        return self.name == "float32"

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8 if self.name.startswith("uint8") else _FLOAT[self.name]

    @property
    def per_channel(self) -> bool:
        return self.name == "uint8-channel"

    def bytes_per_number(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    # -- uint8 ranges -----------------------------------------------------------------------------
    def _reduce_dims(self, t: Tensor) -> tuple[int, ...]:
        if self.per_channel and t.dim() >= 2:
            return tuple(range(1, t.dim()))
        return tuple(range(t.dim()))

    def _range(self, t: Tensor) -> tuple[Tensor, Tensor]:
        dims = self._reduce_dims(t)
        if t.dim() == 0:
            return t.reshape(()), t.reshape(())
        return t.amin(dim=dims, keepdim=True), t.amax(dim=dims, keepdim=True)

    def num_ranges(self, t: Tensor) -> int:
        """uint8: how many (lo, hi) pairs a tensor of this shape stores."""
        if not self.name.startswith("uint8"):
            return 0
        return int(t.shape[0]) if self.per_channel and t.dim() >= 2 else 1

    # -- the quantizer --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, t: Tensor) -> dict[str, Tensor]:
        """The stored form of float tensor ``t``: ``{"": values}`` at this precision, plus for
        uint8 ``{"lo": ..., "hi": ...}`` (float32, keepdim shape)."""
        if not self.name.startswith("uint8"):
            return {"": t.detach().to(self.dtype)}
        t = t.detach().float()
        lo, hi = self._range(t)
        span = hi - lo
        scale = torch.where(span > 0, 255.0 / torch.where(span > 0, span, torch.ones_like(span)),
                            torch.zeros_like(span))
        codes = torch.round((t - lo) * scale).clamp_(0, 255).to(torch.uint8)
        return {"": codes, "lo": lo, "hi": hi}

    @staticmethod
    def decode(stored: dict[str, Tensor]) -> Tensor:
        """float32 values of a stored tensor (the inverse of ``encode`` up to the rounding)."""
        v = stored[""]
        if v.dtype != torch.uint8:
            return v.float()
        lo, hi = stored["lo"].float(), stored["hi"].float()
        return torch.lerp(lo, hi, v.float() / 255.0)

    def quantize(self, t: Tensor) -> Tensor:
        """The stored values of ``t`` (float32, no gradient)."""
        if self.exact:
            return t.detach()
        return self.decode(self.encode(t)).to(t.dtype)

    def fake_quantize(self, t: Tensor) -> Tensor:
        """``t`` with its stored values and a straight-through gradient (d/dt = identity)."""
        if self.exact:
            return t
        q = self.quantize(t)
        return q + (t - t.detach())  # value: exactly q; gradient: flows to t unchanged


def is_stored_float(name: str, t: Tensor, *, is_param: bool) -> bool:
    """Whether a state tensor is data stored at the summary's precision: floating-point, not the
    learned step size, not batch-norm statistics."""
    if not t.is_floating_point():
        return False
    if is_param:
        return name != "lr"
    return name.rsplit(".", 1)[-1] not in _BN_STATS


def smallest_int_dtype(t: Tensor) -> torch.dtype:
    """The smallest integer dtype that holds every value of integer tensor ``t``."""
    if t.dtype == torch.bool or t.numel() == 0:
        return t.dtype
    lo, hi = int(t.min()), int(t.max())
    for dt in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    return t.dtype
