"""Distillation across processes on ``torch.distributed`` (PyTorch's own engine, nothing home-made).

Under ``torchrun --nproc-per-node N -m datadistill distill ...`` (or any code that has called
``torch.distributed.init_process_group``) the methods that support it split the *real-data* work
of every outer iteration across the N ranks, so that N ranks compute the same function as one:

- every rank keeps the same generator and draws the same global real batch indices and DSA
  parameters (the random streams stay identical on every rank);
- each rank processes only its contiguous slice (``shard``) of each real batch;
- the partial sums are all-reduced (``all_reduce_sum``): DM's per-class embedding sums and counts,
  DC's real-data gradients (of the summed per-slice losses, divided by the global batch size);
- the summary, the random networks and the synthetic side are replicated and updated identically
  on every rank; checkpoints and summary files are written by rank 0 (``is_main``).

Equal up to floating-point rounding: the all-reduce reorders sums. The backend follows the
device: gloo on CPU, NCCL on CUDA (``backend_for``). Without an initialized process group (or
with one process) everything here is the identity and the single-process code paths run.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

__all__ = ["available", "world_size", "rank", "is_main", "is_distributed", "all_reduce_sum",
           "shard", "backend_for", "init_from_env", "finalize", "barrier", "on_main",
           "all_gather_objects"]


def available() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    """Processes in the default group (1 when none is initialized)."""
    return tdist.get_world_size() if available() else 1


def rank() -> int:
    """This process's rank (0 when no group is initialized)."""
    return tdist.get_rank() if available() else 0


def is_main() -> bool:
    """True on rank 0 (and always in a single process): the rank that writes files and prints."""
    return rank() == 0


def is_distributed() -> bool:
    """More than one process: the real-data work is split."""
    return world_size() > 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks, in place, and return it (the identity in one process). A CPU tensor
    under NCCL goes through the current CUDA device and back."""
    if not is_distributed():
        return t
    if tdist.get_backend() == "nccl" and t.device.type != "cuda":
        buf = t.to(f"cuda:{torch.cuda.current_device()}")
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        t.copy_(buf)
        return t
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def shard(n: int, r: int | None = None, w: int | None = None) -> slice:
    """This rank's contiguous slice of ``n`` items: ranks get ``n // w`` or ``n // w + 1`` items,
    in rank order, so the slices of all ranks are exactly ``range(n)``."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's (picklable) ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` computed on rank 0 and broadcast to every rank (work done once, e.g. a cached
    full-data reference that rank 0 alone writes); an exception on rank 0 raises on every rank."""
    if not is_distributed():
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # the other ranks wait in the broadcast: tell them
            box[0] = ("error", f"{type(e).__name__}: {e}")
            tdist.broadcast_object_list(box, src=0)
            raise
    tdist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def backend_for(device: str | torch.device | None) -> str:
    """``nccl`` for CUDA devices (``auto`` when CUDA is present), else ``gloo``."""
    dev = str(device) if device is not None else "auto"
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    return "nccl" if cuda and tdist.is_nccl_available() else "gloo"


def init_from_env(device: str | torch.device | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Initialize the default process group from torchrun's environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) when it says more than one process
    and no group exists yet; on CUDA select ``cuda:LOCAL_RANK`` as this process's device. Returns
    True when this call initialized a group (``finalize`` then destroys it)."""
    if available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def finalize(initialized: bool) -> None:
    """Destroy the group ``init_from_env`` created (a no-op otherwise)."""
    if initialized and available():
        tdist.destroy_process_group()
