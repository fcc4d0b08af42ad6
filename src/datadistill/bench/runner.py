"""Every call from the benchmark suite into the library, in one place.

The rest of ``datadistill.bench`` never imports the library: it passes ``Row``s here and gets
plain dicts back. When the library's API moves (``RunOptions``, ``datadistill.evaluation``),
only this file changes; the spot where speed options are turned into library arguments is
``run_options`` below.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: recommender user-selection baselines (``datadistill.recsys.subsets``), by row method name
RECSYS_BASELINES = ("random", "active", "herding")


# -- names --------------------------------------------------------------------------------------
def is_baseline(method: str) -> bool:
    from datadistill.coresets import CORESETS
    from datadistill.distillers import DISTILLERS

    return method not in DISTILLERS and (method in CORESETS or method in RECSYS_BASELINES)


def check_row(row) -> None:
    """Raise the library's own error (it lists the known names) for an unknown method,
    dataset, preset, parameter or protocol of ``row``."""
    from datadistill.coresets import CORESETS
    from datadistill.data import DATASETS
    from datadistill.distillers import DISTILLERS

    if row.method not in DISTILLERS and row.method not in CORESETS \
            and row.method not in RECSYS_BASELINES:
        raise ValueError(f"unknown method {row.method!r}; known methods: "
                         f"{', '.join(DISTILLERS.names())}; baselines: "
                         f"{', '.join(sorted(set(CORESETS.names()) | set(RECSYS_BASELINES)))}")
    ds = str(row.dataset)
    if ds.lower() not in DATASETS and not (ds.endswith((".npz", ".csv", ".tsv")) or os.sep in ds):
        raise ValueError(f"unknown dataset {ds!r}; known datasets: {', '.join(DATASETS.names())} "
                         f"(or a path to an .npz / image folder / .csv)")
    if row.method in DISTILLERS:
        cls = DISTILLERS.get(row.method)
        cls.from_config(row.preset, **method_params(row))  # unknown preset / parameter -> ConfigError
    elif row.preset or row.set:
        raise ValueError(f"baseline {row.method!r} takes no preset or set")
    if row.kind == "accuracy" and row.protocol not in ("paper", "fast", "smoke"):
        raise ValueError(f"unknown protocol {row.protocol!r}; known: paper, fast, smoke")
    if row.kind == "speed" and row.method not in DISTILLERS:
        raise ValueError(f"speed rows time a distiller; {row.method!r} is a baseline")


# -- run options (THE spot to switch to datadistill.runtime.RunOptions) -------------------------
# Today speed settings are method parameters (precision, fused, compile, channels_last,
# real_chunk, expert_workers) and evaluate() keywords (compile, fused), plus the process-wide
# thread count and allocator. When ``RunOptions`` lands, replace the body with
#     from datadistill.runtime import RunOptions
#     return {}, RunOptions(**row.run)
# and pass ``run=`` to ``distill`` / ``evaluate`` in ``distill_summary`` / ``evaluate_summary``.
def run_options(row) -> tuple[dict[str, Any], dict[str, Any]]:
    """(method parameters, evaluate() keywords) that carry ``row.run``; sets threads and the
    allocator for this process."""
    from datadistill import runtime
    from datadistill.distillers import DISTILLERS

    opts = dict(row.run)
    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    if opts.get("allocator", "tuned") == "tuned":
        runtime.tune_allocator()
    params: dict[str, Any] = {}
    names = DISTILLERS.get(row.method).param_names() if row.method in DISTILLERS else []
    mapping = {"precision": "precision", "fused": "fused", "compile": "compile",
               "channels_last": "channels_last", "real_chunk": "real_chunk",
               "workers": "expert_workers", "device": "device"}
    for key, field in mapping.items():
        if key in opts and field in names:
            params[field] = opts[key]
    eval_kw = {k: opts[k] for k in ("compile", "fused") if k in opts}
    if "device" in opts:
        eval_kw["device"] = opts["device"]
    return params, eval_kw


def method_params(row) -> dict[str, Any]:
    """The method parameters a row sets: ``set``, ``iterations`` (speed rows: warmup + timed)."""
    params = dict(row.set)
    if row.kind == "speed":
        params["iterations"] = row.warmup + row.timed
    elif row.iterations is not None:
        params["iterations"] = row.iterations
    return params


# -- data and summaries -------------------------------------------------------------------------
def load_real(row):
    from datadistill.data import load_dataset

    data_dir = os.path.expandvars(os.path.expanduser(row.data_dir)) if row.data_dir else None
    if data_dir is not None and "$" in data_dir:
        raise ValueError(f"data_dir {row.data_dir!r}: set the environment variable it names")
    return load_dataset(row.dataset, data_dir=data_dir)


def _distiller(row, speed_params):
    from datadistill.distillers import create_distiller

    return create_distiller(row.method, row.preset, **{**method_params(row), **speed_params})


def distill_summary(row, real, seed: int, workdir: Path, *, resume: bool,
                    on_iteration: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Distil (or select, for a baseline) one summary into ``workdir/summary``; resumes from
    ``workdir``'s checkpoint when ``resume``. Returns {iterations, stored_bytes}."""
    params, _ = run_options(row)
    workdir.mkdir(parents=True, exist_ok=True)
    if is_baseline(row.method):
        syn = select_baseline(row, real, seed)
        syn.save(workdir / "summary")
        return {"iterations": 0, "stored_bytes": int(syn.stored_bytes())}
    d = _distiller(row, {**params, "seed": seed})
    syn = d.init_synset(real, **row.budget)
    syn.meta["dataset_source"] = row.dataset
    can_resume = resume and (workdir / "checkpoint.pt").exists()
    d.distill(real, syn, [on_iteration], workdir=workdir, resume=can_resume)
    return {"iterations": int(syn.meta.get("iterations", d.iterations)),
            "stored_bytes": int(syn.stored_bytes())}


def checkpoint_iteration(workdir: Path) -> int:
    """The iteration a resumed run restarts from (the summary saved with the checkpoint)."""
    import json

    meta = workdir / "summary" / "summary.json"
    if not (workdir / "checkpoint.pt").exists() or not meta.exists():
        return 0
    return int(json.loads(meta.read_text()).get("iterations") or 0)


def select_baseline(row, real, seed: int):
    modality = real.info.modality
    if modality == "graph":
        from datadistill.graph_coresets import select_graph_coreset
        return select_graph_coreset(real, row.method, seed=seed, **row.budget)
    if modality == "recsys":
        from datadistill.recsys.subsets import select_users
        return select_users(real, row.users, row.method, seed=seed)
    from datadistill.coresets import select_coreset
    return select_coreset(real, row.ipc, row.method, seed=seed)


def evaluate_summary(row, real, seed: int, workdir: Path) -> dict[str, Any]:
    """Evaluate ``workdir/summary`` under the row's protocol; {protocol, metric, per_model}."""
    from datadistill.evaluate import evaluate
    from datadistill.synsets import load_summary

    _, eval_kw = run_options(row)
    syn = load_summary(workdir / "summary")
    if syn.info.modality != "image":
        eval_kw = {k: v for k, v in eval_kw.items() if k == "device"}
    rep = evaluate(syn, real, models=row.models, protocol=row.protocol,
                   num_models=row.num_models, seed=seed, **eval_kw)
    proto = rep.protocol
    per_model = {m: {"accs": [float(a) for a in r["accs"]]} for m, r in rep.results.items()}
    metric = "nDCG@10 %" if syn.info.modality == "recsys" else "accuracy %"
    return {"protocol": {"name": proto.get("name"), "epochs": proto.get("epochs"),
                         "num_models": proto.get("num_models")},
            "overrides": {k: str(v) for k, v in rep.overrides.items()},
            "metric": metric, "per_model": per_model}


# -- speed --------------------------------------------------------------------------------------
def time_iterations(row, real, on_iteration: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``warmup + timed`` iterations of the row's method (no checkpoints written);
    ``on_iteration`` is called after each. Returns the method's resolved settings."""
    params, _ = run_options(row)
    d = _distiller(row, params)
    syn = d.init_synset(real, **row.budget)
    d.distill(real, syn, [on_iteration], workdir=None)
    return {"params": {k: v for k, v in d.params().items()}, "threads": torch.get_num_threads()}


def thread_count() -> int:
    return torch.get_num_threads()
