"""Devices, precision, generators, seeds and ``RunOptions``: how a run executes, never what it
computes.

``RunOptions`` holds every setting that changes speed or memory but not the function a method
computes: device, precision, threads, ``torch.compile``, the fused CPU kernels, memory layout,
chunking, worker processes and allocator tuning. It is passed to ``Distiller.distill`` and
``evaluate`` (never stored among a method's parameters), recorded in a summary's metadata under
``"run"``, and changing it never blocks ``--resume``. Its default is *auto*: the fastest path that
computes the same function on this machine (``perf.resolve``). ``precision="bf16"`` is the one
option that changes numerics, so it is never chosen automatically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
from typing import Any, Literal

import torch

from .errors import ConfigError

AUTO = "auto"
Auto = Literal["auto"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How fast, never what. Every field defaults to ``"auto"`` (or a neutral value); ``perf.resolve``
    turns the auto values into concrete ones for a method on this machine.

    - ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda:1"``, ...
    - ``precision``: ``"fp32"`` or ``"bf16"`` (autocast; changes numerics, so opt-in only).
    - ``threads``: intra-op threads for the run (``None``: leave the process setting).
    - ``compile``: ``torch.compile`` the paths a method compiles (auto: where the method measured
      that it pays, and a C++ compiler is present).
    - ``fused``: the fused CPU kernels for the ConvNet's norm/ReLU/pool blocks (auto: on CPU when a
      C++ compiler is present; never on CUDA).
    - ``channels_last``: channels-last activations (DM's bf16 path).
    - ``chunk``: examples per no-grad forward or kernel block (``None``: the method's default);
      bounds memory, changes only the order of a sum.
    - ``workers``: processes for embarrassingly parallel work (expert trajectories, the K
      evaluation models).
    - ``allocator``: ``"auto"`` (= ``"tuned"`` on CPU) tunes glibc's malloc
      (``perf.tune_allocator``) unless tcmalloc or jemalloc is preloaded; ``"default"`` leaves the
      process allocator alone.
    - ``release_memory``: methods whose live memory is constant over a long loop (TESLA, pooled
      KIP) return freed pages to the OS after every step so resident memory follows live memory
      (auto: on CPU where the method asks for it).
    - ``fast_norm``: MTT/TESLA's custom instance norm (same values; auto: the method's choice).
    """

    device: str = AUTO
    precision: str = "fp32"
    threads: int | None = None
    compile: bool | Auto = AUTO
    fused: bool | Auto = AUTO
    channels_last: bool = False
    chunk: int | None = None
    workers: int = 1
    allocator: str = AUTO
    release_memory: bool | Auto = AUTO
    fast_norm: bool | Auto = AUTO

    def __post_init__(self):
        check_precision(self.precision)
        for k in ("compile", "fused", "release_memory", "fast_norm"):
            v = getattr(self, k)
            if v != AUTO and not isinstance(v, bool):
                raise ConfigError(f"run option {k} must be true, false or 'auto', got {v!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {self.chunk}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.allocator not in (AUTO, "default", "tuned"):
            raise ConfigError(f"allocator must be 'auto', 'tuned' or 'default', got "
                              f"{self.allocator!r}")

    def replace(self, **kw: Any) -> "RunOptions":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "RunOptions":
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown run option(s) {unknown}; known: "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(**d)


def derive_seed(seed: int, *keys: int) -> int:
    """The seed of a sub-task (expert ``i``, evaluation model ``k`` of architecture ``m``, ...):
    ``seed * 1_000_003 + sum_i keys[i] * 1009 ** (len(keys) - 1 - i)``, i.e. ``seed * 1_000_003 +
    k`` for one key and ``seed * 1_000_003 + m * 1009 + k`` for two. Distinct (seed, keys) give
    distinct seeds while keys stay below 1009 (and the run seed below ~1000 x keys' span)."""
    out = int(seed) * 1_000_003
    for i, k in enumerate(keys):
        out += int(k) * 1009 ** (len(keys) - 1 - i)
    return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when present, else CPU; anything else is checked and returned."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` ("fp32" -> no-op, "bf16" -> bfloat16 autocast)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator: random draws happen on CPU and move to the device, so results do not
    depend on the device."""
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def scoped_global_seed(seed: int, device: "str | torch.device | None" = None):
    """Run a block whose code draws from torch's global RNG (``F.dropout`` in a GNN, a third-party
    trainer) deterministically from ``seed``, and give the caller back its global RNG state
    afterwards (the library never reseeds the global RNG for its caller)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
