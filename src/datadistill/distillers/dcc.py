"""DCC — Lee et al., "Dataset Condensation with Contrastive Signals", ICML'22.

Survey eq. (8): DC matches every class on its own, so nothing in the objective separates the
classes; DCC matches the *class-averaged* gradients instead, so the synthetic set must also
reproduce how the classes pull the network against each other (the contrastive signal):

    min_S  sum_t  D( (1/C) sum_c grad l(T_c; theta_t),  (1/C) sum_c grad l(S_c; theta_t) )

Warm-up (reference ``--outer_warmup 250 --inner_warmup 10``): a matching round uses DC's
per-class loss (eq. 7) while ``it < outer_warmup`` *and* ``round < inner_warmup``, the
contrastive loss otherwise (``it``: outer iteration, checkpointed; ``round``: matching step
within it). With the published 1000 iterations the first 250 are DC's at IPC 1 and 10.

Everything else is DC's (DCC is built on the DC/DSA code): a fresh network per outer iteration,
the inner loop on S, the layer-wise distance, the loops by IPC except at IPC 1 where DCC's own
``get_loops`` gives (10, 5) (DC's: (1, 1)), 1000 iterations, lr_img 0.1, lr_net 0.01,
batch_real 256 per class; the summary starts from random real images (the reference does so in
its DC and DSA variants alike). Preset ``dsac`` is the paper's DSA variant (siamese
augmentation); ``cpu-200`` scales the warm-up with the budget (50 of 200 iterations) so a short
run keeps the published share of contrastive iterations; ``tiny`` warms up for one iteration.
The real-data term is accumulated class by class (gradients are linear, so this is the gradient
of the averaged loss without holding every class's graph).
"""
from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from ..objectives import gradient_distance
from .base import DISTILLERS
from .dc import DC

#: DCC's own ``get_loops`` where it differs from DC's: IPC -> (outer_loop, inner_loop).
DCC_LOOPS = {1: (10, 5)}


@DISTILLERS.register("dcc")
@dataclasses.dataclass(kw_only=True)
class DCC(DC):
    """Dataset Condensation with Contrastive signals (Lee et al., ICML'22), survey eq. (8):
    D(mean_c grad l(T_c), mean_c grad l(S_c)) — class-collaborative gradient matching."""

    name = "dcc"
    presets = {**DC.presets,
               "tiny": {**DC.presets["tiny"], "outer_warmup": 1},
               "cpu-200": {"iterations": 200, "outer_warmup": 50},
               "dsac": {"dsa": True},
               "dsac-tiny": {**DC.presets["tiny"], "outer_warmup": 1, "dsa": True}}

    init: str = "real"  # the reference starts from random real images (DC and DSA variants)
    outer_warmup: int = 250  # reference: DC's loss while iteration < outer_warmup ...
    inner_warmup: int = 10  # ... and matching round < inner_warmup

    def __post_init__(self):
        super().__post_init__()
        if self.outer_warmup < 0 or self.inner_warmup < 0:
            raise ConfigError("outer_warmup and inner_warmup must be >= 0")

    def setup(self, real, syn):
        super().setup(real, syn)
        ipc = int(round(syn.ipc))
        if ipc in DCC_LOOPS:
            outer, inner = DCC_LOOPS[ipc]
            self.outer_ = self.outer_loop if self.outer_loop is not None else outer
            self.inner_ = self.inner_loop if self.inner_loop is not None else inner
        self.it_, self.round_ = 0, 0

    def step(self, real, syn):
        self.round_ = 0
        out = super().step(real, syn)
        self.it_ += 1
        return out

    def extra_state(self):
        return {**super().extra_state(), "it": self.it_}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.it_ = int(state.get("it", 0))

    def warming_up(self) -> bool:
        """The reference's switch: DC's loss while ``it < outer_warmup and round < inner_warmup``."""
        return self.it_ < self.outer_warmup and self.round_ < self.inner_warmup

    def matching_loss(self, net, real, syn):
        warm = self.warming_up()
        self.round_ += 1
        if warm:
            return super().matching_loss(net, real, syn)
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
