"""The image layer of the distillation loop: what every image method shares on top of the
modality-neutral ``Distiller`` — a network name, differentiable siamese augmentation (DSA),
initialisation of the summary from real images (or noise), real batches per class.

The objective and the summary's parametrization are independent choices (survey §2.5):
``synset`` picks any registered image summary kind (``pixels``, ``multiformation``, the
factorized kinds ...; default None = the method's own ``synset_kind``) and ``synset_args`` its
constructor options (e.g. ``{"factor": 3}``; merged over the method's own defaults for its own
kind, e.g. IDC's ``factor``). A method whose update needs stored images (KIP/RFAD/FRePO's
optimizer on ``syn.x``, IDC's pixel-space step, TESLA's label initialisation) lists the kinds it
handles in ``synset_kinds`` and refuses others with a ``ConfigError``; the others reach the
summary only through ``materialize()`` / ``data_parameters()`` and take any kind.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

from ..augment import DEFAULT_STRATEGY, DSA
from ..data.base import RealData
from ..errors import ConfigError
from ..runtime import make_generator
from ..synsets.base import SyntheticSet
from .base import Distiller


@dataclasses.dataclass(kw_only=True)
class ImageDistiller(Distiller):
    """Base configuration shared by the image methods."""

    #: the summary kinds this method can optimize (None: any, through ``materialize()``)
    synset_kinds: ClassVar[tuple[str, ...] | None] = None

    model: str = "convnet"
    batch_real: int = 256
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    #: the summary's parametrization (None: the method's own ``synset_kind``) and its options
    synset: str | None = None
    synset_args: dict[str, Any] | None = None

    def __post_init__(self):
        super().__post_init__()
        from ..synsets import SYNSETS

        if self.synset is not None and self.synset not in SYNSETS.names():
            raise ConfigError(f"unknown summary kind {self.synset!r}; known: "
                              f"{', '.join(SYNSETS.names())}")
        if self.synset_args is not None and not isinstance(self.synset_args, dict):
            raise ConfigError(f"synset_args must be a dict of the kind's options, got "
                              f"{self.synset_args!r}")
        kind = self.summary_kind()
        if self.synset_kinds is not None and kind not in self.synset_kinds:
            raise ConfigError(self._kind_refusal(kind))

    # -- the summary ----------------------------------------------------------------------------
    def summary_kind(self) -> str:
        """The summary kind this configuration distills (``synset`` or the method's own)."""
        return self.synset or self.synset_kind

    def default_synset_args(self, kind: str) -> dict[str, Any]:
        """The method's own options for ``kind`` (e.g. IDC: ``factor`` for multiformation)."""
        return {}

    def summary_args(self) -> dict[str, Any]:
        kind = self.summary_kind()
        return {**self.default_synset_args(kind), **(self.synset_args or {})}

    def _kind_refusal(self, kind: str) -> str:
        return (f"{self.name} cannot optimize a {kind!r} summary (it handles "
                f"{', '.join(self.synset_kinds or ())}); pair {kind!r} with a method that reaches "
                f"the summary through materialize(), e.g. dm, dc, dsa, mtt")

    def check_synset(self, syn: SyntheticSet) -> None:
        if self.synset_kinds is not None and syn.kind not in self.synset_kinds:
            raise ConfigError(self._kind_refusal(syn.kind))

    def init_synset(self, real: RealData, *, ipc: int | None = None, **budget: Any) -> SyntheticSet:
        """``ipc`` stored examples (codes, images) per class of the chosen kind (``synset``, by
        default the method's ``synset_kind``) with its options (``synset_args``), at the chosen
        ``storage``, initialised by ``init`` from a generator seeded with ``seed``."""
        from ..synsets import SYNSETS, init_from

        if budget:
            raise ConfigError(f"{self.name} takes an ipc budget, not {sorted(budget)}")
        if ipc is None:
            raise ConfigError(f"{self.name} needs --ipc")
        kind, args = self.summary_kind(), self.summary_args()
        if kind != self.synset_kind and real.info.modality != "image":
            raise ConfigError(f"the summary kind is a choice for image data; {self.name} on "
                              f"{real.info.modality} data uses {self.synset_kind!r}")
        cls = SYNSETS.get(kind)
        sig = inspect.signature(cls.__init__).parameters
        own = [k for k in sig if k not in ("self", "info", "ipc", "label_format", "lr")
               and sig[k].kind == inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(args) - set(own))
        if unknown and not any(v.kind == inspect.Parameter.VAR_KEYWORD for v in sig.values()):
            raise ConfigError(f"summary kind {kind!r} has no option(s) {unknown}; its options: "
                              f"{', '.join(own) or 'none'}")
        try:
            return init_from(real, ipc, kind=kind, init=self.init,
                             generator=make_generator(self.seed), label_format=self.label_format,
                             storage=self.storage, **args)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.name} with a {kind!r} summary: {e}") from None

    def setup(self, real: RealData, syn: SyntheticSet) -> None:
        super().setup(real, syn)
        self.dsa_ = DSA.for_data(real.info, self.dsa_strategy) if self.dsa else None

    def extra_meta(self) -> dict[str, Any]:
        dsa = getattr(self, "dsa_", None)
        return {"dsa_strategy": dsa.strategy if dsa is not None else None}

    def augment(self, x, params):
        return x if params is None else self.dsa_.apply(x, params)

    def sample_augment(self, real: RealData):
        """One siamese parameter set (shared by a real and a synthetic batch), or None."""
        if self.dsa_ is None:
            return None
        return self.dsa_.sample(None, self.gen_, tuple(real.info.shape[-2:]))
