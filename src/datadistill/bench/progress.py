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
from pathlib import Path
from typing import Any


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
