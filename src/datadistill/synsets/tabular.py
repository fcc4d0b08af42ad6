"""Tabular summaries: rows in the encoded space with relaxed categorical columns.

Each synthetic row stores its free values (standardized numeric columns and their missing
indicators) and one vector of logits per categorical column. ``materialize`` returns rows in the
same encoded layout as the real data (``data/tabular_schema.py``'s ``TableSchema``), with every
categorical block relaxed to ``softmax(logits / temperature)``, so any objective (DM, gradient
matching, unrolled meta-model matching) differentiates through them. For export and evaluation
``decode`` hardens each block to its arg-max category (``TableSchema.harden``/``decode``):
every exported row is a valid row of the table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SYNSETS, SyntheticSet


@SYNSETS.register("tabular")
class TabularSet(SyntheticSet):
    kind = "tabular"

    def __init__(self, info, *, ipc: int, label_format: str = "hard", lr: float | None = None,
                 temperature: float = 1.0):
        super().__init__(info, label_format=label_format, lr=lr)
        from ..data.tabular import schema_of
        if ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {ipc}")
        self.schema_ = schema_of(info)
        k, n = info.num_classes, info.num_classes * ipc
        self.ipc_, self.temperature = int(ipc), float(temperature)
        self.register_buffer("num_index", torch.tensor(self.schema_.numeric_index(), dtype=torch.long))
        self.values = nn.Parameter(torch.zeros(n, len(self.num_index)))
        self.logits = nn.ParameterList(nn.Parameter(torch.zeros(n, size))
                                       for _, size in self.schema_.blocks())
        self.register_buffer("labels", torch.arange(k).repeat_interleave(ipc))
        self.y = nn.Parameter(F.one_hot(self.labels, k).float()) if label_format != "hard" else None

    def config(self):
        return {"ipc": self.ipc_, "temperature": self.temperature}

    def materialize(self) -> tuple[Tensor, Tensor]:
        n = self.values.shape[0]
        x = self.values.new_zeros(n, self.schema_.width)
        x = x.index_copy(1, self.num_index, self.values)
        for (off, size), lg in zip(self.schema_.blocks(), self.logits):
            idx = torch.arange(off, off + size, device=x.device)
            x = x.index_copy(1, idx, torch.softmax(lg / self.temperature, dim=1))
        return x, (self.labels if self.y is None else self.y)

    @property
    def class_ids(self) -> Tensor:
        return self.labels

    def class_slice(self, c: int) -> slice:
        return slice(c * self.ipc_, (c + 1) * self.ipc_)

    @torch.no_grad()
    def set_rows(self, sl: slice, x: Tensor, sharpness: float = 4.0) -> None:
        """Fill rows ``sl`` from encoded rows ``x``: free values copied, each categorical block's
        logits ``sharpness`` x its one-hot (softmax ~0.9+ on the row's category)."""
        x = x.to(self.values.device)
        self.values[sl] = x[:, self.num_index]
        for (off, size), lg in zip(self.schema_.blocks(), self.logits):
            lg[sl] = sharpness * x[:, off:off + size]

    @torch.no_grad()
    def init_data(self, real, init: str, generator: torch.Generator) -> None:
        for c in range(self.info.num_classes):
            sl = self.class_slice(c)
            n = sl.stop - sl.start
            if init == "real":
                self.set_rows(sl, real.sample_class(c, n, generator))
            else:
                self.values[sl] = torch.randn(n, self.values.shape[1], generator=generator)
                for lg in self.logits:
                    lg[sl] = torch.randn(n, lg.shape[1], generator=generator)

    def decode(self) -> list[dict]:
        """The summary as records in the original column names and types (+ the label)."""
        x, _ = self.materialize()
        rows = self.schema_.decode(x)
        names = self.info.class_names
        for r, c in zip(rows, self.labels.tolist()):
            r[self.schema_.label] = names[c] if names else c
        return rows


def decode_rows(syn) -> list[dict]:
    """Any summary of a table (a ``TabularSet``, or pixels in the encoded space) as valid
    records in the original column names and types, with the label column."""
    from ..data.tabular import schema_of

    schema = schema_of(syn.info)
    x, y = syn.materialize()
    rows = schema.decode(schema.harden(x))
    ids = (y if y.dim() == 1 else y.argmax(1)).tolist()
    for r, c in zip(rows, ids):
        r[schema.label] = schema.classes[c]
    return rows


def write_csv(syn, path) -> str:
    """The decoded summary as a CSV (original column names; a missing value is empty)."""
    import csv
    from pathlib import Path

    rows = decode_rows(syn)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                        for k, v in r.items()})
    return str(path)
