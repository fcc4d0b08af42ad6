"""Real datasets: a loader registry (``DATASETS``) returning train / validation / test splits.

Modules in this package register their loaders on import; ``load_dataset`` takes a registered
name or a path (``.npz`` file or image folder).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

from .base import (DATASETS, DataFormatError, DataInfo, DatasetNotFoundError, RealData,  # noqa: F401
                   Split)

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "files", "zca"):
        importlib.import_module(f"{__name__}.{_m.name}")


def load_dataset(name_or_path: str, *, data_dir=None, download: bool = True, **kw):
    """Load a dataset by registered name (see ``DATASETS.names()``) or from a path.

    Extra keywords go to the loader (for images: ``val_fraction``, ``split_seed``, ``zca``).
    A user's text file is ``text:PATH`` (a CSV/TSV with ``text`` and ``label`` columns), a
    user's table ``table:PATH?label=COLUMN`` (``data/text.py``, ``data/tabular.py``).
    """
    key = str(name_or_path)
    if key.startswith("text:"):
        from .text import load_text_csv
        return load_text_csv(os.path.expanduser(key[5:]), **kw)
    if key.startswith("table:"):
        from .tabular import load_table_csv, parse_table_spec
        path, opts = parse_table_spec(key[6:])
        return load_table_csv(os.path.expanduser(path), **{**opts, **kw})
    if key.lower() in DATASETS:
        return DATASETS.get(key)(data_dir=data_dir, download=download, **kw)
    p = Path(os.path.expanduser(key))
    if p.suffix.lower() in (".csv", ".tsv"):  # recommender interactions: user, item[, rating[, ts]]
        from .recsys import load_interactions_csv
        return load_interactions_csv(p, **kw)
    if p.suffix == ".npz" or p.is_dir() or os.sep in key:
        from .images import load_image_path
        return load_image_path(p, **kw)
    return DATASETS.get(key)  # raises UnknownNameError listing the known datasets
