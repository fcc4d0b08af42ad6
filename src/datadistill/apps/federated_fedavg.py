"""FedAvg (McMahan et al. 2017), the baseline of the federated app (``federated.py``): every
round each client starts from the global model, trains ``local_epochs`` of SGD on its data, and
the server averages the models weighted by the clients' example counts. ``backend="flwr"`` runs
the same rounds through Flower's ``FedAvg`` strategy and ``NumPyClient`` API, in process (no Ray,
no network); ``"plain"`` is this module's loop, which computes the same average (checked against
Flower in the tests). A model transfer is every parameter and buffer at its dtype
(``model_bytes``), sent down and up once per client per round.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.base import RealData
from ..errors import ConfigError
from ..runtime import RunOptions, derive_seed, make_generator
from . import _common as C

BACKENDS = ("auto", "plain", "flwr")


def model_bytes(net: nn.Module) -> int:
    """Bytes of one model transfer: every parameter and buffer at its dtype."""
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def weighted_average(states: Sequence[dict[str, Tensor]], weights: Sequence[int]) -> dict[str, Tensor]:
    """sum_k (n_k / n) state_k, in client order, as Flower's ``aggregate_inplace`` computes it
    (each factor in float64, the products and the sum at the tensor's dtype). Integer buffers
    (e.g. batch norm's counter) take the first client's value."""
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = None
        for s, n in zip(states, weights):
            term = (s[key].double() * (n / total)).to(first.dtype)
            acc = term if acc is None else acc + term
        out[key] = acc
    return out


class _Trainer:
    """Local training of one client: ``local_epochs`` of SGD from the given weights."""

    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, *, local_epochs: int, lr: float,
                 momentum: float, weight_decay: float, batch_size: int, seed: int,
                 precision: str):
        self.net, self.x, self.y = net, x, y
        self.kw = dict(epochs=local_epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       batch_size=batch_size, decay_at=None, precision=precision)
        self.seed = seed

    def fit(self, state: dict[str, Tensor], rnd: int) -> dict[str, Tensor]:
        from ..train import train_model
        self.net.load_state_dict(state)
        train_model(self.net, self.x, self.y, generator=make_generator(derive_seed(self.seed, rnd)),
                    **self.kw)
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}


def _flwr_rounds(trainers: Sequence[_Trainer], init: dict[str, Tensor], rounds: int,
                 on_round: Callable[[int, dict[str, Tensor]], None]) -> None:
    """FedAvg through Flower's strategy and client API, driven in process."""
    import flwr.client
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg

    keys = list(init)

    def to_state(arrays) -> dict[str, Tensor]:
        return {k: torch.from_numpy(np.array(a)).to(init[k].device) for k, a in zip(keys, arrays)}

    class Client(flwr.client.NumPyClient):
        def __init__(self, trainer: _Trainer):
            self.trainer = trainer

        def fit(self, parameters, config):
            state = self.trainer.fit(to_state(parameters), int(config["round"]))
            return [state[k].cpu().numpy() for k in keys], len(self.trainer.y), {}

    class Proxy(ClientProxy):  # in process: calls the client directly
        def __init__(self, cid: str, client):
            super().__init__(cid)
            self.client = client.to_client()

        def fit(self, ins, timeout, group_id):
            return self.client.fit(ins)

        def get_properties(self, ins, timeout, group_id):
            raise NotImplementedError

        def get_parameters(self, ins, timeout, group_id):
            raise NotImplementedError

        def evaluate(self, ins, timeout, group_id):
            raise NotImplementedError

        def reconnect(self, ins, timeout, group_id):
            raise NotImplementedError

    n = len(trainers)
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_evaluate_clients=0, min_available_clients=n,
                      on_fit_config_fn=lambda r: {"round": r},
                      fit_metrics_aggregation_fn=lambda metrics: {},
                      initial_parameters=ndarrays_to_parameters([v.cpu().numpy() for v in init.values()]))
    manager = SimpleClientManager()
    for i, t in enumerate(trainers):
        manager.register(Proxy(f"{i:06d}", Client(t)))
    params = strategy.initialize_parameters(manager)
    for r in range(1, rounds + 1):
        todo = sorted(strategy.configure_fit(r, params, manager), key=lambda pi: pi[0].cid)
        results = [(proxy, proxy.fit(ins, None, r)) for proxy, ins in todo]
        params, _ = strategy.aggregate_fit(r, results, [])
        on_round(r, to_state(parameters_to_ndarrays(params)))


def fedavg(real: RealData, parts: Sequence[Tensor], *, rounds: int = 10, local_epochs: int = 1,
           lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
           batch_size: int = 64, model: str = "convnet", seed: int = 0,
           run: RunOptions | None = None, backend: str = "auto",
           log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """FedAvg with every client in every round; the global model's test accuracy after each
    round and the cumulative communicated bytes (down + up)."""
    from .. import perf
    from ..models import create_model
    from ..train import accuracy

    backend = resolve_backend(backend)
    if rounds < 1 or local_epochs < 1:
        raise ConfigError(f"rounds and local epochs must be >= 1, got {rounds}, {local_epochs}")
    run = perf.resolve(run)
    dev = torch.device(run.device)
    net = create_model(model, real.info, generator=make_generator(derive_seed(seed, 0)),
                       device=dev, fused=run.fused)
    per_model = model_bytes(net)
    test = real.test.to(dev)
    trainers = [_Trainer(copy.deepcopy(net), real.train.x[p].to(dev), real.train.y[p].to(dev),
                         local_epochs=local_epochs, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, batch_size=batch_size,
                         seed=derive_seed(seed, 1, i), precision=run.precision)
                 for i, p in enumerate(parts)]
    sizes = [len(p) for p in parts]
    curve = [{"round": 0, "accuracy": 100.0 * accuracy(net, test.x, test.y), "bytes": 0,
              "cpu_s": 0.0}]
    c0 = C.cpu_seconds()
    with C.Timer() as t:
        def on_round(r: int, state: dict[str, Tensor]) -> None:
            net.load_state_dict(state)
            acc = 100.0 * accuracy(net, test.x, test.y, precision=run.precision)
            curve.append({"round": r, "accuracy": acc, "bytes": r * 2 * len(parts) * per_model,
                          "cpu_s": C.cpu_seconds() - c0})
            log(f"FedAvg ({backend}) round {r}/{rounds}: {acc:.2f} %")

        init = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if backend == "flwr":
            _flwr_rounds(trainers, init, rounds, on_round)
        else:
            state = init
            for r in range(1, rounds + 1):
                state = weighted_average([tr.fit(state, r) for tr in trainers], sizes)
                on_round(r, state)
    return {"curve": curve, "model_bytes": per_model, "backend": backend, "cpu_s": t.cpu,
            "final_state": {k: v.cpu() for k, v in net.state_dict().items()}}


def have_flwr() -> bool:
    try:
        import flwr.server.strategy  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown FedAvg backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "flwr" if have_flwr() else "plain"
    if backend == "flwr" and not have_flwr():
        raise ConfigError("the FedAvg backend 'flwr' needs `pip install flwr`")
    return backend
