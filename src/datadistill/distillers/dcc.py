"""DCC — Lee et al., "Dataset Condensation with Contrastive Signals", ICML'22.

Survey eq. (8): DC matches every class on its own, so nothing in the objective separates the
classes; DCC matches the *class-averaged* gradients instead, so the synthetic set must also
reproduce how the classes pull the network against each other (the contrastive signal):

    min_S  sum_t  D( (1/C) sum_c grad l(T_c; theta_t),  (1/C) sum_c grad l(S_c; theta_t) )

Everything else is DC's (DCC is built on the DC/DSA code): a fresh network per outer iteration,
the inner loop on S, the layer-wise distance, the loops by IPC, 1000 iterations, lr_img 0.1,
lr_net 0.01, batch_real 256 per class. Preset ``dsac`` is the paper's DSA variant (siamese
augmentation, real initialisation). The real-data term is accumulated class by class (gradients
are linear, so this is the gradient of the averaged loss without holding every class's graph).
"""
from __future__ import annotations

import dataclasses

from ..objectives import gradient_distance
from .base import DISTILLERS
from .dc import DC


@DISTILLERS.register("dcc")
@dataclasses.dataclass(kw_only=True)
class DCC(DC):
    """Dataset Condensation with Contrastive signals (Lee et al., ICML'22), survey eq. (8):
    D(mean_c grad l(T_c), mean_c grad l(S_c)) — class-collaborative gradient matching."""

    name = "dcc"
    presets = {**DC.presets, "dsac": {"dsa": True, "init": "real"},
               "dsac-tiny": {**DC.presets["tiny"], "dsa": True, "init": "real"}}

    def matching_loss(self, net, real, syn):
        params = self.matched_parameters(net)
        g_real = g_syn = None
        k = 0
        for xr, yr, xs, ys in self.class_batches(real, syn):
            gr = self.loss_gradient(net, params, xr, yr)
            gs = self.loss_gradient(net, params, xs, ys, syn.label_format, create_graph=True)
            g_real = gr if g_real is None else [a + b for a, b in zip(g_real, gr)]
            g_syn = gs if g_syn is None else [a + b for a, b in zip(g_syn, gs)]
            k += 1
        return gradient_distance([g / k for g in g_real], [g / k for g in g_syn], self.metric)
