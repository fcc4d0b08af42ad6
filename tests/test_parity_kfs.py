"""KFS (Lee, Lee & Hwang, arXiv 2208.10494): a hand-computed equation test in place of parity.

The authors published no code (no repository is linked from the paper, its arXiv page or the
field's lists; searched 2026-12-02, see ``tests/fixtures/parity/kfs.md``), so there is nothing to
run. Instead the equations are evaluated here with plain torch ops, independently of the library,
on a tiny fixed case, and compared with what the library computes for two iterations:

    x_{j,c,i} = S_j up(z_{c,i}) + s_j + W2_j * lrelu_0.2(W1_j * up(z_{c,i}) + b1_j) + b2_j
    L = sum_c || mean_{x in T_c} phi(x) - mean_{i,j} phi(x_{j,c,i}) ||^2
    z <- SGD(lr 1, momentum 0.5),  decoders <- Adam(lr 1e-2)

``up`` is bilinear up-sampling (half-pixel centres), ``*`` a 3x3 convolution with zero padding 1,
``phi`` the embedding of a fixed ConvNet (width 8, depth 2, instance norm; a different fixed network
each iteration, DSA off). ``phi`` is the library's ConvNet, which ``test_parity_dc_dm.py`` checks
against the DM authors' code; everything KFS adds — the decoders, the pairing of every code with
every decoder, the class means over codes x decoders, the two optimizers — is computed by hand.
The numbers are also frozen in ``tests/fixtures/parity/kfs.npz`` (written by this file's
``hand_steps``), so a change of either side shows up. float64 throughout except the library's
embeddings, which DM casts to float32 (hence relative tolerances ~1e-5).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "kfs.npz"
K, CODES, DECODERS, HIDDEN, LATENT, BATCH = 3, 2, 2, 3, 2, 4
SHAPE = (1, 8, 8)
LR_CODES, LR_DEC = 1.0, 1e-2
LOSS_RTOL, GRAD_RTOL, VALUE_ATOL = 1e-5, 1e-5, 1e-6

pytestmark = pytest.mark.parity

PARAMS = ("skip_weight", "skip_bias", "weight1", "bias1", "weight2", "bias2")


# ---- glue to the library ----------------------------------------------------------------------
def _info():
    from datadistill.data.base import DataInfo
    return DataInfo(name="kfs-parity", modality="image", num_classes=K, shape=SHAPE,
                    mean=(0.0,), std=(1.0,))


def _net(state=None, generator=None):
    from datadistill.models import create_model
    net = create_model("convnet", _info(), width=8, depth=2, fused=False,
                       generator=generator).double()
    if state is not None:
        net.load_state_dict(state)
    return net


def case() -> dict[str, torch.Tensor]:
    """The fixed case: real batch, codes, decoder weights and two networks' weights (drawn once
    to write the fixture; the tests read the frozen copy, ``frozen()``)."""
    g = torch.Generator().manual_seed(17)
    c = {"real_x": torch.randn(K * BATCH, *SHAPE, generator=g, dtype=torch.float64),
         "real_y": torch.arange(K).repeat_interleave(BATCH),
         "codes": torch.randn(K * CODES, LATENT, 4, 4, generator=g, dtype=torch.float64)}
    shapes = {"skip_weight": (1, LATENT), "skip_bias": (1,), "weight1": (HIDDEN, LATENT, 3, 3),
              "bias1": (HIDDEN,), "weight2": (1, HIDDEN, 3, 3), "bias2": (1,)}
    for j in range(DECODERS):
        for n, s in shapes.items():
            c[f"dec{j}.{n}"] = 0.5 * torch.randn(s, generator=g, dtype=torch.float64)
    for t in range(2):
        for n, v in _net(generator=torch.Generator().manual_seed(100 + t)).state_dict().items():
            c[f"net{t}.{n}"] = v.clone()
    return c


# ---- the equations, by hand -------------------------------------------------------------------
def hand_decode(z, p):
    u = F.interpolate(z, size=SHAPE[1:], mode="bilinear", align_corners=False)
    skip = torch.einsum("oc,nchw->nohw", p["skip_weight"], u) + p["skip_bias"][None, :, None, None]
    h = F.conv2d(u, p["weight1"], p["bias1"], padding=1)
    h = torch.where(h > 0, h, 0.2 * h)
    return skip + F.conv2d(h, p["weight2"], p["bias2"], padding=1)


def hand_loss(z, decs, real_x, real_y, phi):
    loss = 0.0
    for c in range(K):
        mr = phi(real_x[real_y == c]).mean(0)
        zc = z[c * CODES:(c + 1) * CODES]
        ms = torch.cat([phi(hand_decode(zc, p)) for p in decs]).mean(0)
        loss = loss + ((mr - ms) ** 2).sum()
    return loss


def hand_steps(c) -> dict[str, np.ndarray]:
    """Two iterations: loss, gradients and values after each SGD-momentum / Adam update."""
    z = c["codes"].clone()
    decs = [{n: c[f"dec{j}.{n}"].clone() for n in PARAMS} for j in range(DECODERS)]
    mom = torch.zeros_like(z)
    m = [{n: torch.zeros_like(v) for n, v in d.items()} for d in decs]
    v2 = [{n: torch.zeros_like(v) for n, v in d.items()} for d in decs]
    b1, b2, eps = 0.9, 0.999, 1e-8
    out = {}
    for t in range(2):
        net = _net({k[len(f"net{t}."):]: v for k, v in c.items() if k.startswith(f"net{t}.")})
        net.train()
        zl = z.clone().requires_grad_(True)
        dl = [{n: v.clone().requires_grad_(True) for n, v in d.items()} for d in decs]
        loss = hand_loss(zl, dl, c["real_x"], c["real_y"], net.embed)
        grads = torch.autograd.grad(loss, [zl] + [d[n] for d in dl for n in PARAMS])
        gz, gd = grads[0], grads[1:]
        out[f"step{t}_loss"] = loss.detach().numpy()
        out[f"step{t}_grad.codes"] = gz.numpy()
        mom = gz if t == 0 else 0.5 * mom + gz  # torch SGD: the first buffer is the gradient
        z = z - LR_CODES * mom
        out[f"step{t}_codes"] = z.numpy()
        for k, (j, n) in enumerate((j, n) for j in range(DECODERS) for n in PARAMS):
            g = gd[k]
            m[j][n] = b1 * m[j][n] + (1 - b1) * g
            v2[j][n] = b2 * v2[j][n] + (1 - b2) * g * g
            mhat, vhat = m[j][n] / (1 - b1 ** (t + 1)), v2[j][n] / (1 - b2 ** (t + 1))
            decs[j][n] = decs[j][n] - LR_DEC * mhat / (vhat.sqrt() + eps)
            out[f"step{t}_grad.dec{j}.{n}"] = g.numpy()
            out[f"step{t}_dec{j}.{n}"] = decs[j][n].numpy()
    return out


# ---- the library ------------------------------------------------------------------------------
def library_steps(monkeypatch, c):
    import datadistill.distillers.dm as dm_mod
    from datadistill.data.base import RealData, Split
    from datadistill.distillers import create_distiller
    from datadistill.runtime import RunOptions
    from datadistill.synsets import SYNSETS

    info = _info()
    x, y = c["real_x"], c["real_y"]
    real = RealData(info, Split(x, y), Split(x[:0], y[:0]), Split(x, y))
    syn = SYNSETS.get("kfs")(info, ipc=CODES, latent_channels=LATENT, num_decoders=DECODERS,
                             hidden=HIDDEN).double()
    with torch.no_grad():
        syn.codes.copy_(c["codes"])
        for j in range(DECODERS):
            for n in PARAMS:
                getattr(syn.decoders[j], n).copy_(c[f"dec{j}.{n}"])
    d = create_distiller("kfs", batch_real=BATCH, dsa=False, lr_data=LR_CODES,
                         lr_decoder=LR_DEC, latent_channels=LATENT, num_decoders=DECODERS,
                         hidden=HIDDEN)
    d.use_run(RunOptions(device="cpu", fused=False, compile=False))
    monkeypatch.setattr(d, "make_model", lambda *a, **k: _net(), raising=False)
    states = iter([{k[len(f"net{t}."):]: v for k, v in c.items() if k.startswith(f"net{t}.")}
                   for t in range(2)])
    # each iteration's "fresh random network" is the case's fixed network of that iteration
    monkeypatch.setattr(dm_mod, "init_parameters", lambda net, gen: net.load_state_dict(next(states)))
    d.setup(real, syn)
    rec = []
    step = d.optimizer_.step

    def recorded():
        r = {"grad.codes": syn.codes.grad.detach().clone()}
        r.update({f"grad.dec{j}.{n}": getattr(syn.decoders[j], n).grad.detach().clone()
                  for j in range(DECODERS) for n in PARAMS})
        step()
        r["codes"] = syn.codes.detach().clone()
        r.update({f"dec{j}.{n}": getattr(syn.decoders[j], n).detach().clone()
                  for j in range(DECODERS) for n in PARAMS})
        rec.append(r)

    d.optimizer_.step = recorded
    losses = [d.step(real, syn)["loss"] for _ in range(2)]
    return losses, rec


def frozen():
    """(the case's inputs, the frozen hand-computed outputs) from the fixture."""
    with np.load(FIXTURE) as f:
        d = dict(f)
    c = {k[5:]: torch.from_numpy(v) for k, v in d.items() if k.startswith("case.")}
    return c, {k: v for k, v in d.items() if not k.startswith("case.")}


def _rel(a, b):
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_hand_equations_match_the_frozen_fixture():
    """The hand computation, run now on the frozen case, gives the frozen numbers."""
    c, ref = frozen()
    now = hand_steps(c)
    assert set(now) == set(ref)
    for k, v in now.items():
        assert _rel(v, ref[k]) < 1e-10, k


def test_kfs_library_matches_the_hand_computed_equations(monkeypatch):
    c, ref = frozen()
    losses, rec = library_steps(monkeypatch, c)
    for t in range(2):
        assert math.isclose(losses[t], float(ref[f"step{t}_loss"]), rel_tol=LOSS_RTOL), \
            f"step {t}: loss {losses[t]} vs {float(ref[f'step{t}_loss'])}"
        for k, v in rec[t].items():
            r = ref[f"step{t}_{k}"]
            if k.startswith("grad."):
                assert _rel(v, r) < GRAD_RTOL, f"step {t}: {k}: relative error {_rel(v, r):.3g}"
            else:
                err = float((v - torch.from_numpy(r)).abs().max())
                assert err < VALUE_ATOL, f"step {t}: {k} after the update differs by {err:.3g}"
    # the second iteration moved away from the first (momentum and Adam state are used)
    assert not np.allclose(ref["step0_codes"], ref["step1_codes"])
