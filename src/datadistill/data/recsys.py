"""Implicit-feedback recommender data: a sparse user x item matrix with per-user held-out items.

Every (user, item) pair is a positive (ratings are kept only to filter with ``min_rating``).
Preprocessing, in order: optional rating threshold, de-duplication, an iterative k-core filter
(users and items with >= ``k_core`` interactions, repeated until stable), then a per-user split:

* ``holdout="random"`` (the ∞-AE/Distill-CF protocol): each user's interactions are shuffled
  with ``split_seed``; ``test_fraction`` of them (at least one) are held out for testing and
  ``val_fraction`` (at least one, when the user has >= 3) for validation; the rest train.
* ``holdout="last"`` (leave-last-out, needs timestamps): the latest interaction is the test
  item, the one before it the validation item.

Prediction for validation uses the training rows as context; prediction for testing uses
training + validation rows (as the reference code). Items a user already has in the context are
excluded from the ranking. Registered loaders: ``movietweetings`` (the MIT-licensed 100K snapshot,
5-core by default), ``movielens-100k``, ``movielens-1m`` (downloaded from GroupLens, verified by
MD5), and any ``.csv``/``.tsv`` of (user, item[, rating[, timestamp]]) rows via
``load_dataset(path)`` / ``load_interactions_csv``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .base import DATASETS, DataFormatError, DataInfo, DatasetNotFoundError
from .files import fetch, find_files

HOLDOUTS = ("random", "last")


@dataclass
class Interactions:
    """Raw interaction log: parallel arrays of user ids, item ids, ratings and timestamps."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.users)
        for k in ("items", "ratings", "timestamps"):
            v = getattr(self, k)
            if v is not None and len(v) != n:
                raise DataFormatError(f"{n} users but {len(v)} {k}")

    def select(self, mask: np.ndarray) -> "Interactions":
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Interactions(self.users[mask], self.items[mask], pick(self.ratings), pick(self.timestamps))


class RecsysData:
    """A recommender dataset: ``train`` / ``val`` / ``test`` CSR matrices [users, items] (0/1).

    ``info.shape == (num_items,)``; ``info.num_classes == 1`` (users are not classed, so a
    summary's "examples per class" is its number of users). ``item_ids``/``user_ids`` hold the
    original ids of the matrix columns/rows.
    """

    zca = None

    def __init__(self, info: DataInfo, train: sp.csr_matrix, val: sp.csr_matrix, test: sp.csr_matrix,
                 user_ids: np.ndarray, item_ids: np.ndarray):
        shapes = {m.shape for m in (train, val, test)}
        if len(shapes) != 1:
            raise DataFormatError(f"split shapes differ: {shapes}")
        self.info, self.train, self.val, self.test = info, train, val, test
        self.user_ids, self.item_ids = user_ids, item_ids
        self._dense: dict[str, Tensor] = {}

    @property
    def num_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.train.shape[1])

    def split(self, name: str) -> sp.csr_matrix:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; known: train, val, test")
        return getattr(self, name)

    def context(self, split: str) -> sp.csr_matrix:
        """What the recommender sees when predicting ``split``: train rows for validation,
        train + validation rows for testing."""
        if split == "val":
            return self.train
        if split == "test":
            return (self.train + self.val).tocsr()
        raise ValueError(f"no held-out split {split!r}; use 'val' or 'test'")

    def dense(self, name: str = "train") -> Tensor:
        """A split (or ``"test-context"``) as a dense float tensor (cached)."""
        if name not in self._dense:
            m = self.context("test") if name == "test-context" else self.split(name)
            self._dense[name] = to_dense(m)
        return self._dense[name]

    def sample_users(self, n: int, generator: torch.Generator) -> Tensor:
        """Indices of ``n`` distinct random users that have training interactions."""
        active = torch.from_numpy(np.flatnonzero(self.train.getnnz(axis=1) > 0))
        if n > len(active):
            raise ValueError(f"asked for {n} users but {self.info.name} has {len(active)} with training data")
        return active[torch.randperm(len(active), generator=generator)[:n]]

    def __repr__(self) -> str:
        return (f"RecsysData({self.info.name}: {self.num_users} users x {self.num_items} items; "
                f"interactions train {self.train.nnz}, val {self.val.nnz}, test {self.test.nnz})")


def to_dense(m: sp.spmatrix) -> Tensor:
    return torch.from_numpy(np.asarray(m.todense(), dtype=np.float32))


# -- preprocessing ---------------------------------------------------------------------------------
def k_core(inter: Interactions, k: int) -> Interactions:
    """Iteratively drop users and items with fewer than ``k`` interactions until none are left."""
    if k <= 1:
        return inter
    while True:
        _, ui, uc = np.unique(inter.users, return_inverse=True, return_counts=True)
        _, ii, ic = np.unique(inter.items, return_inverse=True, return_counts=True)
        keep = (uc[ui] >= k) & (ic[ii] >= k)
        if keep.all():
            return inter
        inter = inter.select(keep)


def _dedupe(inter: Interactions) -> Interactions:
    """Keep one interaction per (user, item): the latest when timestamps exist, else the first."""
    order = np.argsort(inter.timestamps, kind="stable")[::-1] if inter.timestamps is not None \
        else np.arange(len(inter.users))
    pairs = np.stack([inter.users[order], inter.items[order]], 1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    keep = np.zeros(len(order), dtype=bool)
    keep[order[first]] = True
    return inter.select(keep)


def build(name: str, inter: Interactions, *, k_core_min: int = 5, min_rating: float | None = None,
          holdout: str = "random", val_fraction: float = 0.1, test_fraction: float = 0.1,
          split_seed: int = 0, source: str = "") -> RecsysData:
    """Filter, index and split an interaction log into ``RecsysData``."""
    if holdout not in HOLDOUTS:
        raise ValueError(f"unknown holdout {holdout!r}; known: {', '.join(HOLDOUTS)}")
    if holdout == "last" and inter.timestamps is None:
        raise DataFormatError(f"{name}: holdout='last' needs timestamps, and this data has none")
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < test_fraction, 0 <= val_fraction, sum < 1; got "
                         f"{test_fraction}, {val_fraction}")
    if min_rating is not None:
        if inter.ratings is None:
            raise DataFormatError(f"{name}: min_rating given but the data has no ratings")
        inter = inter.select(inter.ratings >= min_rating)
    inter = k_core(_dedupe(inter), k_core_min)
    if len(inter.users) == 0:
        raise DataFormatError(f"{name}: no interactions left after the {k_core_min}-core filter")
    user_ids, u = np.unique(inter.users, return_inverse=True)
    item_ids, i = np.unique(inter.items, return_inverse=True)
    part = _split(u, inter.timestamps, holdout, val_fraction, test_fraction, split_seed)
    shape = (len(user_ids), len(item_ids))
    mats = [sp.csr_matrix((np.ones(int((part == s).sum()), dtype=np.float32), (u[part == s], i[part == s])),
                          shape=shape) for s in range(3)]
    ids_hash = hashlib.sha1("\n".join(map(str, item_ids)).encode()).hexdigest()
    info = DataInfo(name=name, modality="recsys", num_classes=1, shape=(len(item_ids),), flip=False,
                    extra={"num_users": shape[0], "num_items": shape[1], "interactions": int(len(u)),
                           "k_core": k_core_min, "min_rating": min_rating, "holdout": holdout,
                           "val_fraction": val_fraction, "test_fraction": test_fraction,
                           "split_seed": split_seed, "item_ids_sha1": ids_hash, "source": source})
    return RecsysData(info, *mats, user_ids=user_ids, item_ids=item_ids)


def _split(u: np.ndarray, ts, holdout: str, val_frac: float, test_frac: float, seed: int) -> np.ndarray:
    """Per-user split labels: 0 train, 1 validation, 2 test."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(u), dtype=np.int8)
    order = np.argsort(u, kind="stable")
    bounds = np.flatnonzero(np.diff(u[order])) + 1
    for idx in np.split(order, bounds):
        n = len(idx)
        if n < 2:
            continue  # a single interaction stays in train
        if holdout == "last":
            idx = idx[np.argsort(ts[idx], kind="stable")]
            n_test, n_val = 1, (1 if n >= 3 else 0)
        else:
            idx = idx[rng.permutation(n)]
            n_test = max(1, int(round(test_frac * n)))
            n_val = max(1, int(round(val_frac * n))) if (n >= 3 and val_frac > 0) else 0
            n_val = min(n_val, n - n_test - 1)
        part[idx[n - n_test:]] = 2
        part[idx[n - n_test - n_val:n - n_test]] = 1
    return part


# -- readers -----------------------------------------------------------------------------------------
def read_separated(lines, sep: str, *, cols=(0, 1, 2, 3)) -> Interactions:
    """Parse ``user sep item sep rating sep timestamp`` lines (MovieLens / MovieTweetings style)."""
    users, items, ratings, ts = [], [], [], []
    for ln, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        f = line.split(sep)
        if len(f) < 4:
            raise DataFormatError(f"line {ln}: expected user{sep}item{sep}rating{sep}timestamp, got {line!r}")
        users.append(f[cols[0]])
        items.append(f[cols[1]])
        ratings.append(float(f[cols[2]]))
        ts.append(int(f[cols[3]]))
    return Interactions(np.array(users), np.array(items), np.array(ratings), np.array(ts, dtype=np.int64))


MT_FILE = "snapshots/100K/ratings.dat"
MT_URL = "https://raw.githubusercontent.com/sidooms/MovieTweetings/master/" + MT_FILE
MT_MD5 = "f5e9db01cdf9490fa13713a26183b7cf"


@DATASETS.register("movietweetings")
def load_movietweetings(data_dir=None, download: bool = True, *, k_core: int = 5, **kw) -> RecsysData:
    """MovieTweetings 100K snapshot (Dooms et al., RecSys'13 CrowdRec; MIT): 100,000 ratings of
    16,554 users; 5-core: 4,333 users x 2,414 items, 68,055 interactions."""
    found = find_files("movietweetings", [MT_FILE], data_dir)
    if found is None:
        found = fetch("movietweetings", {MT_FILE: (MT_URL, MT_MD5)}, data_dir, download,
                      f"put {MT_FILE} (from github.com/sidooms/MovieTweetings) under --data-dir")
    with open(found / MT_FILE, encoding="utf-8") as f:
        inter = read_separated(f, "::")
    return build("movietweetings", inter, k_core_min=k_core, source=str(found), **kw)


ML = {  # name: (zip file, url, md5, ratings member, separator)
    "movielens-100k": ("ml-100k.zip", "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                       "0e33842e24a9c977be4e0107933c0723", "ml-100k/u.data", "\t"),
    "movielens-1m": ("ml-1m.zip", "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                     "c4d9eecfca2ab87c1945afe126590906", "ml-1m/ratings.dat", "::"),
}


def _load_movielens(name: str, data_dir, download: bool, k_core: int, **kw) -> RecsysData:
    zname, url, md5, member, sep = ML[name]
    plain = Path(member).name
    found = find_files(name, [plain], data_dir)  # an extracted copy
    if found is not None:
        with open(found / plain, encoding="latin-1") as f:
            inter = read_separated(f, sep)
    else:
        found = fetch(name, {zname: (url, md5)}, data_dir, download,
                      f"download {url} by hand and pass its folder as --data-dir")
        with zipfile.ZipFile(found / zname) as z, z.open(member) as raw:
            inter = read_separated(io.TextIOWrapper(raw, encoding="latin-1"), sep)
    return build(name, inter, k_core_min=k_core, source=str(found), **kw)


@DATASETS.register("movielens-100k")
def load_movielens_100k(data_dir=None, download: bool = True, *, k_core: int = 0, **kw) -> RecsysData:
    """MovieLens-100K (GroupLens): 943 users x 1,682 items, 100,000 ratings (all users >= 20)."""
    return _load_movielens("movielens-100k", data_dir, download, k_core, **kw)


@DATASETS.register("movielens-1m")
def load_movielens_1m(data_dir=None, download: bool = True, *, k_core: int = 0, **kw) -> RecsysData:
    """MovieLens-1M (GroupLens): 6,040 users x 3,706 items, 1,000,209 ratings (∞-AE's ML-1M:
    every rating a positive, users with < 3 ratings dropped, random 80/10/10 per user)."""
    return _load_movielens("movielens-1m", data_dir, download, k_core, **kw)


CSV_COLUMNS = {"user": ("user", "user_id", "userid", "uid"), "item": ("item", "item_id", "itemid", "iid", "movie_id"),
               "rating": ("rating", "score", "value"), "timestamp": ("timestamp", "time", "ts", "date")}


def load_interactions_csv(path, *, k_core: int = 5, sep: str | None = None, **kw) -> RecsysData:
    """Your own interactions: a ``.csv``/``.tsv`` of ``user, item[, rating[, timestamp]]`` rows.

    A header row is recognised when it names the columns (``user``/``user_id``, ``item``/
    ``item_id``, optional ``rating``, ``timestamp``); without one, columns are taken in that order.
    Ids may be any strings; timestamps must be integers (they enable ``holdout="last"``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"interaction file {path} does not exist")
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter=sep) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataFormatError(f"{path} holds no rows")
    head = [c.strip().lower() for c in rows[0]]
    cols = {k: next((head.index(a) for a in names if a in head), None) for k, names in CSV_COLUMNS.items()}
    if cols["user"] is not None and cols["item"] is not None:
        rows = rows[1:]
    else:
        cols = {"user": 0, "item": 1, "rating": 2 if len(head) > 2 else None,
                "timestamp": 3 if len(head) > 3 else None}
    try:
        arr = lambda k, t: None if cols[k] is None else np.array([t(r[cols[k]].strip()) for r in rows])  # noqa: E731
        inter = Interactions(arr("user", str), arr("item", str), arr("rating", float), arr("timestamp", int))
    except (IndexError, ValueError) as e:
        raise DataFormatError(f"{path}: expected user{sep}item[{sep}rating[{sep}timestamp]] rows: {e}") from e
    return build(path.stem, inter, k_core_min=k_core, source=str(path), **kw)
