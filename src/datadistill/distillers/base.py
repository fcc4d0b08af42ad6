"""The distillation loop shared by every method, for every modality.

A method is a ``Distiller`` subclass, registered by name, whose dataclass fields (keyword-only,
with the published defaults) *are* its configuration: the CLI's ``--set key=value``, presets and
the saved metadata all come from them. Constructors only store; ``setup`` builds optimizers and
other state (names ending in ``_``); ``step`` does one outer iteration and returns metrics. How
fast it runs is not configuration: ``distill(..., run=RunOptions())`` (see ``runtime.py`` and
``perf/``) is resolved into ``self.run_`` and recorded beside the parameters, never among them.

``distill`` runs the loop with checkpoints: every ``checkpoint_every_s`` seconds, on Ctrl-C and
on a crash it writes the latest summary and a checkpoint (summary, optimizer, generator and
method state at the end of the last *completed* iteration; safetensors + JSON, no pickle) to
``workdir``; ``resume=True`` continues from it and, with a fixed seed, ends with the same
summary as an uninterrupted run. Resuming with other run options continues the run; resuming
with a larger ``iterations`` extends it; any other changed parameter is refused.
A NaN/inf loss stops the run with ``NonFiniteLossError`` and keeps the last good summary.
A method that stops early (its reference's early stopping: Distill-CF, RFAD) sets ``stopped_``;
the loop then ends after that iteration (the summary's ``iterations`` says where), and a resumed
run that was stopped does not step again.

``storage`` (every method): the precision the summary is stored at (``synsets/storage.py``:
float32, float16, bfloat16, uint8, uint8-channel; None = the summary's own, float32 unless set).
It is quantization-aware: from ``setup`` on, the summary materializes its stored values, so the
objective optimizes what is saved. It is a parameter (recorded, and a resume conflict).

Image methods derive from ``ImageDistiller`` (``image.py``): DSA, initialisation from real
images, real batches per class.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import checkpoint as ckpt
from .. import dist, perf
from ..errors import CheckpointError, ConfigError, NonFiniteLossError  # noqa: F401 (re-exported)
from ..models import create_model
from ..registry import Registry
from ..runtime import RunOptions, make_generator
from ..synsets.base import SyntheticSet

DISTILLERS: Registry = Registry("method")
CHECKPOINT = "checkpoint"
#: parameters that may differ between a checkpoint and the run resuming it
RESUMABLE_CHANGES = ("iterations",)
#: Adam's step size on a factorized summary's decoders for methods without ``lr_decoder``
DECODER_LR = 1e-3


@dataclasses.dataclass(kw_only=True)
class Distiller:
    """Base configuration shared by every method (any modality)."""

    name: ClassVar[str] = "base"
    #: Named presets: {preset: {field: value}}; deviations from the published defaults live here.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The summary parametrization and label format this method creates by default.
    synset_kind: ClassVar[str] = "pixels"
    label_format: ClassVar[str] = "hard"
    #: What the registry-wide contract test runs: dataset, budget and the ``tiny`` preset.
    test_dataset: ClassVar[str] = "digits"
    test_budget: ClassVar[dict[str, Any]] = {"ipc": 2}
    #: The method's choices for ``RunOptions``' auto values (measured: BENCHMARKS.md), e.g.
    #: ``{"compile": True}`` where compiling pays, ``{"chunk": 64}``, ``{"release_memory": True}``.
    run_defaults: ClassVar[dict[str, Any]] = {}

    iterations: int = 1000
    lr_data: float = 0.1
    init: str = "real"
    seed: int = 0
    #: storage precision of the summary (None: the summary's own; see ``synsets/storage.py``)
    storage: str | None = None

    def __post_init__(self):
        if self.iterations < 0:
            raise ConfigError(f"iterations must be >= 0, got {self.iterations}")
        if self.storage is not None:
            from ..synsets.storage import Storage
            try:
                self.storage = Storage.parse(self.storage).name
            except ValueError as e:
                raise ConfigError(str(e)) from None

    # -- configuration ------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def params(self) -> dict[str, Any]:
        """The configuration (what the metadata records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

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
    def init_synset(self, real, **budget: Any) -> SyntheticSet:
        """The summary this method starts from, for a budget (images: ``ipc``; graphs:
        ``ratio``; recommender data: ``users``)."""
        raise NotImplementedError

    def setup(self, real, syn: SyntheticSet) -> None:
        """Build generators, optimizers and anything else (attributes ending in ``_``). The
        resolved run options are ``self.run_`` and the device ``self.device_`` (auto ones when
        ``setup`` is called directly, outside ``distill``)."""
        if getattr(self, "run_", None) is None:
            self.use_run(None)
        self.apply_storage(syn)
        self.gen_ = make_generator(self.seed)
        self.optimizer_ = self.make_optimizer(syn)

    def check_synset(self, syn: SyntheticSet) -> None:
        """Refuse (``ConfigError``) a summary this method cannot optimize; ``distill`` calls it
        before ``setup``. Default: any."""

    def apply_storage(self, syn: SyntheticSet) -> None:
        """Set the summary's storage precision to ``storage`` (when given)."""
        if self.storage is None:
            return
        try:
            syn.set_storage(self.storage)
        except ValueError as e:
            raise ConfigError(f"{self.name}: {e}") from None

    def make_optimizer(self, syn: SyntheticSet) -> torch.optim.Optimizer:
        """SGD (momentum 0.5) at ``lr_data`` on the summary's data. A factorized summary
        (``synsets/factorized.py``) gets it on its codes (and soft labels) only; its decoders'
        weights get Adam at ``lr_decoder`` (a field of the method, else ``DECODER_LR``): a pixel
        step size such as DM's 1 makes decoder weights diverge (measured: one decoder's norm x30
        in 5 DM iterations on Fashion-MNIST)."""
        from ..optim import JointOptimizer
        from ..synsets.factorized import FactorizedSet

        if not isinstance(syn, FactorizedSet):
            return torch.optim.SGD(syn.data_parameters(), lr=self.lr_data, momentum=0.5)
        codes = torch.optim.SGD(syn.code_parameters(), lr=self.lr_data, momentum=0.5)
        lr_dec = getattr(self, "lr_decoder", DECODER_LR)
        return JointOptimizer(codes=codes, decoders=torch.optim.Adam(syn.decoder_parameters(), lr=lr_dec))

    def step(self, real, syn: SyntheticSet) -> dict[str, float]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Method state beyond the summary/optimizer/generator to checkpoint (e.g. model pools):
        tensors, numbers, strings, lists and dicts."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def auto_run(self) -> dict[str, Any]:
        """This configuration's choices for ``RunOptions``' auto values: ``run_defaults``, which a
        method may refine by its budget (e.g. compile only where the run is long enough for the
        one-off compilation to pay)."""
        return dict(self.run_defaults)

    def use_run(self, run: RunOptions | None) -> RunOptions:
        """Resolve ``run`` for this method (``perf.resolve``): ``self.run_``, ``self.device_``."""
        self.run_ = perf.resolve(run, self.auto_run())
        self.device_ = torch.device(self.run_.device)
        # the distributed context (``dist.py``): processes sharing the real-data work (1: none)
        self.world_ = dist.world_size()
        return self.run_

    def make_model(self, name: str, info, *, generator: torch.Generator | None = None, **kw):
        """A network on this run's device, with the run's fused kernels where it has them."""
        return create_model(name, info, generator=generator, device=self.device_,
                            fused=self.run_.fused, **kw)

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
        if not dist.is_main():
            return  # under torch.distributed the summary is replicated: rank 0 writes it
        live = {k: v.detach().clone() for k, v in syn.state_dict().items()}
        with torch.no_grad():
            syn.load_state_dict(snap["synset"])
            syn.save(workdir / "summary")
            syn.load_state_dict(live)
        ckpt.save_state({**snap, "method": self.name, "params": json.loads(json.dumps(self.params())),
                         "run": self.run_.to_dict(), "elapsed": elapsed}, workdir, CHECKPOINT)

    def _finalize_meta(self, syn: SyntheticSet, iteration: int, elapsed: float) -> None:
        syn.meta.update({"method": self.name, "params": self.params(), "seed": self.seed,
                         "iterations": iteration, "wall_time_s": round(elapsed, 3),
                         "run": self.run_.to_dict(), **self.extra_meta()})
        if getattr(self, "world_", 1) > 1:  # how fast, like "run": processes that shared the real-data work
            syn.meta["world_size"] = self.world_

    def extra_meta(self) -> dict[str, Any]:
        """Facts beyond the parameters that the saved summary should carry."""
        return {}

    def _check_resumable(self, ck: dict[str, Any], workdir: Path) -> None:
        def same(p):
            return {k: v for k, v in (p or {}).items() if k not in RESUMABLE_CHANGES}
        if ck.get("method") != self.name:
            raise ConfigError(f"checkpoint in {workdir} was made by {ck.get('method')}, not "
                              f"{self.name}")
        old, new = same(ck.get("params")), same(json.loads(json.dumps(self.params())))
        # a parameter added after the checkpoint was written, at its default, is no change
        defaults = {f.name: f.default for f in dataclasses.fields(self)
                    if f.default is not dataclasses.MISSING}
        for k in [k for k in new if k not in old and k in defaults]:
            if new[k] == json.loads(json.dumps(defaults[k])):
                del new[k]
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(f"checkpoint in {workdir} was made with different parameters "
                              f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)}"
                              f"); resume with the same settings (run options and a larger "
                              f"--iterations may change)")

    def distill(self, real, syn: SyntheticSet,
                callbacks: Iterable[Callable[[dict[str, Any]], None]] = (), *,
                workdir: str | os.PathLike | None = None, resume: bool = False,
                checkpoint_every_s: float = 60.0, run: RunOptions | None = None) -> SyntheticSet:
        """Run ``iterations`` outer steps; returns ``syn`` (updated in place). ``run`` says how
        fast (``RunOptions``; default: auto), never what is computed."""
        self.use_run(run)
        with perf.activate(self.run_):
            return self._distill(real, syn, callbacks, workdir=workdir, resume=resume,
                                 checkpoint_every_s=checkpoint_every_s)

    def _distill(self, real, syn, callbacks, *, workdir, resume, checkpoint_every_s):
        self.check_synset(syn)
        self.setup(real, syn)
        workdir = Path(workdir) if workdir is not None else None
        start, elapsed0 = 0, 0.0
        if resume:
            if workdir is None or not ckpt.exists(workdir, CHECKPOINT):
                raise CheckpointError(f"nothing to resume: no {CHECKPOINT}.json in {workdir}")
            ck = ckpt.load_state(workdir, CHECKPOINT)
            self._check_resumable(ck, workdir)
            self._restore(syn, ck)
            start, elapsed0 = int(ck["iteration"]), float(ck.get("elapsed", 0.0))
            if start > self.iterations:
                raise ConfigError(f"the checkpoint in {workdir} is at iteration {start}, past "
                                  f"iterations={self.iterations}; ask for at least {start}")
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        last_ck = t0
        snap = self._snapshot(syn, start)
        it = start
        try:
            for it in range(start, self.iterations):
                if getattr(self, "stopped_", False):  # the method stopped early (e.g. validation patience)
                    break
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
