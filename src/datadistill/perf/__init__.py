"""Same maths, faster: the allocator, the fused CPU kernels and the compiled paths.

A method never decides how fast it runs: ``Distiller.distill`` and ``evaluate`` take a
``RunOptions``; ``resolve`` turns its ``"auto"`` values into concrete ones for the method and this
machine, and ``activate`` applies them for the duration of the run (threads, allocator, kernel
build). A method then reads ``self.run_`` (``run_.compile``, ``run_.chunk`` ...) and builds its
networks with ``create_model(..., fused=run_.fused)``: one line.

What *auto* picks (the fastest path computing the same function, measured in BENCHMARKS.md):

- ``fused``: on for CPU runs when the kernels build (a C++ compiler and ninja), never on CUDA;
- ``compile``: where the method says it pays (``Distiller.run_defaults``) and a compiler exists;
- ``allocator``: glibc's malloc tuned (``tune_allocator``) unless tcmalloc/jemalloc is preloaded;
- ``release_memory``/``fast_norm``/``chunk``: the method's own defaults (``run_defaults``).

Where the machine has no C++ compiler the auto path falls back to plain PyTorch and says so once
(a ``RuntimeWarning``); an explicit ``fused=True`` or ``compile=True`` then raises instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..runtime import AUTO, RunOptions, resolve_device
from .allocator import release_free_memory, resident_is_live, tune_allocator

__all__ = ["RunOptions", "activate", "compiler_available", "fused_available", "release_free_memory",
           "resident_is_live", "resolve", "tune_allocator"]

_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def compiler_available() -> bool:
    """A C++ compiler on PATH (what the fused kernels and ``torch.compile`` on CPU need)."""
    cxx = os.environ.get("CXX")
    return any(shutil.which(c) for c in ([cxx] if cxx else []) + ["c++", "g++", "clang++"])


def fused_available() -> bool:
    """Whether the fused CPU kernels are built or build now (cached once per machine)."""
    if not compiler_available():
        return False
    from . import fused
    return fused.available()


def resolve(run: RunOptions | None = None, defaults: Mapping[str, Any] | None = None) -> RunOptions:
    """``run`` with every ``"auto"`` replaced by a concrete value for this machine; ``defaults``
    are the method's own choices for the auto fields (``Distiller.run_defaults``)."""
    run = run if run is not None else RunOptions()
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(RunOptions)})
    if unknown:
        raise ConfigError(f"unknown run defaults {unknown}")
    dev = resolve_device(run.device)
    kw: dict[str, Any] = {"device": str(dev)}
    for k in ("release_memory", "fast_norm"):
        v = getattr(run, k)
        kw[k] = bool(defaults.get(k, False)) if v == AUTO else v
    if kw["release_memory"] and dev.type != "cpu":
        kw["release_memory"] = False  # (it tunes the CPU allocator)
    if run.chunk is None and "chunk" in defaults:
        kw["chunk"] = defaults["chunk"]
    # fused kernels: CPU only
    if run.fused is True:
        if dev.type != "cpu":
            raise ConfigError("fused=True: the fused kernels are CPU kernels; use fused=False or "
                              "'auto' on CUDA")
        from . import fused
        fused.build()  # raises RuntimeError with the compiler's message
        kw["fused"] = True
    elif run.fused == AUTO:
        want = dev.type == "cpu" and defaults.get("fused", True)
        ok = want and fused_available()
        if want and not ok:
            _warn_once("fused", "datadistill: the fused CPU kernels are off (no working C++ "
                                "compiler/ninja); results are the same, runs are slower. Install "
                                "g++ and ninja to turn them on.")
        kw["fused"] = bool(ok)
    # torch.compile: where the method says it pays
    if run.compile == AUTO:
        want = bool(defaults.get("compile", False))
        ok = want and compiler_available()
        if want and not ok:
            _warn_once("compile", "datadistill: torch.compile is off (no C++ compiler); results "
                                  "are the same, runs are slower.")
        kw["compile"] = ok
    if run.allocator == AUTO:
        kw["allocator"] = "tuned" if dev.type == "cpu" else "default"
    return dataclasses.replace(run, **kw)


@contextlib.contextmanager
def activate(run: RunOptions):
    """Apply a *resolved* ``run`` for the block: intra-op threads (restored on exit) and the
    allocator setting (process-wide and kept: it only changes speed)."""
    if AUTO in (run.compile, run.fused, run.device, run.release_memory, run.fast_norm):
        raise ConfigError("activate() takes resolved RunOptions (perf.resolve)")
    if run.allocator == "tuned":
        tune_allocator()
    prev = torch.get_num_threads()
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    try:
        yield run
    finally:
        if run.threads is not None:
            torch.set_num_threads(prev)


def describe(run: RunOptions) -> str:
    """One line for logs: the resolved options that matter."""
    from .allocator import allocator_in_use
    alloc = run.allocator
    if run.allocator == "tuned":  # (applied when the run starts, after this line is printed)
        in_use = allocator_in_use()
        alloc = "tuned" if in_use == "default" else in_use
    parts = [f"device {run.device}", f"precision {run.precision}",
             f"threads {run.threads or torch.get_num_threads()}",
             f"fused kernels {'on' if run.fused else 'off'}",
             f"compile {'on' if run.compile else 'off'}", f"allocator {alloc}"]
    return "; ".join(parts)
