"""Running a suite: one child process per row, ``--resume``, the results file, kept summaries.

The parent (``run_suite``) decides which rows run, starts ``python -m datadistill.bench _row``
for each and merges the record the child writes into ``bench/results/<suite>.json``. The child
(``run_row``) does the work and measures itself: CPU time of its own threads and of the worker
processes it waited for, wall time, peak RSS. Within a row, each seed's distillation keeps a
checkpoint and a per-iteration CPU log in ``bench/runs/<suite>/<row>/s<seed>/``, so a resumed
row continues from its checkpoint and counts each iteration's CPU time once (accuracy rows:
``accuracy.py``; the measuring helpers: ``measure.py``; speed rows: here).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import results as res
from .accuracy import _accuracy_row
from .machine import describe
from .measure import cpu_seconds, current_rss_bytes, peak_rss_bytes, write_json as _write_json
from .suites import Row, Suite, load_suite


def _speed_row(row: Row, runner, layout: res.Layout) -> dict[str, Any]:
    if runner.is_out_of_process(row):
        return _external_speed_row(row, runner, layout)
    real = runner.load_real(row)
    marks: list[tuple[float, float]] = []
    rss_before = current_rss_bytes()
    c0, w0 = cpu_seconds(), time.perf_counter()
    info = runner.time_iterations(row, real, lambda ev: marks.append((cpu_seconds(), time.perf_counter())))
    points = [(c0, w0)] + marks
    cpu = [b[0] - a[0] for a, b in zip(points, points[1:])][row.warmup:]
    wall = [b[1] - a[1] for a, b in zip(points, points[1:])][row.warmup:]
    return {"iterations_timed": len(cpu), "warmup": row.warmup,
            "cpu_s_per_iter": {"median": round(statistics.median(cpu), 4) if cpu else None,
                               "all": [round(x, 4) for x in cpu]},
            "wall_s_per_iter": {"median": round(statistics.median(wall), 4) if wall else None,
                                "all": [round(x, 4) for x in wall]},
            "peak_rss_bytes": peak_rss_bytes(), "rss_before_bytes": rss_before,
            "params": info["params"], "run_resolved": info["run"], "vs": row.vs}


def _external_speed_row(row: Row, runner, layout: res.Layout) -> dict[str, Any]:
    """A ``commit`` / ``external`` row: the subprocess measures itself (``time_external``)."""
    out = runner.time_external(row, layout.root)
    cpu, wall = out["cpu"][row.warmup:], out["wall"][row.warmup:]
    return {"iterations_timed": len(cpu), "warmup": row.warmup,
            "cpu_s_per_iter": {"median": round(statistics.median(cpu), 4) if cpu else None,
                               "all": [round(x, 4) for x in cpu]},
            "wall_s_per_iter": {"median": round(statistics.median(wall), 4) if wall else None,
                                "all": [round(x, 4) for x in wall]},
            "peak_rss_bytes": out["peak_rss_bytes"], "rss_before_bytes": None,
            "params": (out["info"] or {}).get("params"), "run_resolved": None,
            "provenance": {k: v for k, v in out["info"].items() if k != "params"},
            "commit": row.commit, "external": row.external, "vs": row.vs}


def run_row(suite_path: Path, row_id: str, layout: res.Layout, resume: bool) -> dict[str, Any]:
    """Child-process entry: run one row, write ``runs/<suite>/<row>/record.json``, return it."""
    from . import runner

    suite = load_suite(suite_path, check=False)
    row = suite.row(row_id)
    runner.check_row(row, suite.name)
    runner.prepare_process(row)  # threads and allocator, before anything is measured
    env = describe(layout.root, runner.thread_count())
    body = _speed_row(row, runner, layout) if row.kind == "speed" else \
        _accuracy_row(row, suite.name, layout, resume, runner)
    record = {"id": row.id, "kind": row.kind, "status": "done", "declared": row.declared(),
              "method": row.method, "label": row.label or row.method, "dataset": row.dataset,
              "budget": row.budget, "run": dict(row.run), "env": env,
              "published": dict(row.published), "iterations_published": row.published.get("iterations"),
              "source": {"command": f"python -m datadistill.bench run {suite.name} --only {row.id}"},
              **body}
    out = layout.run_dir(suite.name, row.id) / "record.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(out, record)
    return record


# -- the parent: a suite --------------------------------------------------------------------------
def _child_env(row: Row) -> dict[str, str]:
    env = dict(os.environ)
    if row.run.get("threads"):
        env["OMP_NUM_THREADS"] = str(row.run["threads"])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _fold_round(prev: dict[str, Any] | None, rec: dict[str, Any], repeats: int) -> dict[str, Any]:
    """A repeated speed row's record after one more round: every round's timed iterations
    pooled (median over all), each round's median and the spread between rounds kept."""
    rounds = list((prev or {}).get("rounds") or []) + [{
        "cpu_s_per_iter": rec["cpu_s_per_iter"]["all"], "wall_s_per_iter": rec["wall_s_per_iter"]["all"],
        "peak_rss_bytes": rec["peak_rss_bytes"], "date": (rec.get("env") or {}).get("date")}]

    def pooled(key):
        vals = [x for r in rounds for x in r[key]]
        meds = [round(statistics.median(r[key]), 4) for r in rounds if r[key]]
        return {"median": round(statistics.median(vals), 4) if vals else None, "all": vals,
                "round_medians": meds,
                "spread": round((max(meds) - min(meds)) / statistics.median(meds), 4) if meds else None}

    return {**rec, "rounds": rounds, "repeats": repeats,
            "cpu_s_per_iter": pooled("cpu_s_per_iter"), "wall_s_per_iter": pooled("wall_s_per_iter"),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rounds),
            "status": "done" if len(rounds) >= repeats else "running"}


def _run_child(cmd: list[str], row: Row, run_dir: Path, log: Callable[[str], None],
               every: float | None) -> subprocess.CompletedProcess:
    """Run one row's child; every ``every`` seconds, log what it is doing when that changed
    (``progress.row_progress``; None: silent)."""
    from .progress import PID_FILE, row_progress

    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / PID_FILE
    with subprocess.Popen(cmd, env=_child_env(row), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        pid_file.write_text(f"{proc.pid}\n")  # (``list`` tells running from interrupted by it)
        try:
            said = None
            while True:
                try:
                    out, err = proc.communicate(timeout=every)
                    break
                except subprocess.TimeoutExpired:
                    now = row_progress(run_dir, row.iterations)
                    if now and now != said:
                        log(now)
                        said = now
        finally:
            pid_file.unlink(missing_ok=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_suite(suite: Suite, layout: res.Layout, *, resume: bool = False,
              only: Iterable[str] | None = None, log: Callable[[str], None] = print,
              progress_every: float | None = 300.0) -> int:
    """Run the suite's rows (``only``: just those); returns the number of failed rows. Rows
    with ``repeats > 1`` run round by round: round 1 of every row, then round 2, ... so that the
    variants a speed suite compares alternate in time. While a row runs, what it is doing is
    logged every ``progress_every`` seconds when it changed (None: not)."""
    wanted = [suite.row(r).id for r in only] if only else [r.id for r in suite.rows]
    path = layout.results_file(suite.name)
    old = res.load_results(path)
    data = res.new_results(suite, describe(layout.root))
    declared = [r.id for r in suite.rows]
    if old is not None and (resume or only):
        data["rows"] = {k: v for k, v in old["rows"].items() if k in set(declared)}

    def declared_now() -> list[str]:
        """The suite's rows as its file declares them now (a row added while this run goes on
        is kept); the rows it declared at the start if the file no longer reads."""
        try:
            return [r.id for r in load_suite(suite.path, check=False).rows]
        except Exception:  # noqa: BLE001 - an edit in progress must not lose this row's result
            return declared
    failed: set[str] = set()
    rounds = max((r.repeats for r in suite.rows if r.id in wanted), default=1)
    for rnd in range(rounds):
        for row in suite.rows:
            if row.id not in wanted or rnd >= row.repeats or row.id in failed:
                continue
            prev = data["rows"].get(row.id)
            if resume and prev is not None and prev.get("status") == "done":
                if rnd == 0:
                    log(f"[bench] {suite.name}/{row.id}: done, skipped")
                continue
            done_rounds = len((prev or {}).get("rounds") or [])
            if row.repeats > 1 and (resume or rnd > 0) and rnd < done_rounds:
                continue  # this round is in the record already
            if rnd == 0 and not (resume and done_rounds):
                if not resume and layout.run_dir(suite.name, row.id).exists():
                    shutil.rmtree(layout.run_dir(suite.name, row.id))
                prev = None
                data["rows"][row.id] = {"id": row.id, "kind": row.kind, "status": "running",
                                        "declared": row.declared()}
                res.save_rows(path, data, [row.id], keep=declared_now())
            tag = f" (round {rnd + 1} of {row.repeats})" if row.repeats > 1 else ""
            log(f"[bench] {suite.name}/{row.id}{tag}: {row.kind} {row.method} on {row.dataset} "
                f"{row.budget} ...")
            cmd = [sys.executable, "-m", "datadistill.bench", "--bench-dir", str(layout.root),
                   "_row", str(suite.path), row.id] + (["--resume"] if resume else [])
            record_file = layout.run_dir(suite.name, row.id) / "record.json"
            record_file.unlink(missing_ok=True)  # (a previous round's)
            proc = _run_child(cmd, row, layout.run_dir(suite.name, row.id),
                              lambda text, r=row: log(f"[bench] {suite.name}/{r.id}: {text}"),
                              progress_every)
            if proc.returncode == 0 and record_file.exists():
                rec = json.loads(record_file.read_text())
                if row.repeats > 1:
                    rec = _fold_round(prev if prev and prev.get("rounds") else None, rec, row.repeats)
                data["rows"][row.id] = rec
                log(f"[bench] {suite.name}/{row.id}{tag}: done")
            else:
                failed.add(row.id)
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
                data["rows"][row.id] = {**(data["rows"].get(row.id) or {}), "status": "failed",
                                        "error": "\n".join(tail)}
                log(f"[bench] {suite.name}/{row.id}: FAILED (exit {proc.returncode})\n  "
                    + "\n  ".join(tail))
            res.save_rows(path, data, [row.id], keep=declared_now())
    log(f"[bench] wrote {path}")
    return len(failed)
