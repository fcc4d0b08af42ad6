"""What the report reads from a run folder, as plain data (``RunData``).

A run folder (``datadistill distill --out`` / ``baseline --out``) holds ``summary/``, maybe
``run.json`` (the command), ``log.jsonl`` (one JSON object per logged iteration: ``iteration``,
``elapsed``, ``cpu_s``, the method's metrics such as ``loss``, and ``accuracy`` where an
evaluation ran during distillation) and evaluation results: every ``*.json`` file in the folder
(or below ``evaluations/``) that holds an evaluation report (``protocol`` + ``results``),
as ``datadistill evaluate RUN`` writes them. A summary folder alone is a run without a log.

A benchmark row's seed folder (``bench/runs/<suite>/<row>/s<seed>``: ``summary/``,
``progress.jsonl`` with the CPU-seconds of every iteration, ``seed.json`` with the row's
evaluation and robust scores) is read as a run too, so a report can show the very runs whose
numbers ``BENCHMARKS.md`` prints.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import SummaryFormatError
from ..synsets import load_summary
from ..synsets.base import META_FILE, SyntheticSet

LOG_FILE = "log.jsonl"
BENCH_LOG, BENCH_RECORD = "progress.jsonl", "seed.json"
EVAL_DIR = "evaluations"
_NOT_EVALS = {"run.json", "checkpoint.json", META_FILE}


@dataclasses.dataclass
class RunData:
    path: Path
    name: str
    syn: SyntheticSet
    command: dict[str, Any]
    log: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]

    @property
    def meta(self) -> dict[str, Any]:
        return self.syn.meta

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or self.command.get("method") or "?")

    @property
    def dataset(self) -> str:
        return self.syn.info.name

    @property
    def modality(self) -> str:
        return self.syn.info.modality

    @property
    def ipc(self) -> float:
        return float(self.syn.ipc)

    @property
    def stored_bytes(self) -> int:
        return int(self.syn.stored_bytes())

    def cpu_seconds(self) -> tuple[float | None, str]:
        """Distillation CPU time and how it was obtained: ``measured`` (process CPU time logged
        in ``log.jsonl``), ``wall x threads`` (an upper bound from the summary's wall time and
        thread count) or ``none`` (a baseline selected without a log)."""
        cpu = [e["cpu_s"] for e in self.log if isinstance(e.get("cpu_s"), (int, float))]
        if cpu:
            return float(cpu[-1]), "measured"
        wall = self.meta.get("wall_time_s")
        if isinstance(wall, (int, float)):
            threads = (self.meta.get("run") or {}).get("threads") or 1
            return float(wall) * float(threads), "wall x threads"
        return None, "none"

    def series(self, key: str) -> list[tuple[float, float]]:
        """(iteration, value) of one logged metric."""
        return [(float(e["iteration"]), float(e[key])) for e in self.log
                if "iteration" in e and isinstance(e.get(key), (int, float))]

    def metric_names(self) -> list[str]:
        skip = {"iteration", "iterations", "elapsed", "cpu_s", "wall_s"}
        names: list[str] = []
        for e in self.log:
            for k, v in e.items():
                if k not in skip and isinstance(v, (int, float)) and k not in names:
                    names.append(k)
        return names


def _summary_dir(path: Path) -> Path:
    if (path / "summary" / META_FILE).exists():
        return path / "summary"
    if (path / META_FILE).exists():
        return path
    raise SummaryFormatError(f"{path} is neither a run folder (with summary/) nor a summary folder")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON-lines log; a line cut short by a crash is skipped."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(e, dict):
                out.append(e)
    return out


def is_evaluation(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("protocol"), dict) \
        and isinstance(obj.get("results"), dict)


def read_evaluations(folder: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in folder.glob("*.json") if p.name not in _NOT_EVALS)
    files += sorted((folder / EVAL_DIR).glob("*.json")) if (folder / EVAL_DIR).is_dir() else []
    out = []
    for p in files:
        try:
            obj = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        if is_evaluation(obj):
            out.append({**obj, "_file": p.name})
    return out


def bench_evaluation(record: dict[str, Any]) -> dict[str, Any] | None:
    """A benchmark seed record (``seed.json``) as an evaluation report: its protocol (with the
    protocol's augmentation, from the library's definition of that name), per-model accuracies
    (mean, population std) and, for a robust row, its DD-Ranking scores."""
    import statistics

    from ..evaluation import PROTOCOLS

    per_model = record.get("per_model")
    if not isinstance(per_model, dict) or not isinstance(record.get("protocol"), dict):
        return None
    proto = dict(record["protocol"])
    known = PROTOCOLS.get(str(proto.get("name")))
    if known is not None and "dsa" not in proto:
        proto["dsa"] = bool(known.dsa)
    results = {}
    for m, r in per_model.items():
        accs = [float(a) for a in r.get("accs", [])]
        results[m] = {"accs": accs, "mean": statistics.fmean(accs) if accs else float("nan"),
                      "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0}
    # (the bench records overrides as strings: the protocol's own model count is no override)
    overrides = {k: v for k, v in (record.get("overrides") or {}).items()
                 if not (k == "num_models" and str(v) == str(proto.get("num_models")))}
    ev = {"protocol": proto, "results": results, "overrides": overrides,
          "run": record.get("run") or {}, "_file": f"{BENCH_RECORD} (benchmark row)"}
    if isinstance(record.get("robust"), dict):
        ev["robust"] = record["robust"]
    return ev


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """A run folder (or a bare summary folder) as ``RunData``."""
    path = Path(path)
    sdir = _summary_dir(path)
    folder = path if sdir != path else path
    syn = load_summary(sdir)
    command = {}
    if (folder / "run.json").exists():
        try:
            command = json.loads((folder / "run.json").read_text())
        except json.JSONDecodeError:
            command = {}
    log = read_log(folder / LOG_FILE)
    evals = read_evaluations(folder)
    if (folder / BENCH_RECORD).exists():  # a benchmark row's seed folder
        if not log:
            log = read_log(folder / BENCH_LOG)
        try:
            ev = bench_evaluation(json.loads((folder / BENCH_RECORD).read_text()))
        except (json.JSONDecodeError, OSError):
            ev = None
        if ev is not None:
            evals.append(ev)
    return RunData(path=folder, name=name or folder.resolve().name, syn=syn, command=command,
                   log=log, evaluations=evals)


def unique_names(paths: list[Path]) -> list[str]:
    """Short distinct names for runs: the folder name, with parents added where two collide."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            return names
        depth += 1
