"""FRePO — Dataset Distillation using Neural Feature Regression (Zhou, Nezhadarya & Ba, NeurIPS'22).

Survey eq. (6): only the last layer is solved in closed form; the feature extractor is a
finite network trained *online on the summary*,

    min_{X_s, Y_s}  1/2 || Y_t - K^theta_ts (K^theta_ss + lambda' I)^{-1} Y_s ||^2,
    K^theta(x, x') = <f_theta(x), f_theta(x')>,   lambda' = lambda tr(K^theta_ss) / n,

where theta is drawn from a pool of models; after each outer step the drawn model takes one
optimizer step on the summary (MSE on (X_s, Y_s)) and is re-initialised once it has taken
``max_online_updates`` steps. Targets are centred one-hot (one-hot - 1/K); labels are learned.
Published defaults: a pool of 10 models, max online updates 100, Adam lr 3e-4 on the summary
(the reference code uses LAMB-style Adam with lr 3e-4 on images and labels) and on the pool
models, lambda 1e-6 trace-scaled, real initialisation, target batch 1024, no augmentation.
The pool's models start staggered (model i as if it had taken i * max/pool updates) so that
re-initialisations are spread over time, as the reference's random starting steps intend.
"""
from __future__ import annotations

import dataclasses

import torch

from ..train import label_loss
from ..errors import ConfigError
from .base import DISTILLERS
from .krr_base import KRRDistiller


@DISTILLERS.register("frepo")
@dataclasses.dataclass(kw_only=True)
class FRePO(KRRDistiller):
    """Neural feature regression: KRR on features of a model pool trained online on the summary."""

    name = "frepo"
    presets = {
        "cpu-200": {"iterations": 200, "batch_real": 256},
        "cpu-60": {"iterations": 60, "batch_real": 250, "pool_size": 10, "max_online_updates": 100},
        "tiny": {"iterations": 4, "batch_real": 64, "pool_size": 2, "max_online_updates": 2},
    }

    iterations: int = 5000
    lr_data: float = 3e-4
    lr_model: float = 3e-4
    center_labels: bool = True
    batch_real: int = 1024
    pool_size: int = 10
    max_online_updates: int = 100

    def __post_init__(self):
        super().__post_init__()
        if self.pool_size < 1 or self.max_online_updates < 1:
            raise ConfigError("pool_size and max_online_updates must be >= 1")

    def setup(self, real, syn):
        super().setup(real, syn)
        self.info_ = real.info
        self.pool_ = [self._fresh_model() for _ in range(self.pool_size)]
        self.steps_ = [i * self.max_online_updates // self.pool_size for i in range(self.pool_size)]

    def _fresh_model(self):
        net = self.make_model(self.model, self.info_, generator=self.gen_)
        return net, torch.optim.Adam(net.parameters(), lr=self.lr_model)

    def extra_state(self):
        return {"models": [net.state_dict() for net, _ in self.pool_],
                "optimizers": [opt.state_dict() for _, opt in self.pool_],
                "steps": list(self.steps_)}

    def load_extra_state(self, state):
        for (net, opt), m, o in zip(self.pool_, state["models"], state["optimizers"]):
            net.load_state_dict(m)
            opt.load_state_dict(o)
        self.steps_ = list(state["steps"])

    def step(self, real, syn):
        i = int(torch.randint(self.pool_size, (1,), generator=self.gen_))
        net, opt = self.pool_[i]
        x_t, y_t = self.real_batch(real)
        x_s, y_s = syn.materialize()
        net.train().requires_grad_(False)
        f_s = net.embed(x_s)
        with torch.no_grad():
            f_t = net.embed(x_t)
        pred = self.krr(f_s @ f_s.T, f_t @ f_s.T, y_s)
        loss = 0.5 * ((pred - y_t) ** 2).sum(1).mean()
        self.update(loss)
        # one online step of the drawn model on the (updated) summary
        net.requires_grad_(True)
        x_s, y_s = (t.detach() for t in syn.materialize())
        online = label_loss(net(x_s), y_s, "regression")
        opt.zero_grad(set_to_none=True)
        online.backward()
        opt.step()
        self.steps_[i] += 1
        if self.steps_[i] >= self.max_online_updates:
            self.pool_[i], self.steps_[i] = self._fresh_model(), 0
        acc = float((pred.argmax(1) == y_t.argmax(1)).float().mean())
        return {"loss": float(loss.detach()), "batch_acc": acc, "online_loss": float(online.detach())}
