"""GCond — Jin et al., "Graph Condensation for Graph Neural Networks", ICLR'22.

    min_{X', Φ}  E_{θ_0}[ Σ_t Σ_c  w_c · D( ∇_θ L(GNN_θt(A, X)_c, Y_c),
                                          ∇_θ L(GNN_θt(A', X')_c, Y'_c) ) ],
    A' = PGE_Φ(X') (a pairwise MLP, see ``synsets.graph``),  θ_{t+1} = θ_t - η ∇_θ L(GNN_θt(A', X'), Y')

Each iteration (GCond's "epoch") draws a fresh relay GNN θ_0 and runs ``outer_loop`` steps:
per class c, the gradient of the loss on the real training nodes of c (forward on the whole real
graph) is matched to the gradient on the synthetic nodes of c with DC's layer-wise distance
(``objectives.gradient_distance``), weighted by w_c = n'_c / max n'; then either Φ or X' takes
an Adam step — Φ for the first ``adj_steps`` of every ``adj_every`` iterations, X' otherwise —
and θ is trained ``inner_loop`` Adam steps on the (fixed) synthetic graph.

Published defaults (Cora / CiteSeer scripts): relay SGC with K = 2 (``--sgc 1 --nlayers 2``),
hidden 256, no dropout, 600 iterations, outer/inner loops 20 / 15, Adam with lr 1e-4 for X'
(``lr_data``) and Φ (``lr_adj``), 0.01 for θ; PGE 3 layers of 128; X' initialised from random
training nodes of each class. The budget is ``ratio`` of *all* nodes (GCond's table: Cora
1.3 / 2.6 / 5.2 %, CiteSeer 0.9 / 1.8 / 3.6 %) = 25 / 50 / 100 % of the labelled nodes; class
sizes follow the labelled-node distribution (the largest class takes the remainder).
Deviation: real-graph gradients use the exact full-neighbourhood forward instead of the
reference's per-class neighbour sampler (sizes [10, 5], batch 256) — the sampler's limit.
Presets ``cpu-100``/``cpu-200`` only shorten the run; ``tiny`` is for tests.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import torch.nn.functional as F

from ..models import MODELS, init_parameters
from ..objectives import GRADIENT_METRICS, gradient_distance
from ..runtime import make_generator
from ..synsets.graph import node_budget
from ..errors import ConfigError
from .base import DISTILLERS, Distiller


@DISTILLERS.register("gcond")
@dataclasses.dataclass(kw_only=True)
class GCond(Distiller):
    """Graph Condensation (Jin et al., ICLR'22): gradient matching on node classification,
    sum_t sum_c w_c D(grad L(GNN(A, X)_c), grad L(GNN(A', X')_c)) with A' = PGE_phi(X'), the
    relay GNN trained on the synthetic graph between matching steps."""

    name = "gcond"
    synset_kind = "graph"
    test_dataset = "cora"
    test_budget = {"ratio": 0.013}
    presets = {"cpu-100": {"iterations": 100}, "cpu-200": {"iterations": 200},
               "tiny": {"iterations": 3, "outer_loop": 2, "inner_loop": 1, "adj_every": 2,
                        "adj_steps": 1}}

    model: str = "sgc"
    iterations: int = 600
    lr_data: float = 1e-4       # Adam on the node features X' (GCond's lr_feat)
    lr_adj: float = 1e-4        # Adam on the PGE parameters Φ
    lr_model: float = 0.01      # Adam on the relay GNN θ (inner loop)
    outer_loop: int = 20
    inner_loop: int = 15
    adj_every: int = 50
    adj_steps: int = 10
    hidden: int = 256
    metric: str = "ours"
    structure: str = "pge"      # "pge" (GCond) or "none" (GCond-X: no edges)
    pge_hidden: int = 128
    pge_layers: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.metric not in GRADIENT_METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; known: {', '.join(GRADIENT_METRICS)}")
        if self.structure not in ("pge", "none", "bernoulli"):
            raise ConfigError(f"unknown structure {self.structure!r}; known: pge, none, bernoulli")
        if self.outer_loop < 1 or self.inner_loop < 0:
            raise ConfigError("outer_loop must be >= 1 and inner_loop >= 0")

    # -- budget and initialisation --------------------------------------------------------------
    def init_synset(self, real, *, ipc: int | None = None, ratio: float | None = None, **budget):
        """One synthetic graph with ``ratio`` of the real graph's nodes; features from random
        labelled nodes of each class (``init="real"``) or Gaussian noise."""
        from ..synsets.graph import GraphSet

        if budget or ipc is not None:
            raise ConfigError(f"{self.name} on node classification takes --ratio (fraction of all "
                              f"nodes), not {sorted(budget) or ['ipc']}")
        if real.info.task != "node":
            raise ConfigError(f"{self.name} needs a node-classification graph (cora, citeseer, ...); "
                              f"got {real.info.name}")
        if ratio is None:
            raise ConfigError(f"{self.name} needs --ratio, e.g. 0.026 for 2.6% of the nodes")
        counts = node_budget(real.class_counts(), real.num_nodes, ratio)
        gen = make_generator(self.seed)
        syn = GraphSet(real.info, counts=counts, adjacency=self.structure,
                       pge_hidden=self.pge_hidden, pge_layers=self.pge_layers)
        with torch.no_grad():
            for c, n in enumerate(counts):
                idx = real.class_indices(c)
                if self.init == "real":
                    pick = idx[torch.randperm(len(idx), generator=gen)[:n]]
                    syn.x[syn.class_slice(c)] = real.x[pick.to(real.device)].cpu()
                else:
                    syn.x[syn.class_slice(c)] = torch.randn(n, real.info.shape[0], generator=gen)
            if self.structure == "pge":
                init_parameters(syn.pge, gen)
        labelled = sum(real.class_counts())
        syn.meta.update({"ratio": ratio, "num_nodes_real": real.num_nodes,
                         "ratio_of_labelled": round(sum(counts) / labelled, 4)})
        return syn

    # -- the loop --------------------------------------------------------------------------------
    def make_optimizer(self, syn):
        return torch.optim.Adam([syn.x], lr=self.lr_data)

    def setup(self, real, syn):
        super().setup(real, syn)
        structure = [p for n, p in syn.named_parameters() if n.startswith(("pge.", "adj_logits"))]
        self.opt_adj_ = torch.optim.Adam(structure, lr=self.lr_adj) if structure else None
        self.it_ = 0
        self.real_ = real.to(self.device_)
        self.real_embed_ = None

    def extra_state(self) -> dict[str, Any]:
        return {"it": self.it_, "opt_adj": None if self.opt_adj_ is None else self.opt_adj_.state_dict()}

    def load_extra_state(self, state):
        self.it_ = state["it"]
        if self.opt_adj_ is not None and state.get("opt_adj") is not None:
            self.opt_adj_.load_state_dict(state["opt_adj"])

    def relay_model(self, info):
        """A fresh relay GNN from the generator (no dropout; ``hidden`` where the model has it)."""
        accepted = inspect.signature(MODELS.get(self.model)).parameters
        kw = {k: v for k, v in (("hidden", self.hidden), ("dropout", 0.0)) if k in accepted}
        return self.make_model(self.model, info, generator=self.gen_, **kw)

    def real_logits(self, net, real) -> torch.Tensor:
        """Logits of the labelled training nodes (forward on the whole real graph). A relay
        whose ``embed`` has no parameters (SGC: A_hat^K X) has it computed once and cached."""
        if getattr(net, "param_free_embed", False):
            if getattr(self, "real_embed_", None) is None:
                with torch.no_grad():
                    self.real_embed_ = net.embed(real.x_input, real.edge_index)[real.train_idx]
            return net.head(self.real_embed_)
        return net(real.x_input, real.edge_index)[real.train_idx]

    def real_gradients(self, net, params, real) -> list[list[torch.Tensor]]:
        """Per class, the gradient of the loss on the real labelled nodes of that class."""
        out = self.real_logits(net, real)
        y = real.y[real.train_idx]
        grads = []
        for c in range(real.info.num_classes):
            sel = y == c
            loss = F.cross_entropy(out[sel], y[sel])
            grads.append([g.detach() for g in torch.autograd.grad(loss, params, retain_graph=True)])
        return grads

    def matching_loss(self, net, real, syn, inputs) -> torch.Tensor:
        """Σ_c w_c D(∇θ L_real_c, ∇θ L_syn_c)."""
        params = [p for p in net.parameters() if p.requires_grad]
        g_real = self.real_gradients(net, params, real)
        out = net(*inputs[:3])
        ids = syn.class_ids
        biggest = max(syn.counts)
        loss = out.new_zeros(())
        for c in range(real.info.num_classes):
            sl = syn.class_slice(c)
            g_syn = torch.autograd.grad(F.cross_entropy(out[sl], ids[sl]), params, create_graph=True)
            loss = loss + syn.counts[c] / biggest * gradient_distance(g_real[c], g_syn, self.metric)
        return loss

    def inner_loss(self, net, real, syn, inputs) -> torch.Tensor:
        """What θ minimises between matching steps: the classification loss on the (fixed)
        synthetic graph."""
        return F.cross_entropy(net(*inputs[:3]), syn.class_ids)

    def update_structure_now(self) -> bool:
        return self.opt_adj_ is not None and self.it_ % self.adj_every < self.adj_steps

    def matching_update(self, net, real, syn, structure_turn: bool) -> float:
        """One matching step: the loss on a fresh sample of the summary, then a step of the
        features' (or, on a structure turn, the adjacency's) optimizer; returns the loss."""
        loss = self.matching_loss(net, real, syn, syn.inputs(self.gen_, self.temperature()))
        self.optimizer_.zero_grad(set_to_none=True)
        if self.opt_adj_ is not None:
            self.opt_adj_.zero_grad(set_to_none=True)
        loss.backward()
        (self.opt_adj_ if structure_turn else self.optimizer_).step()
        return float(loss.detach())

    def step(self, real, syn):
        real = self.real_
        net = self.relay_model(real.info)
        opt_net = torch.optim.Adam(net.parameters(), lr=self.lr_model)
        structure_turn = self.update_structure_now()
        total = 0.0
        for ol in range(self.outer_loop):
            net.train()
            total += self.matching_update(net, real, syn, structure_turn)
            if ol == self.outer_loop - 1:
                break
            with torch.no_grad():
                fixed = syn.inputs()
            for _ in range(self.inner_loop):
                opt_net.zero_grad(set_to_none=True)
                self.inner_loss(net, real, syn, fixed).backward()
                opt_net.step()
        self.it_ += 1
        return {"loss": total / (self.outer_loop * real.info.num_classes),
                "structure_step": float(structure_turn)}

    def temperature(self) -> float:
        return 1.0
