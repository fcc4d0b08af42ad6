"""Time a method with whatever ``datadistill`` is first on ``PYTHONPATH`` (a ``commit = ...`` row).

Run as a script, never imported by the suite: ``external.time_external`` exports ``src/`` of the
row's commit and starts ``python legacy.py`` with it first on ``PYTHONPATH``, the row as JSON in
``DATADISTILL_BENCH_ROW``. It uses only the API every version since the registry has had
(``load_dataset``, ``create_distiller(name, preset, **params)``, ``init_synset(real, ipc=...)``,
``distill(real, syn, callbacks)``), so speed settings of versions before ``RunOptions`` are given
as method parameters (``set`` / ``preset``). Prints one JSON line: ``marks`` (cumulative CPU and
wall seconds before the first iteration and after each), ``peak_rss_bytes`` and ``info``.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time


# run as a script: its own folder (the suite's modules) must not shadow anything
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def cpu_seconds() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def main() -> int:
    spec = json.loads(os.environ["DATADISTILL_BENCH_ROW"])
    import torch

    import datadistill
    from datadistill.data import load_dataset
    from datadistill.distillers import create_distiller

    run = spec.get("run") or {}
    if run.get("threads"):
        torch.set_num_threads(int(run["threads"]))
    real = load_dataset(spec["dataset"], data_dir=spec.get("data_dir"))
    if run.get("allocator", "auto") != "default":  # as the suite's runs: glibc malloc tuned
        from datadistill import runtime            # after the data loaded
        if hasattr(runtime, "tune_allocator"):
            runtime.tune_allocator()
    d = create_distiller(spec["method"], spec.get("preset"),
                         **{**spec.get("set", {}), "iterations": spec["iterations"],
                            "seed": spec.get("seed", 0)})
    syn = d.init_synset(real, **spec["budget"])
    marks = [(cpu_seconds(), time.perf_counter())]
    d.distill(real, syn, [lambda ev: marks.append((cpu_seconds(), time.perf_counter()))])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    params = {k: v for k, v in d.params().items() if isinstance(v, (int, float, str, bool, type(None)))}
    print(json.dumps({"marks": marks, "peak_rss_bytes": max(own, kids) * 1024,
                      "info": {"library": os.path.dirname(datadistill.__file__),
                               "threads": torch.get_num_threads(), "params": params}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
