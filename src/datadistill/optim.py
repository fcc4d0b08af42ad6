"""Optimizers the meta-model methods' authors use that ``torch.optim`` lacks, written from their
papers (no third-party code), and the learning-rate schedule FRePO uses.

* ``AdaBelief`` — Zhuang et al., NeurIPS'20, Algorithm 2 (RFAD's optimizer, eps 1e-16)::

      m_t = b1 m + (1 - b1) g,      s_t = b2 s + (1 - b2) (g - m_t)^2 + eps
      theta -= lr * (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + eps)

* ``Lamb`` — You et al., ICLR'20, Algorithm 2 (FRePO's optimizer, eps 1e-6, no weight decay);
  the trust ratio is taken per parameter tensor, and is 1 where either norm is 0::

      m, v = Adam's moments;   r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * theta
      theta -= lr * (||theta|| / ||r||) * r

* ``cosine_decay(t, total, alpha)`` — the factor of a cosine decay from 1 to ``alpha`` over
  ``total`` steps (then constant): ``(1 - alpha) (1 + cos(pi min(t, total) / total)) / 2 + alpha``.
"""
from __future__ import annotations

import math

import torch


class _MomentOptimizer(torch.optim.Optimizer):
    """The loop both optimizers share: per parameter with a gradient, a step counter and two
    moment buffers (``SECOND`` names the second), then the subclass's ``_update``."""

    SECOND = "exp_avg_sq"

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st[self.SECOND] = torch.zeros_like(p)
                st["step"] += 1
                self._update(p, p.grad, st["exp_avg"], st[self.SECOND], st["step"], group)
        return loss

    def _update(self, p, g, m, second, t, group) -> None:
        raise NotImplementedError


class AdaBelief(_MomentOptimizer):
    """AdaBelief (no weight decay, no rectification): Adam with the second moment of the
    gradient's deviation from its running mean."""

    SECOND = "exp_avg_var"

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16):
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdaBelief settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    def _update(self, p, g, m, s, t, group):
        (b1, b2), eps = group["betas"], group["eps"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        dev = g - m
        s.mul_(b2).addcmul_(dev, dev, value=1 - b2).add_(eps)
        denom = (s / (1 - b2 ** t)).sqrt_().add_(eps)
        p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))


class Lamb(_MomentOptimizer):
    """LAMB: Adam's bias-corrected direction (plus decoupled weight decay), rescaled per
    parameter tensor by the trust ratio ||theta|| / ||direction||."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, m, v, t, group):
        b1, b2 = group["betas"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        r = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt_().add_(group["eps"]))
        if group["weight_decay"]:
            r.add_(p, alpha=group["weight_decay"])
        p_norm, r_norm = float(p.norm()), float(r.norm())
        ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
        p.add_(r, alpha=-group["lr"] * ratio)


def cosine_decay(t: int, total: int, alpha: float = 0.0) -> float:
    """Factor of the learning rate at step ``t`` (0-based) of a cosine decay to ``alpha`` over
    ``total`` steps (optax's ``cosine_decay_schedule`` divided by its initial value)."""
    if total <= 0:
        return 1.0
    c = 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    return (1 - alpha) * c + alpha


class JointOptimizer:
    """Several optimizers stepped together (e.g. SGD on a factorized summary's codes, Adam on its
    decoders), with one ``state_dict`` so checkpoints and resume work as for a single one."""

    def __init__(self, **parts: torch.optim.Optimizer):
        self.parts = parts
        self.param_groups = [g for o in parts.values() for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.parts.values():
            o.step()

    def state_dict(self) -> dict:
        return {k: o.state_dict() for k, o in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, o in self.parts.items():
            o.load_state_dict(state[k])
