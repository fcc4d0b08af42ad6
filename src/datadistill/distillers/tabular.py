"""The tabular layer: DM and gradient matching on table rows in the encoded space.

The summary is a ``TabularSet`` (``synsets/tabular.py``): free standardized numeric values and
one logit vector per categorical column, relaxed by a softmax during distillation and decoded
to valid categories for export and evaluation. The network is the MLP (``mlp``), DSA is off.
"""
from __future__ import annotations

import dataclasses

from .base import DISTILLERS
from .dc import DC
from .dm import DM
from .text import own_presets


@DISTILLERS.register("dm-tabular")
@dataclasses.dataclass(kw_only=True)
class DMTabular(DM):
    """DM on tables (Zhao & Bilen, WACV'23): min_S sum_c || mean phi(T_c) - mean phi(S_c) ||^2
    over encoded rows, phi a freshly initialised MLP every iteration, categorical columns of S
    relaxed by a softmax over their categories."""

    name = "dm-tabular"
    synset_kind = "tabular"
    test_dataset = "tabular-toy"
    presets = own_presets(DM.presets, tiny={"iterations": 3, "batch_real": 16})
    run_defaults = {"fused": False}  # (the fused kernels are the ConvNet's)
    model: str = "mlp"
    dsa: bool = False


@DISTILLERS.register("dc-tabular")
@dataclasses.dataclass(kw_only=True)
class DCTabular(DC):
    """DC on tables (Zhao et al., ICLR'21): per-class gradient matching sum_c D(grad l(T_c),
    grad l(S_c)) with an MLP over encoded rows, categorical columns relaxed by a softmax."""

    name = "dc-tabular"
    synset_kind = "tabular"
    test_dataset = "tabular-toy"
    presets = own_presets(DC.presets, tiny={"iterations": 2, "batch_real": 16, "outer_loop": 2,
                                            "inner_loop": 2})
    init: str = "real"
    run_defaults = {"fused": False}  # (the fused kernels are the ConvNet's)
    model: str = "mlp"
    dsa: bool = False
