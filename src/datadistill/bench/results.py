"""Results files: ``bench/results/<suite>.json``, one per suite, in one schema.

    {"schema": "datadistill.bench/1", "suite", "title", "notes", "units", "machine",
     "rows": {row_id: {"kind", "status", "declared", "env", ... measurements ...}}}

Accuracy rows hold ``accuracy`` {mean, std, n} over every model of every seed, ``per_model``
{arch: {mean, std, accs}}, ``iterations_run``, ``iterations_requested`` (the row's ``iterations``
or the method's default after its preset), ``stopped_early`` (the method ended its run itself
before that: ``Distiller.stopped_``), ``cpu_s`` / ``wall_s`` {distill, evaluate} (per
seed, averaged over seeds), ``peak_rss_bytes``, ``stored_bytes``, ``summaries`` [{seed,
stored_bytes, sha256, kept, rebuild}] and, for ``robust`` rows, ``robust`` {definition, source,
weights, protocol, rounds, full_reference, random, models: {arch: {full_acc, lrs, ars, hlr, ior,
aug_gap, noaug_gap: {mean, std, n, values}, accuracies}}, cpu_s} (its CPU-seconds also in
``cpu_s.robust``); ``curve`` rows hold ``curve`` [{iterations, accuracy {mean, std, n}, model,
distill_cpu_s, evaluate_cpu_s}], the row's own evaluation last. Speed rows hold ``cpu_s_per_iter`` / ``wall_s_per_iter`` {median, all} and
``peak_rss_bytes``. A value that was not measured is ``null``, never a guess. The file is
rewritten atomically after every row, so an interrupted suite loses at most the running row.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

SCHEMA = "datadistill.bench/1"
UNITS = {
    "cpu_s": "CPU-seconds: process CPU time (user + sys) of all threads, waited-for worker "
             "processes included; the row's env.threads says how many threads",
    "wall_s": "seconds of wall-clock time (depends on the machine's load; not a speed figure)",
    "peak_rss_bytes": "bytes: peak resident set size of the row's process",
    "accuracy": "% on the real test split, final model after the protocol's fixed schedule "
                "(recommender rows: nDCG@10 %), mean ± population std over models and seeds",
    "stored_bytes": "bytes of the summary's own tensors",
    "robust": "DD-Ranking's label-robust (lrs) and augmentation-robust (ars) scores in % "
              "(0-100); hlr, ior and the gaps to random in percentage points; mean ± population "
              "std over rounds (rows with robust = true)",
}
KEEP_LIMIT = 200_000  # summaries smaller than this are copied into bench/summaries/


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a bench folder keeps things (``root`` is usually the checkout's ``bench/``)."""

    root: Path

    @property
    def suites(self) -> Path:
        return self.root / "suites"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:  # git-ignored: run folders, checkpoints, large summaries
        return self.root / "runs"

    @property
    def summaries(self) -> Path:  # committed: the small summaries a results row cites
        return self.root / "summaries"

    def results_file(self, suite: str) -> Path:
        return self.results / f"{suite}.json"

    def run_dir(self, suite: str, row: str, seed: int | None = None) -> Path:
        d = self.runs / suite / row
        return d if seed is None else d / f"s{seed}"


def new_results(suite, machine: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "suite": suite.name, "title": suite.title, "notes": suite.notes,
            "units": UNITS, "machine": machine, "rows": {}}


def load_results(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a {SCHEMA} results file (schema {data.get('schema')!r})")
    return data


def save_results(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def save_rows(path: Path, data: dict[str, Any], rows: Iterable[str],
              keep: Iterable[str] | None = None) -> Path:
    """Write ``data`` with only ``rows`` taken from it: every other row comes from the file as it
    is on disk now, so two runs of one suite (``--only`` different rows, in two shells) do not
    overwrite each other's results. ``keep``: the row ids the suite declares (others dropped).
    The read-modify-write holds an exclusive lock on ``<path>.lock``."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".json.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            on_disk = load_results(path)
        except (ValueError, json.JSONDecodeError):
            on_disk = None
        merged = dict((on_disk or {}).get("rows") or {})
        mine = set(rows)
        merged.update({k: v for k, v in data["rows"].items() if k in mine})
        if keep is not None:
            keep = list(keep)
            merged = {k: merged[k] for k in keep if k in merged}
        return save_results(path, {**data, "rows": merged})


def all_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every results file in the folder, sorted by suite name (files of other schemas skipped)."""
    out = []
    for p in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out.append(data)
    return out


def sha256_file(path: Path) -> str:
    from ..data.files import file_hash
    return file_hash(path, "sha256")


def keep_summary(summary_dir: Path, layout: Layout, suite: str, row: str, seed: int,
                 stored_bytes: int | None) -> dict[str, Any]:
    """Record a summary a row cites: its sha256 (of the tensor file) and, when the folder is
    under ``KEEP_LIMIT`` bytes, a copy in ``bench/summaries/<suite>/<row>/s<seed>/``."""
    tensors = summary_dir / "summary.safetensors"
    size = sum(p.stat().st_size for p in summary_dir.iterdir() if p.is_file())
    rec: dict[str, Any] = {
        "seed": seed, "stored_bytes": stored_bytes, "file_bytes": size,
        "sha256": sha256_file(tensors) if tensors.exists() else None,
        "rebuild": f"python -m datadistill.bench run {suite} --only {row}", "kept": None,
    }
    if size < KEEP_LIMIT:
        dest = layout.summaries / suite / row / f"s{seed}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for p in summary_dir.iterdir():
            if p.is_file() and not p.name.endswith(".tmp"):
                shutil.copy2(p, dest / p.name)
        rec["kept"] = str(dest.relative_to(layout.root.parent)) \
            if dest.is_relative_to(layout.root.parent) else str(dest)
    return rec
