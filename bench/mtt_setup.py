"""Shared set-up of the memory and speed benchmarks: a distiller on Fashion-MNIST IPC 10 whose
expert segment is synthetic (the model's seeded initialisation and a displaced copy), because the
cost of an iteration does not depend on the expert's values; the accuracy benchmark uses real
cached experts."""
from __future__ import annotations

import torch

from datadistill.data import load_dataset
from datadistill.distillers import create_distiller
from datadistill.experts import ExpertTrajectories, flat_parameters
from datadistill.models import create_model


class SyntheticExperts(ExpertTrajectories):
    def __init__(self, real, model, epochs):
        net = create_model(model, real.info, generator=torch.Generator().manual_seed(0))
        p0 = flat_parameters(net)
        g = torch.Generator().manual_seed(1)
        steps = [p0]
        for _ in range(epochs):
            steps.append(steps[-1] + 1e-3 * torch.randn(p0.shape, generator=g))
        self.traj = torch.stack(steps)
        self.num_params = p0.numel()

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.traj


def make(method: str, real=None, *, ipc: int = 10, **params):
    real = real if real is not None else load_dataset("fashion-mnist")
    d = create_distiller(method, device="cpu", num_experts=1, train_epochs=3, expert_epochs=2,
                         max_start_epoch=2, **params)
    d.experts = lambda r: SyntheticExperts(r, d.model, d.train_epochs)
    syn = d.init_synset(real, ipc=ipc)
    d.setup(real, syn)
    return real, d, syn
