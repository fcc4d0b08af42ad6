"""DSA — Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML'21.

DC's objective with the same differentiable augmentation ``A_w`` (one sampled ``w`` per class
and step, shared by both batches) applied to the real and the synthetic batch:

    min_S  sum_t sum_c  D( grad l(A_w(T_c); theta_t), grad l(A_w(S_c); theta_t) )

and per-example DSA when the inner loop trains the network on the summary. Published defaults:
DC's (1000 iterations, lr_img 0.1, lr_net 0.01, batch_real 256, the same loops by IPC) with
strategy ``color_crop_cutout_flip_scale_rotate`` (no flip for digits) and real initialisation.
"""
from __future__ import annotations

import dataclasses

from .base import DISTILLERS
from .dc import DC


@DISTILLERS.register("dsa")
@dataclasses.dataclass(kw_only=True)
class DSA(DC):
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML'21): DC's gradient matching with one
    augmentation A_w shared by the real and synthetic batch; real initialisation."""

    name = "dsa"
    presets = dict(DC.presets)

    init: str = "real"
    dsa: bool = True
