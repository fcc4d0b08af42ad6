"""The recommender evaluation protocol (``evaluate()`` dispatches ``modality == "recsys"`` here).

A summary's rows train each requested recommender (default ∞-AE); every real user is then
scored from their context rows. Hyper-parameters (∞-AE's λ, EASE's λ, MF's λ and α) are chosen
on the validation split (context = train rows, metric nDCG@10); the chosen model then scores the
test split (context = train + validation rows) and that is reported — no choice is made on test.
Deterministic models (∞-AE, EASE) are fitted once; MF is fitted once per seed. With
``full_reference`` the same model trained on every real user's training rows is reported beside,
with the summary's percentage of it.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.recsys import RecsysData
from ..errors import ConfigError, DataFormatError
from ..models.recsys import create_recommender
from ..runtime import RunOptions, derive_seed
from ..synsets.base import SyntheticSet
from .base import EvalReport
from .ranking import rank_metrics


@dataclasses.dataclass(frozen=True)
class RecsysProtocol:
    name: str
    num_models: int          # seeds for stochastic recommenders (MF)
    grid: bool = True        # search the hyper-parameter grid on validation (else the default)
    k: int = 10
    select_on: str = "ndcg@10"


RECSYS_PROTOCOLS = {"paper": RecsysProtocol("paper", num_models=5), "fast": RecsysProtocol("fast", num_models=3),
                    "smoke": RecsysProtocol("smoke", num_models=1, grid=False)}


def select_and_test(model_name: str, rows: Tensor, data: RecsysData, *, protocol: RecsysProtocol,
                    seed: int = 0) -> dict[str, Any]:
    """Fit ``model_name`` on ``rows`` for each grid setting, pick on validation, report test."""
    model = create_recommender(model_name, seed=seed)
    grid = model.grid if protocol.grid else [model.default]
    ctx_val = data.dense("train")
    best = None
    for hp in grid:
        m = rank_metrics(model.fit(rows, **hp).scores(ctx_val), data.context("val"), data.val, protocol.k,
                         auc=False)
        if best is None or m[protocol.select_on] > best[1][protocol.select_on]:
            best = (hp, m)
    hp, val = best
    test = rank_metrics(model.fit(rows, **hp).scores(data.dense("test-context")), data.context("test"),
                        data.test, protocol.k)
    return {"hp": hp, "val": val, "test": test}


def check_compatible(syn: SyntheticSet, real) -> None:
    if not isinstance(real, RecsysData):
        raise DataFormatError(f"a recommender summary needs recommender data, got {type(real).__name__}")
    si, ri = syn.info, real.info
    keys = ("item_ids_sha1", "k_core", "min_rating")
    if tuple(si.shape) != tuple(ri.shape) or any(si.extra.get(k) != ri.extra.get(k) for k in keys):
        raise DataFormatError(f"summary is for {si.name} ({si.shape[0]} items, k-core {si.extra.get('k_core')}) "
                         f"but the data is {ri.name} ({ri.shape[0]} items, k-core {ri.extra.get('k_core')}); "
                         f"load the dataset the summary was made from, with the same preprocessing")


def evaluate_rows(rows: Tensor, real: RecsysData, models: Sequence[str], protocol: RecsysProtocol,
                  seed: int = 0, on_model: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict]:
    """Test metrics of each recommender trained on ``rows`` (mean ± std over seeds)."""
    results: dict[str, dict[str, Any]] = {}
    for mi, name in enumerate(models):
        runs = []
        n = 1 if create_recommender(name).deterministic else protocol.num_models
        for k in range(n):
            r = select_and_test(name, rows, real, protocol=protocol, seed=derive_seed(seed, mi, k))
            runs.append(r)
            if on_model is not None:
                on_model({"model": name, "index": k, "accuracy": r["test"][protocol.select_on], **r["test"]})
        metric_names = [key for key in runs[0]["test"] if key != "users"]
        res: dict[str, Any] = {"accs": [r["test"][protocol.select_on] for r in runs], "runs": runs}
        res["mean"] = statistics.fmean(res["accs"])
        res["std"] = statistics.pstdev(res["accs"]) if n > 1 else 0.0
        for key in metric_names:
            vals = [r["test"][key] for r in runs]
            res[key] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if n > 1 else 0.0}
        results[name] = res
    return results


def evaluate_recsys(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
                    protocol: str = "fast", num_models: int | None = None, seed: int = 0,
                    full_reference: bool = False, on_model=None,
                    run: RunOptions | None = None) -> "RecsysReport":
    """Evaluate a recommender summary (``datadistill.evaluation.evaluate`` dispatches here)."""
    if isinstance(protocol, RecsysProtocol):
        proto = protocol
    elif protocol in RECSYS_PROTOCOLS:
        proto = RECSYS_PROTOCOLS[protocol]
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(RECSYS_PROTOCOLS)}")
    overrides: dict[str, Any] = {}
    if num_models is not None and num_models != proto.num_models:
        overrides["num_models"] = num_models
        proto = dataclasses.replace(proto, num_models=num_models)
    check_compatible(syn, real)
    models = ("inf-ae",) if models is None else tuple(models)
    with torch.no_grad():
        rows = syn.materialize()[0].detach().float().cpu()
        results = evaluate_rows(rows, real, models, proto, seed, on_model)
        if full_reference:
            full = evaluate_rows(real.dense("train"), real, models, proto, seed)
            for name, r in results.items():
                r["full_acc"] = full[name]["mean"]
                r["full"] = {k: v for k, v in full[name].items() if k != "runs"}
                r["pct_of_full"] = 100.0 * r["mean"] / r["full_acc"] if r["full_acc"] else float("nan")
    summary = {"dataset": syn.info.name, "ipc": syn.ipc, "users": syn.num_examples,
               "interactions": int((rows != 0).sum()), "binary": bool(((rows == 0) | (rows == 1)).all()),
               "stored_bytes": syn.stored_bytes(), "label_format": syn.label_format,
               "method": syn.meta.get("method"), "iterations": syn.meta.get("iterations"),
               "params": syn.meta.get("params")}
    return RecsysReport(dataclasses.asdict(proto), summary, results, overrides,
                        run.to_dict() if run else {})


class RecsysReport(EvalReport):
    def table(self) -> str:
        p, s = self.protocol, self.summary
        how = f"chosen on validation by {p['select_on']}" if p["grid"] else "fixed at each model's default"
        lines = [f"protocol: recsys {p['name']} (hyper-parameters {how}; {p['num_models']} seed(s) for "
                 f"stochastic models; test = train+val context)"
                 + ("" if not self.overrides else f"  overrides: {self.overrides}"),
                 f"summary: {s.get('method') or '?'} on {s['dataset']}, {s['users']} users, "
                 f"{s['interactions']} interactions (binary: {s['binary']}), {s['stored_bytes']} stored bytes",
                 f"{'model':<10}{'HR@10 %':>16}{'nDCG@10 %':>16}{'AUC':>18}{'% of full nDCG':>16}"]
        for m, r in self.results.items():
            f = lambda key, d=2: f"{r[key]['mean']:.{d}f} ± {r[key]['std']:.{d}f}"  # noqa: E731
            pct = f"{r['pct_of_full']:.1f}" if r.get("pct_of_full") is not None else "-"
            lines.append(f"{m:<10}{f('hr@10'):>16}{f('ndcg@10'):>16}{f('auc', 4):>18}{pct:>16}")
        return "\n".join(lines)
