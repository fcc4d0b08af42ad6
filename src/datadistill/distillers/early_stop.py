"""Early stopping on a validation score: keep the best-scoring summary, stop after ``patience``
iterations without a better one.

A method owns an ``EarlyStopping`` (built in ``setup``), calls ``check(iteration, score, state)``
at the iterations it validates, and sets its ``stopped_`` when ``check`` says so: the base loop
(``base.py``) ends the run there. ``state`` is a callable returning what to keep on improvement
(tensors that are not modified in place afterwards, e.g. fresh clones); the method puts it back
with ``best_state`` at the end. ``state_dict`` / ``load_state_dict`` carry everything through a
checkpoint (the method returns them from ``extra_state`` / ``load_extra_state``), so a resumed run
stops where an uninterrupted one does and keeps the same summary.

The rule is RFAD's (yolky/RFAD ``distill_dataset``): lower is better, strictly (``score < best``),
and the run stops at the first validated iteration ``i > best_iteration + patience``
(``patience=None``: never stops, still keeps the best).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class EarlyStopping:
    """The best score so far (lower is better), its iteration and state, and the stop rule."""

    def __init__(self, patience: int | None):
        if patience is not None and patience < 0:
            raise ValueError(f"patience must be >= 0 or None, got {patience}")
        self.patience = patience
        self.best = math.inf
        self.best_iteration = -1
        self.best_state: Any = None
        self.history: list[list[float]] = []  # [iteration, score, *extra] per check

    def check(self, iteration: int, score: float, state: Callable[[], Any], *extra: float) -> bool:
        """Record the score of ``iteration``, keep ``state()`` if it is the best so far; True when
        the run should stop here."""
        self.history.append([int(iteration), float(score), *map(float, extra)])
        if score < self.best:
            self.best, self.best_iteration, self.best_state = float(score), int(iteration), state()
        return self.patience is not None and iteration > self.best_iteration + self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration,
                "best_state": self.best_state, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_iteration = float(state["best"]), int(state["best_iteration"])
        self.best_state = state["best_state"]
        self.history = [list(h) for h in state["history"]]
