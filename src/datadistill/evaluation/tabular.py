"""The evaluation protocol for tabular summaries: MLPs and gradient-boosted trees on the
*decoded* summary (what a user exports), accuracy and balanced accuracy.

The summary is hardened first (``TableSchema.harden``: each categorical column's relaxed block
-> its arg-max category; missing indicators -> 0/1), so every model trains on valid rows. The
real test rows are encoded with the *summary's* schema (its categories and statistics): a
category the summary's schema lacks is an error that names the column (``UnknownCategoryError``).

- ``mlp`` (any registered network): K fresh networks, the field's optimizer as for text
  (``evaluation/text.py``: SGD momentum 0.9, wd 5e-4, lr 0.01, batch 256; ``fast`` 300 epochs x
  3 models, ``paper`` 1000 x 20, ``smoke`` 20 x 1).
- ``hgb``: scikit-learn's ``HistGradientBoostingClassifier`` on the decoded rows (numeric
  columns in their original units, categorical columns as categories, missing values as NaN),
  defaults except ``min_samples_leaf = max(1, min(20, n_rows // 20))`` (the default 20 would
  forbid any split on a 20-row summary) and ``random_state`` = the model's derived seed;
  soft labels are hardened by arg-max.

Every model reports ``name`` (accuracy %) and ``name:balanced`` (balanced accuracy %: the mean
of the per-class recalls) as separate result rows.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.base import Split
from ..data.tabular import TableSchema, schema_of
from ..errors import DataFormatError
from ..runtime import RunOptions, derive_seed
from ..synsets.base import SyntheticSet
from .base import EvalReport, Protocol, accuracy_stats
from .text import FULL_TEXT, fit_networks, scores, summary_record, text_protocol, full_accuracy

TREE_MODELS = ("hgb",)


def hgb_params(n_rows: int) -> dict[str, Any]:
    return {"min_samples_leaf": max(1, min(20, n_rows // 20))}


def fit_hgb(records, labels, test_records, test_y, schema: TableSchema, *, seed: int, k: int,
            where: str) -> tuple[float, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    import numpy as np

    xa, mask = schema.ordinal(records, "summary")
    xt, _ = schema.ordinal(test_records, where)
    clf = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed,
                                         **hgb_params(len(records)))
    ya = np.asarray(labels)
    if len(set(ya.tolist())) < 2:  # one class only: the constant classifier
        pred = np.full(len(xt), ya[0])
    else:
        pred = clf.fit(xa, ya).predict(xt)
    return scores(torch.as_tensor(pred), torch.as_tensor(test_y), k)


def matched_test(syn: SyntheticSet, real) -> tuple[TableSchema, list[dict], Split]:
    """The summary's schema, the real test records and the test split encoded with it."""
    schema = schema_of(syn.info)
    if syn.info.modality != real.info.modality or not hasattr(real, "records"):
        raise DataFormatError(f"summary of table {syn.info.name} cannot be evaluated on "
                              f"{real.info.name} ({real.info.modality})")
    schema.check_compatible(schema_of(real.info), f"{real.info.name}")
    recs = real.records["test"]
    return schema, recs, Split(schema.encode(recs, f"{real.info.name} test"), real.test.y)


def evaluate_tabular(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
                     protocol: str | Protocol = "fast", num_models: int | None = None,
                     seed: int = 0, full_reference: bool | str | dict = False,
                     on_model: Callable[[dict[str, Any]], None] | None = None,
                     run: RunOptions) -> EvalReport:
    """Tabular summaries: MLPs and HistGradientBoosting on the decoded summary; accuracy and
    balanced accuracy on the real test rows."""
    schema, test_recs, test = matched_test(syn, real)
    overrides: dict[str, Any] = {}
    proto = text_protocol(protocol, num_models, overrides)
    models = ("mlp", "hgb") if models is None else tuple(models)
    dev = torch.device(run.device)
    test = test.to(dev)
    with torch.no_grad():
        x, y = (t.detach() for t in syn.materialize())
    xh = schema.harden(x).to(dev)
    y = y.to(dev)
    hard_y = y if y.dim() == 1 else y.argmax(1)
    records = schema.decode(xh)
    k = syn.info.num_classes
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        if name in TREE_MODELS:
            accs, bals = [], []
            for j in range(proto.num_models):
                a, b = fit_hgb(records, hard_y.tolist(), test_recs, real.test.y, schema,
                               seed=derive_seed(seed, mi, j) % (2 ** 31), k=k,
                               where=f"{real.info.name} test")
                accs.append(a)
                bals.append(b)
                if on_model is not None:
                    on_model({"model": name, "index": j, "accuracy": a})
            extra = {"settings": hgb_params(len(records))}
        else:
            accs, bals = fit_networks(name, mi, xh, y, test, syn.info, proto=proto,
                                      label_format=syn.label_format, seed=seed, run=run,
                                      lr=proto.lr, on_model=on_model)
            extra = {}
        r: dict[str, Any] = {**accuracy_stats(accs), "published_full": None, **extra}
        if full_reference and name not in TREE_MODELS:
            full = full_accuracy(name, real, syn.info, seed=seed, run=run, test=test)
            r.update({"full_acc": full, "full_settings": {**FULL_TEXT, "description":
                      f"{name} on the full training split, {FULL_TEXT['epochs']} epochs"},
                      "pct_of_full": 100.0 * r["mean"] / full if full else math.nan})
        elif full_reference:
            full = fit_hgb(real.records["train"], real.train.y.tolist(), test_recs, real.test.y,
                           schema, seed=seed, k=k, where=f"{real.info.name} test")[0]
            r.update({"full_acc": full, "pct_of_full": 100.0 * r["mean"] / full if full else math.nan,
                      "full_settings": {"description": "hgb (scikit-learn defaults) on the full "
                                                       "training split"}})
        results[name] = r
        results[f"{name}:balanced"] = {**accuracy_stats(bals), "published_full": None,
                                       "metric": "balanced accuracy %"}
    proto_d = {**dataclasses.asdict(proto), "hgb": "HistGradientBoostingClassifier, "
               "min_samples_leaf=max(1, min(20, rows // 20))", "decoded": True}
    return EvalReport(proto_d, summary_record(syn), results, overrides, run.to_dict())
