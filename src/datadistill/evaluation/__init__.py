"""Evaluation: one protocol per modality, found through an explicit table.

``evaluate(syn, real)`` trains fresh models on a summary and tests them on the real test split.
Which evaluator runs is decided by the summary's modality in ``EVALUATORS`` (``image``: the field's
ConvNet protocol, ``graph``: GNNs with validation-based selection, ``recsys``: recommenders
ranked on held-out interactions); each is imported when first needed, so graph or recommender
dependencies are only loaded for those summaries. How fast it runs is ``run`` (``RunOptions``,
auto by default), recorded in the report, never a protocol setting.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from .. import perf
from ..errors import ConfigError
from ..runtime import RunOptions
from ..synsets.base import SyntheticSet
from .base import PROTOCOLS, PUBLISHED_FULL, EvalReport, Protocol, accuracy_stats, get_protocol  # noqa: F401

#: modality -> "module:function" of its evaluator (signature of ``images.evaluate_images``)
EVALUATORS: dict[str, str] = {
    "image": "images:evaluate_images",
    "graph": "graphs:evaluate_graph",
    "recsys": "recsys:evaluate_recsys",
    "text": "text:evaluate_text",
    "tabular": "tabular:evaluate_tabular",
}


def evaluator(modality: str) -> Callable[..., EvalReport]:
    """The evaluate function registered for ``modality`` in ``EVALUATORS``."""
    if modality not in EVALUATORS:
        raise ConfigError(f"no evaluator for modality {modality!r}; known: "
                          f"{', '.join(EVALUATORS)}")
    module, fn = EVALUATORS[modality].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), fn)


def evaluate(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
             protocol: str | Protocol = "fast", num_models: int | None = None, seed: int = 0,
             full_reference: bool | str | dict = False,
             on_model: Callable[[dict[str, Any]], None] | None = None,
             run: RunOptions | None = None, state_dir=None) -> EvalReport:
    """Train ``num_models`` fresh models per architecture on ``syn``; test on ``real.test``.

    ``protocol`` is a name (``paper``, ``fast``, ``smoke``; each modality has its own table) or an
    image ``Protocol``; ``num_models`` overrides its model count (recorded in ``overrides``). With
    ``full_reference`` the cached full-data accuracy of each architecture is reported beside
    (images: True = the converged reference; or a preset name of
    ``evaluation.reference.FULL_PRESETS``; its epochs and augmentation are recorded).
    ``run`` says how fast (device, precision, fused kernels, compile; default auto).
    ``state_dir`` (image summaries, whose models train longest): a folder where each model's
    training state and result are kept, so that an interrupted evaluation called again with it
    continues where it stopped, with the same results (``evaluation.images``).
    """
    modality = syn.info.modality
    fn = evaluator(modality)
    resolved = perf.resolve(run)
    with perf.activate(resolved):
        if modality != "image":
            if state_dir is not None:
                raise ConfigError(f"state_dir is for image summaries (their models train for "
                                  f"minutes to hours); {modality} evaluations restart")
            return fn(syn, real, models=models, protocol=protocol, num_models=num_models,
                      seed=seed, full_reference=full_reference, on_model=on_model, run=resolved)
        proto = get_protocol(protocol)
        overrides: dict[str, Any] = {}
        if num_models is not None and num_models != proto.num_models:
            overrides["num_models"] = num_models
            proto = dataclasses.replace(proto, num_models=num_models)
        return fn(syn, real, models=models, protocol=proto, overrides=overrides, seed=seed,
                  full_reference=full_reference, on_model=on_model, run=resolved,
                  state_dir=state_dir)
