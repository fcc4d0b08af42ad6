"""The encoded layout of a table (``TableSchema``), for ``data/tabular.py``: numeric columns
standardized (plus a missing-value indicator where needed), categorical ones one-hot over their
categories (``<missing>`` explicit); encode, harden, decode back to records, the ordinal form
for tree models; ``schema_of`` reads it from a dataset's ``DataInfo.extra["schema"]``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import DataFormatError
from .base import DataInfo

MISSING = "<missing>"
MISSING_MARKERS = {"", "?", "na", "nan", "null", "none", "n/a"}


class UnknownCategoryError(DataFormatError):
    """A categorical value the schema (made from the data a summary was distilled on) lacks."""


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or \
        (isinstance(v, str) and v.strip().lower() in MISSING_MARKERS)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class TableSchema:
    """Columns (name, kind, categories / statistics) and the encoded layout; JSON-ready through
    ``to_dict`` / ``from_dict``."""

    def __init__(self, columns: list[dict[str, Any]], label: str, classes: list[str]):
        self.columns, self.label, self.classes = columns, label, list(classes)
        self.width = 0
        for c in self.columns:
            c["offset"] = self.width
            if c["kind"] == "numeric":
                self.width += 1 + int(c["missing"])
            else:
                self.width += len(c["categories"])

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: list[dict], every: list[dict], names: list[str], label: str,
            classes: list[str], categorical: set[str] | None = None) -> "TableSchema":
        """Column kinds from ``every`` row (numeric when every present value parses as a number,
        unless named in ``categorical``), categories from ``every`` row, statistics from ``train``."""
        cols = []
        for n in names:
            vals = [r.get(n) for r in every]
            present = [v for v in vals if not _is_missing(v)]
            numeric = (categorical is None or n not in categorical) and present and \
                all(_num(v) is not None for v in present)
            if numeric:
                tr = [_num(r.get(n)) for r in train if not _is_missing(r.get(n))]
                mean = sum(tr) / max(1, len(tr))
                var = sum((v - mean) ** 2 for v in tr) / max(1, len(tr))
                ints = all(float(_num(v)).is_integer() for v in present)
                cols.append({"name": n, "kind": "numeric", "mean": mean,
                             "std": math.sqrt(var) if var > 0 else 1.0, "integer": ints,
                             "missing": len(present) < len(vals),
                             "min": min(tr, default=0.0), "max": max(tr, default=0.0)})
            else:
                cats = sorted({str(v).strip() for v in present})
                if len(present) < len(vals):
                    cats.append(MISSING)
                cols.append({"name": n, "kind": "categorical", "categories": cats})
        return cls(cols, label, classes)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "classes": self.classes,
                "columns": [{k: v for k, v in c.items() if k != "offset"} for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TableSchema":
        return cls([dict(c) for c in d["columns"]], d["label"], d["classes"])

    def blocks(self) -> list[tuple[int, int]]:
        """(offset, size) of every categorical one-hot block."""
        return [(c["offset"], len(c["categories"])) for c in self.columns if c["kind"] == "categorical"]

    def numeric_index(self) -> list[int]:
        """Encoded positions that are free reals (numeric values and missing indicators)."""
        out = []
        for c in self.columns:
            if c["kind"] == "numeric":
                out += list(range(c["offset"], c["offset"] + 1 + int(c["missing"])))
        return out

    # -- encode / decode ----------------------------------------------------------------------
    def _category(self, c, v, where: str) -> int:
        key = MISSING if _is_missing(v) else str(v).strip()
        try:
            return c["categories"].index(key)
        except ValueError:
            shown = ", ".join(c["categories"][:12]) + (" ..." if len(c["categories"]) > 12 else "")
            raise UnknownCategoryError(
                f"{where}: unknown category {key!r} in column {c['name']!r}; the summary's schema "
                f"knows: {shown}. Evaluate on the table the summary was distilled from (or map "
                f"the value to a known category)") from None

    def encode(self, rows: list[dict], where: str = "table") -> torch.Tensor:
        x = torch.zeros(len(rows), self.width)
        for i, r in enumerate(rows):
            for c in self.columns:
                v, o = r.get(c["name"]), c["offset"]
                if c["kind"] == "numeric":
                    f = None if _is_missing(v) else _num(v)
                    if f is None and not _is_missing(v):
                        raise DataFormatError(f"{where}: row {i + 1}, column {c['name']!r}: "
                                              f"{v!r} is not a number")
                    if f is None:
                        if not c["missing"]:
                            raise UnknownCategoryError(
                                f"{where}: row {i + 1} has a missing {c['name']!r}, which the "
                                f"summary's schema has no missing-value indicator for")
                        x[i, o + 1] = 1.0
                    else:
                        x[i, o] = (f - c["mean"]) / c["std"]
                else:
                    x[i, o + self._category(c, v, where)] = 1.0
        return x

    def harden(self, x: torch.Tensor) -> torch.Tensor:
        """The encoded rows with every categorical block replaced by the one-hot of its arg-max
        and missing indicators rounded to 0/1 (a relaxed row -> a valid row)."""
        x = x.detach().clone()
        for c in self.columns:
            o = c["offset"]
            if c["kind"] == "categorical":
                k = len(c["categories"])
                idx = x[:, o:o + k].argmax(1)
                x[:, o:o + k] = 0.0
                x[torch.arange(len(x)), o + idx] = 1.0
            else:
                if "min" in c:  # within the training range (e.g. no negative capital gain)
                    lo, hi = ((c[k] - c["mean"]) / c["std"] for k in ("min", "max"))
                    x[:, o] = x[:, o].clamp(lo, hi)
                if c["integer"]:  # on the integer grid of the original units
                    x[:, o] = (torch.round(x[:, o] * c["std"] + c["mean"]) - c["mean"]) / c["std"]
                if c["missing"]:
                    miss = x[:, o + 1] > 0.5
                    x[:, o + 1] = miss.float()
                    x[miss, o] = 0.0
        return x

    def decode(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """Encoded (possibly relaxed) rows -> records in the original column names and types
        (a missing value is None)."""
        x = x.detach().float().cpu()
        out = []
        for row in x:
            r: dict[str, Any] = {}
            for c in self.columns:
                o = c["offset"]
                if c["kind"] == "numeric":
                    if c["missing"] and float(row[o + 1]) > 0.5:
                        r[c["name"]] = None
                        continue
                    v = float(row[o]) * c["std"] + c["mean"]
                    if "min" in c:
                        v = min(max(v, c["min"]), c["max"])
                    r[c["name"]] = int(round(v)) if c["integer"] else v
                else:
                    cat = c["categories"][int(row[o:o + len(c["categories"])].argmax())]
                    r[c["name"]] = None if cat == MISSING else cat
            out.append(r)
        return out

    def ordinal(self, rows: list[dict], where: str = "table"):
        """Rows as a float array for tree models: numeric values as they are (NaN when missing),
        categories as their index in the schema (NaN when missing); plus the categorical mask."""
        import numpy as np
        a = np.zeros((len(rows), len(self.columns)), dtype=np.float64)
        for i, r in enumerate(rows):
            for j, c in enumerate(self.columns):
                v = r.get(c["name"])
                if c["kind"] == "numeric":
                    a[i, j] = np.nan if _is_missing(v) else float(_num(v))
                else:
                    k = self._category(c, v, where)
                    a[i, j] = np.nan if c["categories"][k] == MISSING else k
        return a, np.array([c["kind"] == "categorical" for c in self.columns])

    def check_compatible(self, other: "TableSchema", where: str) -> None:
        """Refuse data whose columns differ from the summary's (same names, kinds, order)."""
        a = [(c["name"], c["kind"]) for c in self.columns]
        b = [(c["name"], c["kind"]) for c in other.columns]
        if a != b or self.classes != other.classes:
            raise DataFormatError(f"{where}: the data's columns/classes {b} / {other.classes} differ "
                                  f"from the summary's {a} / {self.classes}")


def schema_of(info: DataInfo) -> TableSchema:
    if "schema" not in info.extra:
        raise DataFormatError(f"{info.name} carries no table schema (not a tabular dataset)")
    return TableSchema.from_dict(info.extra["schema"])
