"""Speed rows timed outside this process, both through one small protocol (a command that prints
one JSON object, see ``legacy.py``):

- ``commit = "<git commit>"``: the library as of that commit (exported with ``git archive`` into
  ``bench/runs/_code/<commit>/`` and put first on ``PYTHONPATH``), timed by ``legacy.py`` with
  that commit's own API (before ``RunOptions``, speed settings were method parameters: they go in
  ``set`` or ``preset``);
- ``external = "<command>"``: any other program (e.g. a driver around the authors' code, kept
  outside the project), named by an environment variable in the suite.

Like the rest of ``datadistill.bench`` outside ``runner.py``, this never imports the library.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def data_dir(row) -> str | None:
    """The row's ``data_dir`` with ``~`` and environment variables expanded."""
    d = os.path.expandvars(os.path.expanduser(row.data_dir)) if row.data_dir else None
    if d is not None and "$" in d:
        raise ValueError(f"data_dir {row.data_dir!r}: set the environment variable it names")
    return d


def export_commit(commit: str, bench_root: Path) -> Path:
    """``src/`` of the library at ``commit`` (``git archive`` of the checkout holding
    ``bench_root``, else of the library's own checkout), exported once into
    ``bench/runs/_code/<commit>/``; returns that ``src``."""
    dest = bench_root / "runs" / "_code" / commit
    src = dest / "src"
    if (src / "datadistill" / "__init__.py").exists():
        return src
    for where in (bench_root, Path(__file__).resolve().parent):  # (else: this library's checkout)
        top = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True)
        if top.returncode == 0:
            break
    else:
        raise ValueError(f"commit = {commit!r}: neither {bench_root} nor the library is in a git "
                         f"checkout")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", top.stdout.strip(), "archive", "--format=tar", commit,
                              "src"], capture_output=True)
    if archive.returncode != 0:
        raise ValueError(f"commit = {commit!r}: git archive failed: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return src


def time_external(row, bench_root: Path) -> dict[str, Any]:
    """Time a ``commit`` or ``external`` row in a subprocess that prints one JSON object:
    ``{"marks": [[cpu_s, wall_s], ...]}`` (cumulative, first = before the first iteration, one
    per iteration after), ``peak_rss_bytes`` and ``info`` (what ran: version, parameters,
    provenance). The subprocess gets the row as JSON in ``DATADISTILL_BENCH_ROW``."""
    env = dict(os.environ)
    spec = {"method": row.method, "dataset": row.dataset, "data_dir": data_dir(row),
            "budget": row.budget, "preset": row.preset, "set": dict(row.set),
            "iterations": row.warmup + row.timed, "run": dict(row.run), "seed": 0}
    env["DATADISTILL_BENCH_ROW"] = json.dumps(spec)
    if row.run.get("threads"):
        env["OMP_NUM_THREADS"] = str(row.run["threads"])
    if row.commit:
        src = export_commit(row.commit, bench_root)
        env["PYTHONPATH"] = os.pathsep.join([str(src)] + [p for p in [env.get("PYTHONPATH")] if p])
        cmd = [sys.executable, str(Path(__file__).with_name("legacy.py"))]
    else:
        expanded = os.path.expandvars(row.external)
        if "$" in expanded:
            raise ValueError(f"external {row.external!r}: set the environment variable it names")
        cmd = shlex.split(expanded)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no JSON record")
    out = json.loads(lines[-1])
    marks = out["marks"]
    return {"cpu": [b[0] - a[0] for a, b in zip(marks, marks[1:])],
            "wall": [b[1] - a[1] for a, b in zip(marks, marks[1:])],
            "peak_rss_bytes": int(out["peak_rss_bytes"]), "info": out.get("info") or {}}
