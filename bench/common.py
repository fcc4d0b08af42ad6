"""Shared helpers for the benchmark scripts: machine description, result files, throughput."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()}


def save(name: str, record: dict) -> Path:
    """Write (or overwrite) ``bench/results/<name>.json`` atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / f"{name}.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, p)
    return p


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def conv_throughput(precision: str = "fp32", batch: int = 256, seconds: float = 3.0) -> float:
    """GFLOP/s of the ConvNet's dominant convolution (128->128, 3x3, 16x16 maps) on this
    machine right now (forward, no grad)."""
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).requires_grad_(False)
    x = torch.randn(batch, 128, 16, 16)
    flops = 2 * batch * 128 * 128 * 9 * 16 * 16
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.no_grad()
    with torch.no_grad(), ctx:
        conv(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            n += 1
        dt = time.perf_counter() - t0
    return flops * n / dt / 1e9
