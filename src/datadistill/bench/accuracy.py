"""An accuracy row in its child process: each seed's distillation (resumed from its checkpoint,
CPU counted once), the snapshots of a ``curve``, the evaluation, and the seeds pooled into the
row's record (accuracy per model, curve points, robust scores)."""
from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from . import results as res
from .measure import cpu_seconds, peak_rss_bytes, stats as _stats, write_json as _write_json
from .suites import Row


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
