"""Running a suite: one child process per row, ``--resume``, the results file, kept summaries.

The parent (``run_suite``) decides which rows run, starts ``python -m datadistill.bench _row``
for each and merges the record the child writes into ``bench/results/<suite>.json``. The child
(``run_row``) does the work and measures itself: CPU time of its own threads and of the worker
processes it waited for, wall time, peak RSS. Within a row, each seed's distillation keeps a
checkpoint and a per-iteration CPU log in ``bench/runs/<suite>/<row>/s<seed>/``, so a resumed
row continues from its checkpoint and counts each iteration's CPU time once.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import results as res
from .machine import describe
from .suites import Row, Suite, load_suite


# -- measuring ----------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its waited-for children, user + sys."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def peak_rss_bytes() -> int:
    """Peak RSS of this process or of its largest waited-for child, whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(max(own, kids)) * (1 if sys.platform == "darwin" else 1024)


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0 if values else None,
            "n": len(values)}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# -- the child: one row ---------------------------------------------------------------------------
def _distill_seed(row: Row, real, seed: int, sdir: Path, resume: bool, runner) -> dict[str, Any]:
    """Distil one seed, resuming from the checkpoint in ``sdir``; CPU/wall counted once per
    iteration across interruptions (``progress.jsonl`` holds the running totals)."""
    done = sdir / "distilled.json"
    if resume and done.exists():
        return json.loads(done.read_text())
    log_path = sdir / "progress.jsonl"
    base_cpu = base_wall = 0.0
    if resume and sdir.exists():  # (a row that never started has nothing to resume from)
        start = runner.checkpoint_iteration(sdir)
        entries = [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.exists() else []
        entries = [e for e in entries if e["iteration"] <= start]
        if entries:
            base_cpu, base_wall = entries[-1]["cpu_s"], entries[-1]["wall_s"]
        log_path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    elif sdir.exists():
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True, exist_ok=True)
    c0, w0 = cpu_seconds(), time.perf_counter()
    with open(log_path, "a") as log:
        def on_iteration(ev: dict[str, Any]) -> None:
            log.write(json.dumps({"iteration": ev["iteration"],
                                  "cpu_s": round(base_cpu + cpu_seconds() - c0, 3),
                                  "wall_s": round(base_wall + time.perf_counter() - w0, 3)}) + "\n")
            log.flush()

        out = runner.distill_summary(row, real, seed, sdir, resume=resume, on_iteration=on_iteration)
    rec = {**out, "cpu_s": round(base_cpu + cpu_seconds() - c0, 3),
           "wall_s": round(base_wall + time.perf_counter() - w0, 3),
           "peak_rss_bytes": peak_rss_bytes(), "resumed": resume and (base_cpu > 0)}
    _write_json(done, rec)
    return rec


def _curve_points(row: Row, real, seed: int, sdir: Path, runner) -> list[dict[str, Any]]:
    """Evaluate the snapshots a ``curve`` row's distillation saved; each point: iterations,
    the distillation CPU/wall seconds up to it (``progress.jsonl``) and the per-model
    accuracies. A point's record is kept in ``curve/it<k>.json`` so a resumed row skips it."""
    if not row.curve:
        return []
    progress = {}
    log = sdir / "progress.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            e = json.loads(line)
            progress[e["iteration"]] = e
    points = []
    for k in row.curve:
        done = sdir / "curve" / f"it{k}.json"
        if done.exists():
            points.append(json.loads(done.read_text()))
            continue
        snap = runner.curve_dir(sdir, k)
        if not snap.exists():
            raise RuntimeError(f"{row.id}: no snapshot of iteration {k} in {snap}")
        c = cpu_seconds()
        ev = runner.evaluate_summary(row, real, seed, sdir, summary_dir=snap, robust=False)
        p = progress.get(k, {})
        point = {"iterations": k, "distill_cpu_s": p.get("cpu_s"), "distill_wall_s": p.get("wall_s"),
                 "evaluate_cpu_s": round(cpu_seconds() - c + ev.get("resumed_cpu_s", 0.0), 3),
                 "per_model": ev["per_model"], "protocol": ev["protocol"]}
        _write_json(done, point)
        points.append(point)
    return points


def _pool_curve(row: Row, per_seed: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The curve's points pooled over seeds (accuracies of the headline model; CPU-seconds:
    mean over seeds), with the row's own evaluation as the last point."""
    if not row.curve:
        return None
    out = []
    for i, k in enumerate(row.curve):
        pts = [r["curve"][i] for r in per_seed if len(r.get("curve") or []) > i]
        model = next(iter(pts[0]["per_model"]))
        accs = [a for p in pts for a in p["per_model"][model]["accs"]]
        cpu = [p["distill_cpu_s"] for p in pts if p.get("distill_cpu_s") is not None]
        out.append({"iterations": k, "accuracy": _stats(accs), "model": model,
                    "distill_cpu_s": round(statistics.fmean(cpu), 3) if cpu else None,
                    "evaluate_cpu_s": round(statistics.fmean(p["evaluate_cpu_s"] for p in pts), 3)})
    return out


def _accuracy_row(row: Row, suite: str, layout: res.Layout, resume: bool, runner) -> dict[str, Any]:
    per_seed = []
    real = None
    data_cpu = 0.0
    for seed in row.seeds:
        sdir = layout.run_dir(suite, row.id, seed)
        finished = sdir / "seed.json"
        if resume and finished.exists():
            per_seed.append(json.loads(finished.read_text()))
            continue
        if real is None:
            c = cpu_seconds()
            real = runner.load_real(row)
            data_cpu = cpu_seconds() - c
        dist = _distill_seed(row, real, seed, sdir, resume, runner)
        curve = _curve_points(row, real, seed, sdir, runner)
        c, w = cpu_seconds(), time.perf_counter()
        ev = runner.evaluate_summary(row, real, seed, sdir, clock=cpu_seconds)
        rob = ev.get("robust") or {}  # (its own seconds, beyond the plain evaluation)
        rec = {"seed": seed, "distill": dist, "evaluate": {
            "cpu_s": round(cpu_seconds() - c - (rob.get("cpu_s") or 0.0)
                           + ev.get("resumed_cpu_s", 0.0), 3),
            "wall_s": round(time.perf_counter() - w - (rob.get("wall_s") or 0.0), 3),
            "peak_rss_bytes": peak_rss_bytes()}, **ev}
        if curve:
            rec["curve"] = curve
        rec["summary"] = res.keep_summary(sdir / "summary", layout, suite, row.id, seed,
                                          dist.get("stored_bytes"))
        _write_json(finished, rec)
        per_seed.append(rec)
    models: dict[str, list[float]] = {}
    for rec in per_seed:
        for m, r in rec["per_model"].items():
            models.setdefault(m, []).extend(r["accs"])
    per_model = {m: {**_stats(a), "accs": a} for m, a in models.items()}
    first = per_seed[0]
    mean = lambda key, part: round(statistics.fmean(r[part][key] for r in per_seed), 3)  # noqa: E731
    robust = _pool_robust([r["robust"] for r in per_seed if r.get("robust")])
    stops = [r["distill"].get("stopped_early") for r in per_seed]
    curve = _pool_curve(row, per_seed)
    if curve is not None:  # the row's own evaluation closes the curve
        model = next(iter(models))
        curve.append({"iterations": min(r["distill"]["iterations"] for r in per_seed),
                      "accuracy": _stats(models[model]), "model": model,
                      "distill_cpu_s": mean("cpu_s", "distill"),
                      "evaluate_cpu_s": mean("cpu_s", "evaluate")})
    return {
        "metric": first["metric"], "protocol": first["protocol"], "overrides": first["overrides"],
        "accuracy": _stats(models[next(iter(models))]),  # the first architecture is the headline
        "accuracy_model": next(iter(models)),
        "per_model": per_model,
        "iterations_run": min(r["distill"]["iterations"] for r in per_seed),
        # what was asked for; stopped_early: a seed's method ended its run by its own rule
        "iterations_requested": first["distill"].get("requested"),
        **({"stopped_early": any(stops)} if None not in stops else {}),  # (older seeds: unknown)
        "cpu_s": {"distill": mean("cpu_s", "distill"), "evaluate": mean("cpu_s", "evaluate"),
                  **({"robust": robust["cpu_s"]} if robust else {}),
                  "data": round(data_cpu, 3), "per": "seed (mean over seeds)"},
        "wall_s": {"distill": mean("wall_s", "distill"), "evaluate": mean("wall_s", "evaluate")},
        "peak_rss_bytes": max(max(r["distill"]["peak_rss_bytes"], r["evaluate"]["peak_rss_bytes"])
                              for r in per_seed),
        "stored_bytes": first["distill"].get("stored_bytes"),
        # a ``compact`` row: the bytes of the summary before its conversion
        **({"compacted_from": first["distill"]["compacted_from"]}
           if first["distill"].get("compacted_from") is not None else {}),
        **({"robust": robust} if robust else {}),
        **({"curve": curve} if curve is not None else {}),
        "run_resolved": {"distill": first["distill"].get("run"), "evaluate": first.get("run")},
        "summaries": [r["summary"] for r in per_seed],
        "seeds": [{"seed": r["seed"], "iterations": r["distill"]["iterations"],
                   "distill_cpu_s": r["distill"]["cpu_s"], "evaluate_cpu_s": r["evaluate"]["cpu_s"],
                   "resumed": r["distill"].get("resumed", False),
                   "stopped_early": r["distill"].get("stopped_early")} for r in per_seed],
    }


#: the per-round robust figures (``robust_scores``' ``models[m]``) pooled over seeds
ROBUST_FIGURES = ("lrs", "ars", "hlr", "ior", "aug_gap", "noaug_gap")


def _pool_robust(per_seed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One seed's ``robust_scores`` output, or several seeds' pooled: each figure's per-round
    values over all seeds (mean, population std, n), the accuracies behind them, the protocol
    and references as recorded (the first seed's), CPU-seconds per seed (mean)."""
    if not per_seed:
        return None
    first = per_seed[0]
    models: dict[str, Any] = {}
    for m in first["models"]:
        recs = [s["models"][m] for s in per_seed if m in s.get("models", {})]
        entry: dict[str, Any] = {"full_acc": recs[0].get("full_acc")}
        for k in ROBUST_FIGURES:
            vals = [float(v) for r in recs for v in (r.get(k) or {}).get("values", [])]
            entry[k] = {**_stats(vals), "values": vals}
        entry["accuracies"] = {a: [x for r in recs for x in (r.get("accuracies") or {}).get(a, [])]
                               for a in (recs[0].get("accuracies") or {})}
        models[m] = entry
    cpu = [s["cpu_s"] for s in per_seed if s.get("cpu_s") is not None]
    proto = first.get("protocol") or {}
    return {
        **{k: first.get(k) for k in ("definition", "source", "weights", "units", "full_reference",
                                     "random", "summary_labels")},
        "protocol": {k: proto.get(k) for k in ("name", "epochs", "num_models", "dsa", "lr",
                                               "dsa_strategy") if k in proto},
        "rounds": sum(int(s.get("rounds") or 0) for s in per_seed), "seeds": len(per_seed),
        "models": models,
        "cpu_s": round(statistics.fmean(cpu), 3) if cpu else None,
        "per": "rounds pooled over seeds; cpu_s per seed (mean), beyond the plain evaluation",
    }


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


def run_suite(suite: Suite, layout: res.Layout, *, resume: bool = False,
              only: Iterable[str] | None = None, log: Callable[[str], None] = print) -> int:
    """Run the suite's rows (``only``: just those); returns the number of failed rows. Rows
    with ``repeats > 1`` run round by round: round 1 of every row, then round 2, ... so that the
    variants a speed suite compares alternate in time."""
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
            proc = subprocess.run(cmd, env=_child_env(row), capture_output=True, text=True)
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
