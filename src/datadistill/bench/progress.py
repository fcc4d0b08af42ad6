"""What a running row is doing, read by the parent from the files its child keeps.

A row can run for hours (KFS at the bytes of 500 images per class trains one evaluation model on
~80,000 images for ~11 CPU-hours), and the child's output is only read when it ends. So the
parent looks into the row's run folder now and then and logs one line when something moved:
per seed, the distillation's last iteration and its CPU-seconds (``progress.jsonl``), the curve
points evaluated (``curve/it<k>.json``), and each evaluation model's epoch and CPU-seconds
(``eval-state/<summary>/<model>/train.json``; ``result.json`` once it is tested). Reading is
best-effort: a file caught half-written is skipped until the next look.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: the row's child process id, in its run folder while it runs (``execute._run_child``)
PID_FILE = "child.pid"


def row_alive(run_dir: Path) -> bool:
    """Whether the process that runs the row kept in ``run_dir`` is alive on this machine: its
    pid file names a live process whose command line is a benchmark row (a pid reused by another
    program does not count)."""
    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().split()[0])
        if pid <= 0:  # (0 or negative would signal a process group)
            return False
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's: its command line says whose
        pass
    except (OSError, ValueError, IndexError):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # (no /proc: the live pid is taken at its word)
        return True
    return b"datadistill.bench" in cmd and b"_row" in cmd


def row_state(run_dir: Path, iterations: int | None = None) -> str:
    """What ``list`` says of a row its results mark as started and not finished: ``running``
    (its process is alive here) or ``interrupted`` (its process ended without a record), with
    what its files got to; with no run folder here, that ``--resume`` starts it over."""
    now = row_progress(run_dir, iterations)
    if row_alive(run_dir):
        return "running" + (f" ({now})" if now else "")
    if not Path(run_dir).is_dir():
        return "interrupted (no run state on this machine: `run --resume` starts it over)"
    return "interrupted" + (f" ({now}; `run --resume` continues it)" if now
                            else " (`run --resume` continues it)")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _evaluation(sdir: Path) -> str | None:
    """``<summary>: model <name> epoch <e>[ of <n>] (<cpu> CPU-s), <done> tested`` for the
    evaluation in progress (the last summary folder with an untested model)."""
    root = sdir / "eval-state"
    if not root.is_dir():
        return None
    out = None
    for which in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime):
        models = sorted(p for p in which.iterdir() if p.is_dir())
        tested = sum((m / "result.json").exists() for m in models)
        running = [m for m in models if not (m / "result.json").exists()]
        text = f"{which.name}: {tested} model(s) tested"
        for m in running:
            state = (_json(m / "train.json") or {}).get("state") or {}
            if "epoch" in state:
                total = f" of {state['passes']}" if state.get("passes") else ""
                text = (f"{which.name}: model {m.name} at epoch {state['epoch']}{total} "
                        f"({float(state.get('cpu_s') or 0):.0f} CPU-s), {tested} tested")
        out = text
    return out


def row_progress(run_dir: Path, iterations: int | None = None) -> str | None:
    """One line on each seed of the row kept in ``run_dir`` (None: nothing to tell yet)."""
    parts = []
    for sdir in sorted(p for p in Path(run_dir).glob("s*") if p.is_dir() and p.name[1:].isdigit()):
        seed = f"seed {sdir.name[1:]}"
        if (sdir / "seed.json").exists():
            parts.append(f"{seed}: done")
            continue
        if not (sdir / "distilled.json").exists():
            last = _last_line(sdir / "progress.jsonl")
            if last and "iteration" in last:
                of = f" of {iterations}" if iterations else ""
                parts.append(f"{seed}: distilling, iteration {last['iteration']}{of} "
                             f"({float(last.get('cpu_s') or 0):.0f} CPU-s)")
            continue
        curve = sorted(int(p.stem[2:]) for p in (sdir / "curve").glob("it*.json")
                       if p.stem[2:].isdigit())
        ev = _evaluation(sdir)
        text = f"{seed}: distilled" + (f", curve points done: {curve}" if curve else "")
        parts.append(text + (f"; evaluating {ev}" if ev else ""))
    return "; ".join(parts) or None
