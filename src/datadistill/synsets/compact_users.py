"""A recommender summary stored sparsely: the ``topk`` largest entries of each (fake) user's row.

``CompactUserSet`` (kind ``topk-users``) holds, in CSR order (users, then items ascending):

* ``counts`` [users]   — kept entries per user, smallest integer type holding ``topk``;
* ``indices`` [nnz]    — item ids, smallest integer type holding the item count (int16 for
  MovieTweetings' 2,414 items);
* ``values`` [nnz]     — ``float32``, ``float16``, ``bfloat16``, ``uint8`` (affine per user:
  ``ranges`` [users, 2] float32 holds each user's (lo, hi)) or nothing for ``binary`` (every kept
  entry is 1).

With ``topk=None`` (every non-zero kept) and rows so dense that the sparse form would be larger
(soft Distill-CF rows: every entry > 0), the layout is dense instead: no ``counts`` or
``indices``, ``values`` holds every entry (row-major). ``materialize()`` returns the dense rows
the evaluator needs (``(R, R)``: the rows are their own targets), the stored values scattered into
zeros; ``stored_bytes()`` is the sum of the stored tensors. Built from any recommender summary by
``datadistill.compact.compact`` (or ``CompactUserSet.from_rows``); a Distill-CF summary
(``gumbel-users``) can also be distilled in this form (``compact=`` / ``set_compact``, or the
run parameter ``storage``; see ``synsets.users``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..compact import VALUE_DTYPES, check_dtype, dequantize, index_dtype, nbytes, quantize
from ..errors import ConfigError
from .base import SYNSETS, SyntheticSet

_VALUE_TYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "uint8": torch.uint8, "binary": torch.uint8}
_LAYOUT = ("counts", "indices", "values", "ranges")


def check_topk(topk, items: int | None = None) -> int | None:
    if topk is None:
        return None
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"topk must be a positive integer (or None: every non-zero), got {topk!r}")
    return topk if items is None else min(topk, items)


def encode_rows(rows: Tensor, topk: int | None, dtype: str) -> dict[str, Tensor]:
    """The stored layout of ``rows`` [users, items] keeping each row's ``topk`` largest non-zero
    entries (all non-zeros for ``None``: then dense when that is smaller), values as ``dtype``."""
    check_dtype(dtype, VALUE_DTYPES)
    rows = rows.detach().float().cpu()
    users, items = rows.shape
    k = check_topk(topk, items)
    keep = rows != 0
    if k is not None and k < items:
        keep &= torch.zeros_like(keep).scatter_(1, rows.topk(k, dim=1).indices, True)
    cap = (k if k is not None else items) + 1
    nnz = int(keep.sum())
    if k is None and dtype != "binary":
        per_value = torch.empty((), dtype=_VALUE_TYPES[dtype]).element_size()
        sparse = nnz * (per_value + torch.empty((), dtype=index_dtype(items)).element_size()) \
            + users * torch.empty((), dtype=index_dtype(cap)).element_size()
        if users * items * per_value <= sparse:  # dense layout: every entry, row-major
            values, ranges = quantize(rows, dtype)
            return {"counts": torch.zeros(0, dtype=index_dtype(cap)),
                    "indices": torch.zeros(0, dtype=index_dtype(items)),
                    "values": values.reshape(-1), "ranges": ranges}
    user, item = keep.nonzero(as_tuple=True)  # row-major: CSR order
    values, ranges = quantize(rows[user, item], dtype, segments=user, num_segments=users)
    return {"counts": keep.sum(1).to(index_dtype(cap)), "indices": item.to(index_dtype(items)),
            "values": values, "ranges": ranges}


def decode_rows(layout: dict[str, Tensor], users: int, items: int, dtype: str) -> Tensor:
    """The dense float32 rows [users, items] a layout stores."""
    if layout["counts"].numel() == 0:  # dense layout
        return dequantize(layout["values"].reshape(users, items), dtype, layout["ranges"])
    counts = layout["counts"].long()
    dev = counts.device
    user = torch.arange(users, device=dev).repeat_interleave(counts)
    vals = dequantize(layout["values"], dtype, layout["ranges"], count=int(user.numel()),
                      segments=user)
    rows = torch.zeros(users, items, device=dev)
    rows[user, layout["indices"].long()] = vals
    return rows


def layout_bytes(layout: dict[str, Tensor]) -> int:
    return nbytes(*layout.values())


@SYNSETS.register("topk-users")
class CompactUserSet(SyntheticSet):
    kind = "topk-users"

    def __init__(self, info, *, users: int, topk: int | None = None, dtype: str = "float16",
                 label_format: str = "regression", lr: float | None = None):
        super().__init__(info, label_format=label_format, lr=lr)
        if info.modality != "recsys":
            raise ValueError(f"{self.kind} summaries are for recommender data, not {info.modality!r}")
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        items = int(info.shape[0])
        self.users_, self.items_ = int(users), items
        self.topk = check_topk(topk)
        self.dtype = check_dtype(dtype, VALUE_DTYPES)
        cap = (min(self.topk, items) if self.topk is not None else items) + 1
        self.register_buffer("counts", torch.zeros(users, dtype=index_dtype(cap)))
        self.register_buffer("indices", torch.zeros(0, dtype=index_dtype(items)))
        self.register_buffer("values", torch.zeros(0, dtype=_VALUE_TYPES[dtype]))
        self.register_buffer("ranges", torch.zeros(users if dtype == "uint8" else 0, 2))
        # the materialized rows: rebuilt from the layout, never saved
        self.register_buffer("rows", torch.zeros(users, items), persistent=False)

    @classmethod
    def from_rows(cls, info, rows: Tensor, *, topk: int | None = None, dtype: str = "float16",
                  label_format: str = "regression") -> "CompactUserSet":
        syn = cls(info, users=int(rows.shape[0]), topk=topk, dtype=dtype, label_format=label_format)
        syn.set_rows(rows)
        return syn

    def config(self):
        return {"users": self.users_, "topk": self.topk, "dtype": self.dtype}

    @torch.no_grad()
    def set_rows(self, rows: Tensor) -> None:
        """Store ``rows`` [users, items] in the layout (top-k, quantized)."""
        if tuple(rows.shape) != (self.users_, self.items_):
            raise ValueError(f"rows must be [{self.users_}, {self.items_}], got {tuple(rows.shape)}")
        dev = self.rows.device
        for k, v in encode_rows(rows, self.topk, self.dtype).items():
            setattr(self, k, v.to(dev))
        self._decode()

    def _decode(self) -> None:
        self.rows = decode_rows({k: getattr(self, k) for k in _LAYOUT}, self.users_, self.items_,
                                self.dtype).to(self.rows.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        for k in _LAYOUT:  # their length is the number of kept entries (or the layout's)
            if prefix + k in state_dict:
                cur = getattr(self, k)
                setattr(self, k, torch.empty(state_dict[prefix + k].shape, dtype=cur.dtype,
                                             device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        self._decode()

    def materialize(self) -> tuple[Tensor, Tensor]:
        return self.rows, self.rows

    @property
    def class_ids(self) -> Tensor:
        return torch.zeros(self.users_, dtype=torch.long, device=self.rows.device)

    @property
    def nnz(self) -> int:
        """Stored entries (every entry in the dense layout)."""
        return int(self.indices.numel()) if self.counts.numel() else self.users_ * self.items_

    @property
    def layout(self) -> str:
        return "sparse" if self.counts.numel() else "dense"

    def bytes_breakdown(self) -> dict[str, int]:
        parts = {k: nbytes(getattr(self, k)) for k in _LAYOUT}
        if self.lr is not None:
            parts["lr"] = nbytes(self.lr)
        return {**parts, "total": sum(parts.values())}

    def stored_bytes(self) -> int:
        """Bytes of the sparse layout: counts + indices + values (+ per-user ranges for uint8)."""
        return self.bytes_breakdown()["total"]

    def extra_repr(self) -> str:
        return (f"{self.info.name}, {self.users_} users x {self.items_} items, top-k "
                f"{self.topk if self.topk is not None else 'all'}, {self.dtype}, {self.layout} layout, "
                f"{self.nnz} entries, {self.stored_bytes()} B")
