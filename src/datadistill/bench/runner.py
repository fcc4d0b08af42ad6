"""Every call from the benchmark suite into the library, in one place.

The rest of ``datadistill.bench`` never imports the library: it passes ``Row``s here and gets
plain dicts back. A row's method parameters (``preset``, ``set``, ``iterations``) and its run
options (``run``: a ``datadistill.runtime.RunOptions`` as a table) stay apart, as in the library:
``distill(..., run=RunOptions(**row.run))`` and ``evaluate(..., run=...)``; every record keeps
the *resolved* run options (what ``auto`` became on this machine).

Speed rows that run outside this process (an older commit of the library, another program)
are timed by ``external.py`` (``time_external``, re-exported here).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .external import data_dir, export_commit, time_external  # noqa: F401 (re-exported)

#: keys of ``RunOptions`` a row's ``run`` table may set (checked again by ``RunOptions`` itself)
RUN_OPTION_KEYS = ("device", "precision", "threads", "compile", "fused", "channels_last", "chunk",
                   "workers", "allocator", "release_memory", "fast_norm")


# -- names --------------------------------------------------------------------------------------
def _baseline_names() -> set[str]:
    from datadistill.baselines.images import CORESETS
    from datadistill.baselines.recsys import USER_SELECTIONS

    return set(CORESETS.names()) | set(USER_SELECTIONS.names())


def is_baseline(method: str) -> bool:
    from datadistill.distillers import DISTILLERS

    return method not in DISTILLERS and method in _baseline_names()


def is_out_of_process(row) -> bool:
    """Rows timed by another program: an older commit of the library, or an external command."""
    return bool(row.commit or row.external)


def check_row(row, suite: str | None = None) -> None:
    """Raise the library's own error (it lists the known names) for an unknown method,
    dataset, preset, parameter, run option or protocol of ``row`` (of suite ``suite``: a
    ``from_summary`` naming an earlier row of the same suite is looked up when the row runs)."""
    from datadistill.data import DATASETS
    from datadistill.distillers import DISTILLERS

    if is_out_of_process(row):
        # another version of the library, or another program: it checks its own names
        if row.kind != "speed":
            raise ValueError("commit / external rows are speed rows (kind = \"speed\")")
        return
    if row.method not in DISTILLERS and row.method not in _baseline_names():
        raise ValueError(f"unknown method {row.method!r}; known methods: "
                         f"{', '.join(DISTILLERS.names())}; baselines: "
                         f"{', '.join(sorted(_baseline_names()))}")
    ds = str(row.dataset)
    if ds.lower() not in DATASETS and not (ds.endswith((".npz", ".csv", ".tsv")) or os.sep in ds):
        raise ValueError(f"unknown dataset {ds!r}; known datasets: {', '.join(DATASETS.names())} "
                         f"(or a path to an .npz / image folder / .csv)")
    if row.method in DISTILLERS:
        cls = DISTILLERS.get(row.method)
        cls.from_config(row.preset, **method_params(row))  # unknown preset / parameter -> ConfigError
    elif row.preset or set(row.set) - {"storage"}:
        raise ValueError(f"baseline {row.method!r} takes no preset, and of set only storage")
    if row.from_summary is not None and row.from_summary.split("/")[0] != suite:
        kept_summary_path(row)  # the named row's summary exists, unchanged
    if row.compact:  # option names / types now; the summary's kind when it is converted
        from datadistill.compact import VALUE_DTYPES, check_dtype

        if "dtype" in row.compact:
            check_dtype(row.compact["dtype"], VALUE_DTYPES)
        if "edge_dtype" in row.compact:
            check_dtype(row.compact["edge_dtype"], VALUE_DTYPES, "edge_dtype")
    if row.curve and row.method not in DISTILLERS:
        raise ValueError(f"a curve follows a distillation; baseline {row.method!r} has none")
    run_options(row)  # unknown / invalid run option -> ConfigError
    if row.kind == "accuracy":
        check_protocol(row)
    if row.robust is not None:
        check_robust(row)
    if row.kind == "speed" and row.method not in DISTILLERS:
        raise ValueError(f"speed rows time a distiller; {row.method!r} is a baseline")


def check_protocol(row) -> None:
    """Any image protocol registered in ``evaluation.PROTOCOLS``; other modalities have their
    own tables with the three shared names (paper, fast, smoke)."""
    from datadistill.data import DATASETS
    from datadistill.data.images import IMAGE_LOADERS
    from datadistill.evaluation import PROTOCOLS

    shared = ("paper", "fast", "smoke")
    ds = str(row.dataset).lower()
    if ds in DATASETS and ds not in IMAGE_LOADERS and row.protocol not in shared:
        raise ValueError(f"unknown protocol {row.protocol!r} for the non-image dataset "
                         f"{row.dataset!r}; known: {', '.join(shared)}")
    if row.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {row.protocol!r}; known: {', '.join(PROTOCOLS)}")


def check_robust(row) -> None:
    """What ``robust_scores`` would refuse after the distillation, refused before it: a dataset
    that is not images, a protocol without augmentation, an unknown full-data reference."""
    from datadistill.data import DATASETS
    from datadistill.data.images import IMAGE_LOADERS
    from datadistill.evaluation import get_protocol
    from datadistill.evaluation.reference import FULL_PRESETS

    ds = str(row.dataset).lower()
    if ds in DATASETS and ds not in IMAGE_LOADERS:
        raise ValueError(f"robust = true: DD-Ranking's scores are defined for image "
                         f"classification; {row.dataset!r} is not an image dataset")
    if not get_protocol(row.protocol).dsa:
        raise ValueError(f"robust = true needs a protocol with DSA ({row.protocol!r} has none)")
    full = row.robust.get("full", "auto")
    if isinstance(full, str) and full not in ("auto", "published") and full not in FULL_PRESETS:
        raise ValueError(f"robust full = {full!r}; known: auto, published, "
                         f"{', '.join(FULL_PRESETS)} (or a table of reference settings)")


# -- run options -------------------------------------------------------------------------------
def run_options(row):
    """The row's ``run`` table as ``RunOptions`` (unresolved: ``auto`` stays ``auto``)."""
    from datadistill.runtime import RunOptions

    return RunOptions.from_dict(row.run)


def prepare_process(row) -> None:
    """The thread count for this process before anything is measured (data loading included).
    The allocator is left to ``distill``/``evaluate`` (``perf.activate``), as in a user's run:
    tuned before the data loads, glibc would keep the loader's freed pages and the peak memory
    measured would not be the one a user sees."""
    threads = row.run.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


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

    return load_dataset(row.dataset, data_dir=data_dir(row))


def _distiller(row, **extra):
    from datadistill.distillers import create_distiller

    return create_distiller(row.method, row.preset, **{**method_params(row), **extra})


def distill_summary(row, real, seed: int, workdir: Path, *, resume: bool,
                    on_iteration: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Distil (or select, for a baseline) one summary into ``workdir/summary``; resumes from
    ``workdir``'s checkpoint when ``resume``. Returns {iterations (run), requested (asked for:
    the row's ``iterations`` or the method's default after its preset), stopped_early (the method
    ended the run itself, ``stopped_``, before ``requested``), stored_bytes, run}."""
    from datadistill import checkpoint as ckpt
    from datadistill.distillers.base import CHECKPOINT

    workdir.mkdir(parents=True, exist_ok=True)
    if row.from_summary is not None:  # another row's summary, evaluated under this row's protocol
        from datadistill.synsets import load_summary

        syn = load_summary(kept_summary_path(row))
        its = int(syn.meta.get("iterations") or 0)
        asked = (syn.meta.get("params") or {}).get("iterations")
        return {"iterations": its, **_store(row, syn, workdir), "run": None,
                "from_summary": row.from_summary, "requested": asked,
                "stopped_early": asked is not None and its < int(asked)}
    if is_baseline(row.method):
        syn = select_baseline(row, real, seed)
        if "storage" in row.set:  # real examples stored at a lower precision (fixed-bytes rows)
            syn.set_storage(row.set["storage"])
        return {"iterations": 0, **_store(row, syn, workdir), "run": None,
                "requested": None, "stopped_early": False}
    d = _distiller(row, seed=seed)
    syn = d.init_synset(real, **row.budget)
    syn.meta["dataset_source"] = row.dataset
    can_resume = resume and ckpt.exists(workdir, CHECKPOINT)
    callbacks = [on_iteration]
    if row.curve:  # the curve's snapshots, saved with their iteration's metadata
        points = set(row.curve)

        def snapshot(ev: dict[str, Any]) -> None:
            if ev["iteration"] in points:
                syn.save(curve_dir(workdir, ev["iteration"]))

        callbacks.append(snapshot)
    d.distill(real, syn, callbacks, workdir=workdir, resume=can_resume, run=run_options(row))
    its = int(syn.meta.get("iterations", d.iterations))
    stored = _store(row, syn, workdir) if row.compact else {"stored_bytes": int(syn.stored_bytes())}
    # ``stopped_``: the method ended the run by its own rule (``distillers/early_stop.py``)
    return {"iterations": its, **stored, "run": d.run_.to_dict(),
            "requested": int(d.iterations),
            "stopped_early": bool(getattr(d, "stopped_", False)) and its < d.iterations}


def _store(row, syn, workdir: Path) -> dict[str, Any]:
    """Save ``syn`` as the row's ``workdir/summary`` — converted by ``compact`` first when the
    row declares it (``compacted_from``: the bytes before) — and return its stored bytes."""
    dest = workdir / "summary"
    if not row.compact:
        syn.save(dest)
        return {"stored_bytes": int(syn.stored_bytes())}
    from datadistill.compact import compact

    small = compact(syn, **row.compact)
    if dest.exists():  # a fresh folder: nothing of the source's kind (generator...) stays beside
        shutil.rmtree(dest)
    small.save(dest)
    return {"stored_bytes": int(small.stored_bytes()), "compacted_from": int(syn.stored_bytes())}


def requested_iterations(method: str, preset: str | None = None,
                         params: dict[str, Any] | None = None) -> int | None:
    """The outer iterations a row of distiller ``method`` asks for: ``params["iterations"]``,
    else the method's default after ``preset`` (and the other ``params``); None for a baseline,
    or a name, preset or parameter the library does not know (any more)."""
    from datadistill.distillers import DISTILLERS
    from datadistill.errors import DatadistillError

    if method not in DISTILLERS:
        return None
    try:
        return int(DISTILLERS.get(method).from_config(preset, **(params or {})).iterations)
    except (DatadistillError, TypeError, ValueError):
        return None


def kept_summary_path(row) -> Path:
    """The folder of the summary ``row.from_summary`` ("<suite>/<row>[/s<seed>]") names: kept in
    ``bench/summaries`` or else in that row's run folder, checked against the sha256 its
    results record (the bench folder: ``DATADISTILL_BENCH_DIR``, set by the runner; else
    ./bench). Raises ValueError naming what is missing."""
    from . import results as res

    parts = row.from_summary.split("/")
    suite, rid, seed = parts[0], parts[1], int(parts[2][1:]) if len(parts) > 2 else 0
    root = Path(os.environ.get("DATADISTILL_BENCH_DIR", "bench")).resolve()
    rec = (res.load_results(root / "results" / f"{suite}.json") or {}).get("rows", {}).get(rid)
    if not rec or rec.get("status") != "done":
        raise ValueError(f"from_summary {row.from_summary!r}: row {rid!r} of suite {suite!r} has "
                         f"no finished result; run `python -m datadistill.bench run {suite} "
                         f"--only {rid}` first")
    want = next((s.get("sha256") for s in rec.get("summaries") or [] if s.get("seed") == seed), None)
    for folder in (root / "summaries" / suite / rid / f"s{seed}",
                   root / "runs" / suite / rid / f"s{seed}" / "summary"):
        tensors = folder / "summary.safetensors"
        if tensors.exists() and res.sha256_file(tensors) == want:
            return folder
    raise ValueError(f"from_summary {row.from_summary!r}: no summary with the recorded sha256 "
                     f"{want} in bench/summaries or bench/runs; rerun `python -m datadistill.bench "
                     f"run {suite} --only {rid}`")


def curve_dir(workdir: Path, iteration: int) -> Path:
    """Where a curve row keeps the summary of ``iteration`` (``workdir/curve/it<k>``)."""
    return workdir / "curve" / f"it{iteration}"


def checkpoint_iteration(workdir: Path) -> int:
    """The iteration a resumed run restarts from (the summary saved with the checkpoint)."""
    from datadistill import checkpoint as ckpt
    from datadistill.distillers.base import CHECKPOINT

    meta = workdir / "summary" / "summary.json"
    if not ckpt.exists(workdir, CHECKPOINT) or not meta.exists():
        return 0
    return int(json.loads(meta.read_text()).get("iterations") or 0)


def select_baseline(row, real, seed: int):
    from datadistill.baselines import select_baseline as select

    dev = row.run.get("device")
    return select(real, row.method, seed=seed, device=None if dev in (None, "auto") else dev,
                  **row.budget)


def evaluate_summary(row, real, seed: int, workdir: Path,
                     clock: Callable[[], float] | None = None, *,
                     summary_dir: Path | None = None, robust: bool = True) -> dict[str, Any]:
    """Evaluate ``workdir/summary`` under the row's protocol; {protocol, metric, per_model, run}
    and, for a ``robust`` row, ``robust``: DD-Ranking's scores (``robust_scores``, reusing this
    evaluation as "the summary's own evaluation") with the CPU / wall seconds they took beyond
    it (``clock``: the CPU clock the caller measures with). ``summary_dir``: another summary (a
    curve's snapshot) under the same protocol; ``robust=False`` skips the robust scores. Image
    models keep their training state in ``workdir/eval-state/`` (``evaluate``'s ``state_dir``):
    an interrupted evaluation continues under ``--resume``, with the same results."""
    import time

    from datadistill.evaluation import evaluate
    from datadistill.synsets import load_summary

    syn = load_summary(summary_dir if summary_dir is not None else workdir / "summary")
    run = run_options(row)
    # image models train for up to an hour each: keep their state, so --resume continues them
    state = (workdir / "eval-state" / (summary_dir.name if summary_dir is not None else "summary")
             if syn.info.modality == "image" else None)
    rep = evaluate(syn, real, models=row.models, protocol=row.protocol,
                   num_models=row.num_models, seed=seed, run=run, state_dir=state)
    proto = rep.protocol
    per_model = {m: {"accs": [float(a) for a in r["accs"]]} for m, r in rep.results.items()}
    metric = "nDCG@10 %" if syn.info.modality == "recsys" else "accuracy %"
    out = {"protocol": {"name": proto.get("name"), "epochs": proto.get("epochs"),
                        "num_models": proto.get("num_models")},
           "overrides": {k: str(v) for k, v in rep.overrides.items()},
           "metric": metric, "per_model": per_model, "run": dict(rep.run)}
    if rep.summary.get("resumed_cpu_s"):  # (models of an interrupted evaluation: their CPU then)
        out["resumed_cpu_s"] = rep.summary["resumed_cpu_s"]
    if row.robust is not None and robust:
        from datadistill.evaluation.robust import robust_scores

        c, w = (clock() if clock else 0.0), time.perf_counter()
        kw = {k: row.robust[k] for k in ("lrs_weight", "ars_weight") if k in row.robust}
        rob = robust_scores(syn, real, models=list(rep.results), protocol=row.protocol,
                            num_models=row.num_models, seed=seed,
                            full_reference=row.robust.get("full", "auto"), report=rep, run=run,
                            **kw)
        out["robust"] = {**rob, "cpu_s": round(clock() - c, 3) if clock else None,
                         "wall_s": round(time.perf_counter() - w, 3)}
    return out


# -- speed --------------------------------------------------------------------------------------
def time_iterations(row, real, on_iteration: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``warmup + timed`` iterations of the row's method (no checkpoints written);
    ``on_iteration`` is called after each. Returns the method's parameters and the resolved
    run options."""
    d = _distiller(row)
    syn = d.init_synset(real, **row.budget)
    d.distill(real, syn, [on_iteration], workdir=None, run=run_options(row))
    return {"params": dict(d.params()), "run": d.run_.to_dict(),
            "threads": torch.get_num_threads()}


def thread_count() -> int:
    return torch.get_num_threads()
