"""The distillation loop shared by every method.

A method is a ``Distiller`` subclass, registered by name, whose dataclass fields (keyword-only,
with the published defaults) *are* its configuration: the CLI's ``--set key=value``, presets and
the saved metadata all come from them. Constructors only store; ``setup`` builds optimizers and
other state (names ending in ``_``); ``step`` does one outer iteration and returns metrics.

``distill`` runs the loop with checkpoints: every ``checkpoint_every_s`` seconds, on Ctrl-C and
on a crash it writes the latest summary and a checkpoint (summary, optimizer, generator and
method state at the end of the last *completed* iteration) to ``workdir``; ``resume=True``
continues from it and, with a fixed seed, ends with the same summary as an uninterrupted run.
A NaN/inf loss stops the run with ``NonFiniteLossError`` and keeps the last good summary.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..augment import DEFAULT_STRATEGY, DSA
from ..data.base import RealData
from ..registry import Registry
from ..runtime import check_precision, fused_kernels, make_generator, resolve_device
from ..synsets.base import SyntheticSet

DISTILLERS: Registry = Registry("method")
CHECKPOINT_FILE = "checkpoint.pt"


class NonFiniteLossError(FloatingPointError):
    """The loss or the summary became NaN/inf; the last good summary was kept."""


class ConfigError(ValueError):
    """A method parameter that does not exist or has a value of the wrong type."""


@dataclasses.dataclass(kw_only=True)
class Distiller:
    """Base configuration shared by the image methods."""

    name: ClassVar[str] = "base"
    #: Named presets: {preset: {field: value}}; deviations from the published defaults live here.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The summary parametrization and label format this method creates by default.
    synset_kind: ClassVar[str] = "pixels"
    label_format: ClassVar[str] = "hard"
    #: What the registry-wide contract test runs: dataset, budget and the ``tiny`` preset.
    test_dataset: ClassVar[str] = "digits"
    test_budget: ClassVar[dict[str, Any]] = {"ipc": 2}

    model: str = "convnet"
    iterations: int = 1000
    lr_data: float = 0.1
    batch_real: int = 256
    init: str = "real"
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    precision: str = "fp32"
    #: the fused CPU norm/ReLU/pool kernel for the ConvNet (``runtime.fused_kernels``): the same
    #: function, faster on CPU; needs a C++ compiler (built once, cached)
    fused: bool = False
    seed: int = 0
    device: str | None = None

    #: settings that change speed, not results: a run may resume with different values
    RUNTIME_ONLY: ClassVar[tuple[str, ...]] = ("fused", "compile")  # (device: not in params)

    def __post_init__(self):
        check_precision(self.precision)
        if self.iterations < 0:
            raise ConfigError(f"iterations must be >= 0, got {self.iterations}")

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def params(self) -> dict[str, Any]:
        """The configuration (what the metadata records); ``device`` excluded."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "device"}

    @classmethod
    def from_config(cls, preset: str | None = None, **overrides: Any) -> "Distiller":
        """Build from a named preset (if any) plus overrides, rejecting unknown keys."""
        kw: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                known = ", ".join(sorted(cls.presets)) or "none"
                raise ConfigError(f"unknown preset {preset!r} for {cls.name}; known: {known}")
            kw.update(cls.presets[preset])
        unknown = sorted(set(overrides) - set(cls.param_names()))
        if unknown:
            raise ConfigError(f"{cls.name} has no parameter(s) {unknown}; its parameters: "
                              f"{', '.join(cls.param_names())}")
        kw.update(overrides)
        return cls(**kw)

    # -- to implement -------------------------------------------------------------------------
    def init_synset(self, real: RealData, *, ipc: int | None = None, **budget: Any) -> SyntheticSet:
        """The summary this method starts from. Images: ``ipc`` stored examples per class of
        ``synset_kind``, initialised by ``init`` from a generator seeded with ``seed``. Methods
        with other budgets (graph ``ratio``, recommender ``users``) override this."""
        from ..synsets import init_from

        if budget:
            raise ConfigError(f"{self.name} takes an ipc budget, not {sorted(budget)}")
        if ipc is None:
            raise ConfigError(f"{self.name} needs --ipc")
        return init_from(real, ipc, kind=self.synset_kind, init=self.init,
                         generator=make_generator(self.seed), label_format=self.label_format)

    def setup(self, real: RealData, syn: SyntheticSet) -> None:
        """Build generators, optimizers and anything else (attributes ending in ``_``)."""
        self.device_ = resolve_device(self.device)
        self.gen_ = make_generator(self.seed)
        self.dsa_ = DSA.for_data(real.info, self.dsa_strategy) if self.dsa else None
        self.optimizer_ = self.make_optimizer(syn)

    def make_optimizer(self, syn: SyntheticSet) -> torch.optim.Optimizer:
        return torch.optim.SGD(syn.data_parameters(), lr=self.lr_data, momentum=0.5)

    def step(self, real: RealData, syn: SyntheticSet) -> dict[str, float]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Method state beyond the summary/optimizer/generator to checkpoint (e.g. model pools)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def augment(self, x: torch.Tensor, params) -> torch.Tensor:
        return x if params is None else self.dsa_.apply(x, params)

    def sample_augment(self, real: RealData):
        """One siamese parameter set (shared by a real and a synthetic batch), or None."""
        if self.dsa_ is None:
            return None
        return self.dsa_.sample(None, self.gen_, tuple(real.info.shape[-2:]))

    # -- the loop -----------------------------------------------------------------------------
    def _snapshot(self, syn: SyntheticSet, iteration: int) -> dict[str, Any]:
        return {
            "iteration": iteration,
            "synset": {k: v.detach().clone() for k, v in syn.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer_.state_dict()),
            "generator": self.gen_.get_state(),
            "extra": copy.deepcopy(self.extra_state()),
        }

    def _restore(self, syn: SyntheticSet, snap: dict[str, Any]) -> None:
        with torch.no_grad():
            syn.load_state_dict(snap["synset"])
        self.optimizer_.load_state_dict(snap["optimizer"])
        self.gen_.set_state(snap["generator"])
        self.load_extra_state(snap["extra"])

    def _save(self, syn: SyntheticSet, snap: dict[str, Any], workdir: Path, elapsed: float) -> None:
        self._finalize_meta(syn, snap["iteration"], elapsed)
        live = {k: v.detach().clone() for k, v in syn.state_dict().items()}
        with torch.no_grad():
            syn.load_state_dict(snap["synset"])
            syn.save(workdir / "summary")
            syn.load_state_dict(live)
        tmp = workdir / (CHECKPOINT_FILE + ".tmp")
        torch.save({**snap, "method": self.name, "params": self.params(), "elapsed": elapsed}, tmp)
        os.replace(tmp, workdir / CHECKPOINT_FILE)

    def _finalize_meta(self, syn: SyntheticSet, iteration: int, elapsed: float) -> None:
        syn.meta.update({"method": self.name, "params": self.params(), "seed": self.seed,
                         "iterations": iteration, "wall_time_s": round(elapsed, 3),
                         "dsa_strategy": self.dsa_.strategy if self.dsa_ is not None else None})

    def distill(self, real: RealData, syn: SyntheticSet,
                callbacks: Iterable[Callable[[dict[str, Any]], None]] = (), *,
                workdir: str | os.PathLike | None = None, resume: bool = False,
                checkpoint_every_s: float = 60.0) -> SyntheticSet:
        """Run ``iterations`` outer steps; returns ``syn`` (updated in place)."""
        with fused_kernels() if self.fused else contextlib.nullcontext():
            return self._distill(real, syn, callbacks, workdir=workdir, resume=resume,
                                 checkpoint_every_s=checkpoint_every_s)

    def _distill(self, real, syn, callbacks, *, workdir, resume, checkpoint_every_s):
        self.setup(real, syn)
        workdir = Path(workdir) if workdir is not None else None
        start, elapsed0 = 0, 0.0
        if resume:
            if workdir is None or not (workdir / CHECKPOINT_FILE).exists():
                raise FileNotFoundError(f"nothing to resume: no {CHECKPOINT_FILE} in {workdir}")
            ck = torch.load(workdir / CHECKPOINT_FILE, weights_only=False)
            def same(p):
                return {k: v for k, v in (p or {}).items() if k not in self.RUNTIME_ONLY}
            if ck.get("method") != self.name or same(ck.get("params")) != same(self.params()):
                raise ConfigError(f"checkpoint in {workdir} was made by {ck.get('method')} with "
                                  f"different parameters; resume with the same settings")
            self._restore(syn, ck)
            start, elapsed0 = int(ck["iteration"]), float(ck.get("elapsed", 0.0))
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        last_ck = t0
        snap = self._snapshot(syn, start)
        it = start
        try:
            for it in range(start, self.iterations):
                metrics = self.step(real, syn)
                loss = metrics.get("loss", 0.0)
                if not (torch.isfinite(torch.tensor(loss)) and syn.check_finite()):
                    self._restore(syn, snap)
                    if workdir is not None:
                        self._save(syn, snap, workdir, elapsed0 + time.perf_counter() - t0)
                    raise NonFiniteLossError(
                        f"{self.name}: non-finite loss ({loss}) or summary at iteration {it + 1}; "
                        f"kept the summary of iteration {snap['iteration']}"
                        + (f" in {workdir / 'summary'}" if workdir is not None else ""))
                snap = self._snapshot(syn, it + 1)
                now = time.perf_counter()
                event = {"iteration": it + 1, "iterations": self.iterations,
                         "elapsed": elapsed0 + now - t0, **metrics}
                # a callback that saves the summary saves it with this iteration's metadata
                self._finalize_meta(syn, it + 1, elapsed0 + now - t0)
                for cb in callbacks:
                    cb(event)
                if workdir is not None and now - last_ck >= checkpoint_every_s:
                    self._save(syn, snap, workdir, elapsed0 + now - t0)
                    last_ck = time.perf_counter()
        except NonFiniteLossError:
            raise
        except BaseException:
            # Ctrl-C or crash: keep the state at the end of the last completed iteration
            self._restore(syn, snap)
            if workdir is not None:
                self._save(syn, snap, workdir, elapsed0 + time.perf_counter() - t0)
            raise
        elapsed = elapsed0 + time.perf_counter() - t0
        self._finalize_meta(syn, snap["iteration"], elapsed)
        if workdir is not None:
            self._save(syn, snap, workdir, elapsed)
        return syn
