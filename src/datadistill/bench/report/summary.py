"""The tables across suites that open ``BENCHMARKS.md``: the summary (one row per method ×
dataset × budget), the rows at a fixed number of stored bytes, DD-Ranking's robust scores."""
from __future__ import annotations

from typing import Any

from .cells import (_acc, _budget, _budget_key, _bytes, _cpu, _iters, _pm, _protocol,
                    _published, _table, stored_bytes)
from .rules import parity_word, status


def _headline(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per (label, dataset, budget): the most iterations, then paper protocol, then
    more models, then the newest."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["label"], r["dataset"], _budget(r.get("budget") or {}))
        rank = (r.get("iterations_run") or 0, (r.get("protocol") or {}).get("name") == "paper",
                (r.get("accuracy") or {}).get("n") or 0, str((r.get("env") or {}).get("date")))
        if key not in best or rank > best[key][0]:
            best[key] = (rank, r)
    return {k: v[1] for k, v in best.items()}


def _accuracy_rows(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for suite in data:
        for r in suite["rows"].values():
            if r.get("kind") == "accuracy" and r.get("status") == "done" \
                    and (r.get("declared") or {}).get("summary", True):
                out.append({**r, "suite": suite["suite"]})
    return out


IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")


def _order(r: dict[str, Any]) -> tuple:
    """Images first, then graphs (graph classification, then node ratios), then recommender."""
    b = r.get("budget") or {}
    kind = 0 if r["dataset"] in IMAGE_DATASETS else 1 if "ipc" in b else 2 if "ratio" in b else 3
    return (kind, r["dataset"], _budget_key(b), r["label"])


def summary_table(data: list[dict[str, Any]], parity: dict[str, str | None]) -> list[str]:
    rows = sorted(_headline(_accuracy_rows(data)).values(), key=_order)
    body = []
    for r in rows:
        word, why = status(r)
        body.append([r["label"], r["dataset"], _budget(r.get("budget") or {}), _acc(r),
                     _protocol(r), _iters(r), _cpu(r), _published(r),
                     _bytes(stored_bytes(r), units=False), parity_word(r, parity),
                     f"**{word}**" + (f" ({why})" if why else ""), f"{r['suite']}/{r['id']}"])
    head = ["method", "dataset", "budget", "accuracy %", "protocol", "iterations run / published",
            "distillation CPU-s (threads)", "published", "stored bytes", "parity", "status",
            "results row"]
    return _table(head, body)


BYTES_RULE = (
    "A row is compared here when its suite declares `byte_budget` (bytes) for it: rows of one "
    "dataset at one budget, best first. **fits** when the summary stores at most the budget, "
    "**over** (by how much) otherwise, **unknown** when its bytes were not recorded; stored "
    "bytes count every tensor that must be kept (examples, labels, learned step size, bases "
    "and decoders of factorized summaries). The summary table above is at a fixed number of "
    "examples per class.")


def fixed_bytes_table(data: list[dict[str, Any]]) -> list[str]:
    """Rows that declare a ``byte_budget``, grouped by dataset and budget, best accuracy first."""
    rows = [r for r in _accuracy_rows(data) if (r.get("declared") or {}).get("byte_budget")]
    if not rows:
        return ["No row declares a byte budget yet (`byte_budget = <bytes>` in a suite row); "
                "the summary table's stored-bytes column gives each row's bytes."]
    rows.sort(key=lambda r: (r["dataset"], int(r["declared"]["byte_budget"]),
                             -((r.get("accuracy") or {}).get("mean") or -1e9)))
    body = []
    for r in rows:
        budget, got = int(r["declared"]["byte_budget"]), stored_bytes(r)
        fit = "unknown" if got is None else "fits" if got <= budget else \
            f"**over** (+{100 * (got / budget - 1):.1f} %)"
        used = "—" if got is None else f"{100 * got / budget:.1f} %"
        body.append([r["dataset"], _bytes(budget), r["label"], _budget(r.get("budget") or {}),
                     _acc(r), _protocol(r), _bytes(got), used, fit, _cpu(r),
                     f"{r['suite']}/{r['id']}"])
    return _table(["dataset", "byte budget", "method", "examples", "accuracy %", "protocol",
                   "stored bytes", "of budget", "fits", "distillation CPU-s (threads)",
                   "results row"], body)


ROBUST_RULE = (
    "DD-Ranking's scores (Li et al., \"DD-Ranking: Rethinking the Evaluation of Dataset "
    "Distillation\", arXiv:2505.13300, 2025; `datadistill.evaluation.robust`, the same function "
    "as `datadistill evaluate --robust`; docs/report.md). Per round r, fresh models trained on "
    "the summary, on the summary under hard labels, on the summary without evaluation-time "
    "augmentation, and on a new random real subset of the same storage with and without "
    "augmentation: HLR = full-data accuracy − the summary's under hard labels; IOR = the "
    "summary's − the random subset's (each under its own evaluation); LRS = 100·(e^α − e^−1)/"
    "(e − e^−1) with α = w·IOR − (1−w)·HLR; ARS the same with β = γ·(gap to random with "
    "augmentation) + (1−γ)·(gap without); accuracies as fractions, w = γ = 0.5 unless the row "
    "says otherwise. Mean ± population std over the rounds of every seed. The protocol column "
    "is the evaluation every stage used (its DSA for \"with augmentation\"); HLR needs the "
    "full-data accuracy named in the last column. Unlike DD-Ranking, no learning rate or "
    "epoch is chosen on the test set, so accuracies (and scores) are the fixed protocol's.")


def robust_table(data: list[dict[str, Any]]) -> list[str]:
    """Every accuracy row with robust scores, one line per row and architecture."""
    rows = sorted((r for r in _accuracy_rows(data) if r.get("robust")), key=_order)
    body = []
    for r in rows:
        rob = r["robust"]
        full = rob.get("full_reference") or {}
        rnd = rob.get("random") or {}
        proto = rob.get("protocol") or {}
        how = (f"{proto.get('name', '?')} ({proto.get('epochs', '?')} ep, "
               f"{rob.get('rounds', '?')} rounds"
               + (f" over {rob['seeds']} seeds" if (rob.get("seeds") or 1) > 1 else "") + ")")
        w = rob.get("weights") or {}
        if (w.get("lrs"), w.get("ars")) not in ((0.5, 0.5), (None, None)):
            how += f"; w = {w.get('lrs')}, γ = {w.get('ars')}"
        for m, s in (rob.get("models") or {}).items():
            acc = (r.get("per_model") or {}).get(m) or {}
            body.append([
                r["label"], r["dataset"], _budget(r.get("budget") or {}), m,
                _pm(acc), f"**{_pm(s.get('lrs'))}**",
                f"**{_pm(s.get('ars'))}**", _pm(s.get("hlr")), _pm(s.get("ior")),
                _pm(s.get("aug_gap")), _pm(s.get("noaug_gap")), how,
                f"IPC {rnd.get('ipc', '?')}, {rnd.get('labels', '?')} labels",
                (f"{s['full_acc']:.1f} ({full.get('kind', '?')})"
                 if s.get("full_acc") is not None else "—"),
                f"{r['suite']}/{r['id']}"])
    if not body:
        return ["No row computed them yet (`robust = true` in a suite row; "
                "`python -m datadistill.bench run robust`)."]
    return _table(["method", "dataset", "budget", "model", "accuracy %", "LRS %", "ARS %",
                   "HLR (pp)", "IOR (pp)", "gap to random w/ aug (pp)",
                   "gap to random w/o aug (pp)", "protocol (rounds)", "random subsets",
                   "full-data % (source)", "results row"], body)
