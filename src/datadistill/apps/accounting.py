"""Privacy accounting for the sampled Gaussian mechanism (DP distillation, DP-SGD).

One step releases ``sum_i clip(f(x_i)) + N(0, sigma^2 C^2 I)`` over a Poisson sample of the data
(each example in with probability ``q``); ``T`` steps compose. The Rényi-DP of one step at order
``alpha`` is Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian
Mechanism" (2019): ``log A_alpha / (alpha - 1)`` (integer orders by the binomial sum, fractional
ones by the two erfc-weighted series); ``T`` steps add up, and the total is turned into
``(epsilon, delta)`` by Balle et al. (AISTATS 2020, Thm. 21), minimised over the orders.

``backend="auto"`` uses opacus' ``RDPAccountant`` (the same computation, the reference
implementation; ``pip install opacus``) when it is importable and this module's own
implementation otherwise; ``tests/test_apps_privacy.py`` checks that the two agree and that the
series match a direct numerical integration of the Rényi divergence.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

#: opacus' ``RDPAccountant.DEFAULT_ALPHAS``
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
BACKENDS = ("auto", "opacus", "datadistill")


class PrivacyBudgetError(ConfigError):
    """An (epsilon, delta) that the requested steps and sampling rate cannot meet."""


def have_opacus() -> bool:
    try:
        import opacus.accountants  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown accountant backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "opacus" if have_opacus() else "datadistill"
    if backend == "opacus" and not have_opacus():
        raise ConfigError("accountant backend 'opacus' needs `pip install opacus`")
    return backend


# -- the RDP of one step (Mironov et al. 2019) ---------------------------------------------------
def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -np.inf else math.log1p(math.exp(lo - hi)) + hi


def _log_sub(a: float, b: float) -> float:
    if b == -np.inf:
        return a
    if a == b:
        return -np.inf
    if a < b:
        raise ValueError("log of a negative number")
    return math.log(math.expm1(a - b)) + b


def _log_erfc(x: float) -> float:
    from scipy import special
    return math.log(2) + float(special.log_ndtr(-x * 2 ** 0.5))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    from scipy import special
    log_a = -np.inf
    for i in range(alpha + 1):
        s = (math.log(special.binom(alpha, i)) + i * math.log(q) + (alpha - i) * math.log(1 - q)
             + (i * i - i) / (2 * sigma ** 2))
        log_a = _log_add(log_a, s)
    return float(log_a)


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    from scipy import special
    log_a0, log_a1 = -np.inf, -np.inf
    z0 = sigma ** 2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log(1 - q)
        log_t1 = log_coef + j * math.log(q) + i * math.log(1 - q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma ** 2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma ** 2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
    return _log_add(log_a0, log_a1)


def rdp_step(q: float, sigma: float, alpha: float) -> float:
    """Rényi DP at order ``alpha`` of one sampled Gaussian step (rate ``q``, noise ``sigma``)."""
    if q == 0:
        return 0.0
    if sigma == 0:
        return np.inf
    if q == 1.0:
        return alpha / (2 * sigma ** 2)
    if float(alpha).is_integer():
        return _log_a_int(q, sigma, int(alpha)) / (alpha - 1)
    return _log_a_frac(q, sigma, alpha) / (alpha - 1)


def eps_from_rdp(orders: Sequence[float], rdp: Sequence[float], delta: float) -> tuple[float, float]:
    """(epsilon, best order) from RDP values by Balle et al. 2020, Thm. 21 (as opacus)."""
    a, r = np.asarray(orders, dtype=float), np.asarray(rdp, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = r - (np.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    if np.isnan(eps).all():
        return math.inf, math.nan
    k = int(np.nanargmin(eps))
    return float(eps[k]), float(a[k])


# -- the public functions ------------------------------------------------------------------------
def _check(sample_rate: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sampling rate must be in (0, 1], got {sample_rate}")
    if steps < 0 or int(steps) != steps:
        raise ConfigError(f"steps must be a non-negative integer, got {steps}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            backend: str = "auto") -> float:
    """The epsilon spent by ``steps`` sampled Gaussian steps at ``delta``."""
    _check(sample_rate, steps, delta)
    if noise_multiplier <= 0:
        return math.inf
    if steps == 0:
        return 0.0
    if resolve_backend(backend) == "opacus":
        from opacus.accountants import RDPAccountant
        acc = RDPAccountant()
        acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha"
            return float(acc.get_epsilon(delta=delta))
    rdp = [steps * rdp_step(sample_rate, noise_multiplier, a) for a in ORDERS]
    return eps_from_rdp(ORDERS, rdp, delta)[0]


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, *,
                         max_noise: float = 100.0, tolerance: float = 0.01,
                         backend: str = "auto") -> float:
    """The smallest noise multiplier (to ``tolerance`` in epsilon, as opacus'
    ``get_noise_multiplier``) whose ``steps`` steps at ``sample_rate`` spend at most
    ``target_epsilon`` at ``delta``. Raises ``PrivacyBudgetError`` when even ``max_noise``
    overspends (the released statistics would be noise)."""
    _check(sample_rate, steps, delta)
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise PrivacyBudgetError(f"epsilon must be a positive finite number, got {target_epsilon}")
    if steps == 0:
        return 0.0
    at_max = epsilon(max_noise, sample_rate, steps, delta, backend)
    if at_max > target_epsilon:
        raise PrivacyBudgetError(
            f"epsilon {target_epsilon:g} (delta {delta:g}) cannot be met with {steps} steps at "
            f"sampling rate {sample_rate:.4g}: even noise multiplier {max_noise:g} spends epsilon "
            f"{at_max:.3g}; ask for a larger epsilon, fewer iterations or a smaller batch "
            f"(sampling rate), or raise max_noise_multiplier")
    lo, hi, eps_hi = 0.0, max_noise, at_max
    # bisection on sigma until the spent epsilon is within ``tolerance`` below the target
    while target_epsilon - eps_hi > tolerance and hi - lo > 1e-9:
        mid = (lo + hi) / 2
        e = epsilon(mid, sample_rate, steps, delta, backend)
        if e < target_epsilon:
            hi, eps_hi = mid, e
        else:
            lo = mid
    return hi
