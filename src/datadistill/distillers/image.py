"""The image layer of the distillation loop: what every image method shares on top of the
modality-neutral ``Distiller`` — a network name, differentiable siamese augmentation (DSA),
initialisation of the summary from real images (or noise), real batches per class."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..augment import DEFAULT_STRATEGY, DSA
from ..data.base import RealData
from ..errors import ConfigError
from ..runtime import make_generator
from ..synsets.base import SyntheticSet
from .base import Distiller


@dataclasses.dataclass(kw_only=True)
class ImageDistiller(Distiller):
    """Base configuration shared by the image methods."""

    model: str = "convnet"
    batch_real: int = 256
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY

    def init_synset(self, real: RealData, *, ipc: int | None = None, **budget: Any) -> SyntheticSet:
        """``ipc`` stored examples per class of ``synset_kind``, initialised by ``init`` from a
        generator seeded with ``seed``."""
        from ..synsets import init_from

        if budget:
            raise ConfigError(f"{self.name} takes an ipc budget, not {sorted(budget)}")
        if ipc is None:
            raise ConfigError(f"{self.name} needs --ipc")
        return init_from(real, ipc, kind=self.synset_kind, init=self.init,
                         generator=make_generator(self.seed), label_format=self.label_format)

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
