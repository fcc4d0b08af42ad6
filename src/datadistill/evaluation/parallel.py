"""The K evaluation models in parallel: worker processes and/or the ranks of a process group.

Every evaluation model is an independent task (fresh network ``k`` of architecture ``m``, seeded
``derive_seed(seed, m, k)``): ``map_tasks`` runs a list of them and returns their results in task
order, whatever ran them:

- **sequentially** in this process (``workers == 1``, no process group): the code path of before;
- in ``workers`` **spawn worker processes** (``RunOptions.workers > 1``): the shared inputs
  (``context``: the summary, the test split ...) go to each worker once, through the pool's
  initializer; each worker gets ``threads // workers`` intra-op threads (at least 1);
- **across the ranks** of an initialized ``torch.distributed`` group (torchrun): task ``i`` runs
  on rank ``i % world_size`` (in that rank's workers when ``workers > 1``), and the results are
  all-gathered (``all_gather_object``), so every rank returns the full list; ``on_result`` runs
  on rank 0 only (its own tasks as they finish, the other ranks' after the gather). A task that
  raises on any rank raises on every rank (no rank is left waiting in the gather).

The task function runs the same code in all three cases, so the results are the same as the
sequential path's as long as a task's arithmetic does not depend on the thread count (the tests
compare accuracies with 1 thread per process).
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import dist

__all__ = ["map_tasks"]

#: the shared inputs of the tasks, set once per worker process by the pool's initializer
_CONTEXT: Any = None


def _init_worker(threads: int, context: Any, allocator: str | None) -> None:
    global _CONTEXT
    torch.set_num_threads(threads)
    if allocator == "tuned":
        from ..perf import tune_allocator
        tune_allocator()
    _CONTEXT = context


def _call(fn: Callable[[Any, Any], Any], task: Any) -> Any:
    return fn(_CONTEXT, task)


def _run_local(fn, context, tasks: list[tuple[int, Any]], *, workers: int, threads: int | None,
               allocator: str | None, on_result: Callable[[int, Any], None] | None
               ) -> dict[int, Any]:
    """``tasks`` (index, task) here: sequentially or in a spawn pool; results by index."""
    out: dict[int, Any] = {}
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        n = min(workers, len(tasks))
        per = max(1, (threads or torch.get_num_threads()) // n)
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(per, context, allocator)) as ex:
            futs = [(i, ex.submit(_call, fn, t)) for i, t in tasks]
            for i, f in futs:  # in task order (on_result sees the sequential order)
                out[i] = f.result()
                if on_result is not None:
                    on_result(i, out[i])
        return out
    for i, t in tasks:
        out[i] = fn(context, t)
        if on_result is not None:
            on_result(i, out[i])
    return out


def map_tasks(fn: Callable[[Any, Any], Any], tasks: Sequence[Any], *, context: Any = None,
              workers: int = 1, threads: int | None = None, allocator: str | None = None,
              on_result: Callable[[int, Any], None] | None = None,
              worker_context: Callable[[], Any] | None = None) -> list[Any]:
    """``[fn(context, t) for t in tasks]``, spread over ``workers`` processes and the ranks of
    the process group (see the module docstring). ``fn`` must be a module-level function and the
    tasks and results picklable when ``workers > 1`` or under a group. ``worker_context``, when
    given, builds the (CPU, picklable) context sent to worker processes instead of ``context``
    (e.g. without CUDA tensors). ``on_result(i, result)`` is called as results arrive: in task
    order without a group; under a group on rank 0 only, its own tasks first."""
    tasks = list(tasks)
    if workers < 1:
        from ..errors import ConfigError
        raise ConfigError(f"workers must be >= 1, got {workers}")
    pool = workers > 1 and len(tasks) > 1
    ctx = worker_context() if (pool and worker_context is not None) else context
    if not dist.is_distributed():
        out = _run_local(fn, ctx, list(enumerate(tasks)), workers=workers, threads=threads,
                         allocator=allocator, on_result=on_result)
        return [out[i] for i in range(len(tasks))]

    w, r = dist.world_size(), dist.rank()
    mine = [(i, t) for i, t in enumerate(tasks) if i % w == r]
    mine_pool = workers > 1 and len(mine) > 1
    if mine_pool != pool:
        ctx = worker_context() if (mine_pool and worker_context is not None) else context
    report = on_result if r == 0 else None
    try:
        local: Any = _run_local(fn, ctx, mine, workers=workers, threads=threads,
                                allocator=allocator, on_result=report)
    except Exception as e:  # every rank must reach the gather
        local = ("__error__", f"rank {r}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    gathered = dist.all_gather_objects(local)
    errors = [g[1] for g in gathered if isinstance(g, tuple) and g and g[0] == "__error__"]
    if errors:
        raise RuntimeError("parallel evaluation failed on " + "; ".join(errors))
    out = {}
    for g in gathered:
        out.update(g)
    if report is not None:
        for i in range(len(tasks)):
            if i % w != 0:
                report(i, out[i])
    return [out[i] for i in range(len(tasks))]
