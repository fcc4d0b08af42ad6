"""Shared helpers of the trajectory-matching benchmarks (bench/mtt_*.py, bench/tesla_*.py):
the machine's convolution throughput, measured in the same run as every timing, and result
files written as they arrive."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def conv_throughput(precision: str = "fp32", seconds: float = 3.0, cpu_time: bool = False) -> float:
    """GFLOP/s of the ConvNet's dominant layer (3x3, 128->128 channels, 16x16 maps, batch 256),
    forward and both backward convolutions, in ``precision`` (``fp32`` or ``bf16``); per second
    of process CPU time with ``cpu_time`` (robust when other processes share the cores: with one
    thread it is what the core delivers while this process runs)."""
    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 128, 16, 16, generator=g).to(dt).requires_grad_(True)
    w = torch.randn(128, 128, 3, 3, generator=g).to(dt).requires_grad_(True)
    flops_fwd = 2 * 256 * 128 * 16 * 16 * 128 * 9
    for _ in range(2):
        F.conv2d(x, w, padding=1).sum().backward()
    clock = time.process_time if cpu_time else time.perf_counter
    n, t0 = 0, clock()
    while clock() - t0 < seconds:
        F.conv2d(x, w, padding=1).sum().backward()
        n += 1
    return 3 * flops_fwd * n / (clock() - t0) / 1e9


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "allocator": os.environ.get("LD_PRELOAD", "") or "glibc (tuned by runtime)"}


def write(name: str, obj) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / name
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, p)
    return p
