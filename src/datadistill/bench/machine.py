"""What a result was measured on: CPU model, cores, threads, torch, git commit, date."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path) -> dict[str, object]:
    """Commit of the checkout holding ``root`` and whether tracked files differ from it
    (results, kept summaries and the report, which a run itself writes, do not count)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    top = Path(_git(root, "rev-parse", "--show-toplevel") or root)
    status = _git(top, "status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)bench/results", ":(exclude)bench/summaries", ":(exclude)BENCHMARKS.md")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def describe(root: Path, threads: int | None = None) -> dict[str, object]:
    """The environment record every results file and row carries."""
    import torch

    return {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        **git_state(root),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
