"""Following a long run: metrics to JSON lines (what ``datadistill report`` reads) and,
optionally, to TensorBoard through PyTorch's own writer. Both are callbacks for
``Distiller.distill(..., callbacks=[...])``: they take the per-iteration event dict
(``iteration``, ``iterations``, ``elapsed``, the method's metrics)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError


class MetricsLog:
    """Append every ``every``-th iteration's event (and the last one, and any that carries an
    ``accuracy``) to a JSON-lines file,
    with the process CPU time of the run so far as ``cpu_s``.

    At the first event, lines of iterations at or past it are dropped (a fresh run in an old
    folder starts the file over; a resumed run drops what it will redo after its checkpoint)
    and the CPU time continues from the last line kept."""

    def __init__(self, path: str | Path, every: int = 1):
        if every < 1:
            raise ConfigError(f"--log-every must be >= 1, got {every}")
        self.path, self.every = Path(path), int(every)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.process_time()
        self.cpu0 = 0.0
        self.f = None

    def _open(self, first: int) -> None:
        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(e, dict) and e.get("iteration", math.inf) < first:
                    kept.append(e)
        for e in kept:
            if isinstance(e.get("cpu_s"), (int, float)):
                self.cpu0 = float(e["cpu_s"])
        self.path.write_text("".join(json.dumps(e) + "\n" for e in kept))
        self.f = open(self.path, "a")

    def __call__(self, ev: dict[str, Any]) -> None:
        it = int(ev.get("iteration", 0))
        if self.f is None:
            self._open(it)
        if it % self.every and it != ev.get("iterations") and "accuracy" not in ev:
            return
        rec = {**ev, "cpu_s": round(self.cpu0 + time.process_time() - self.t0, 3)}
        self.f.write(json.dumps(rec, default=float) + "\n")
        self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def tensorboard_writer(logdir: str | Path):
    """PyTorch's ``SummaryWriter`` for ``logdir``; a clear error when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is absent
        raise ConfigError("--tensorboard needs the tensorboard package (pip install tensorboard); "
                          f"torch.utils.tensorboard said: {e}") from None
    return SummaryWriter(log_dir=str(logdir))


class TensorBoardLog:
    """Every numeric metric of each event as a scalar (tag ``<prefix>/<metric>``) at its
    iteration."""

    def __init__(self, logdir: str | Path, prefix: str = "distill"):
        self.writer = tensorboard_writer(logdir)
        self.prefix = prefix

    def __call__(self, ev: dict[str, Any]) -> None:
        step = int(ev.get("iteration", 0))
        for k, v in ev.items():
            if k not in ("iteration", "iterations") and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                self.writer.add_scalar(f"{self.prefix}/{k}", float(v), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
