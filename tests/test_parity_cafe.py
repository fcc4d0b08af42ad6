"""Parity of CAFE with the authors' code (kaiwang960112/CAFE ``distill.py``).

The numbers in ``tests/fixtures/parity/cafe.npz`` were computed by the authors' script (patched
only for float64, CPU and 1x28x28 data; provenance and patches in ``cafe.md``) on a tiny fixed
case: 10 classes, 1x28x28, 4 real images per class (= batch_real, so every real batch and every
query batch is the whole class), 2 synthetic images per class initialised from real images,
ConvNet of width 16 and depth 3 (instance norm), the published weights, learning rates and
watcher thresholds, no augmentation, one whole outer iteration in float64: the dynamic bi-level
loop ran 17 summary updates with 10 inner epochs after each of the first 16.

The library runs the same iteration from the same summary and network and must reproduce: the
number of outer steps and of inner epochs (both decided by the accuracy watchers), every outer
step's loss terms, the gradient w.r.t. the summary and the summary after the first, second and
last updates, and the network weights at those updates (after 0, 10 and 160 inner epochs).
The library's inner-loop cross-entropy runs in float32 (``train.label_loss``) on the float64
network, so the network drifts from the reference by ~1e-9 relative per epoch; the tolerances
below are ~10-100x the measured differences (``cafe.md``), far below any behavioural difference.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.data.base import DataInfo, RealData, Split
from datadistill.distillers import create_distiller
from datadistill.models import create_model
from datadistill.runtime import RunOptions
from datadistill.synsets import SYNSETS

pytestmark = pytest.mark.parity

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "cafe.npz"
K, IPC, NREAL, WIDTH = 10, 2, 4, 16
RUN = RunOptions(device="cpu", fused=False, compile=False)

# measured (2026-12-02): loss terms 2.1e-7 relative, gradient 5.8e-8, summary 2.4e-7 (the
# float32 storage of values ~3), network 2.0e-9
LOSS_RTOL = 1e-5   # every loss term of every outer step, relative
GRAD_RTOL = 1e-5   # ||g_lib - g_ref|| / ||g_ref|| (the fixture stores the gradient in float32)
X_ATOL = 2e-6      # summary pixels after an update (stored in float32)
NET_ATOL = 1e-7    # network weights at an update


def load() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return dict(f)


def t(d, key) -> torch.Tensor:
    return torch.from_numpy(np.asarray(d[key])).double()


def info() -> DataInfo:
    return DataInfo(name="parity", modality="image", num_classes=K, shape=(1, 28, 28),
                    mean=(0.0,), std=(1.0,), flip=True)


def state(d, prefix):
    return {k[len(prefix):]: t(d, k) for k in d if k.startswith(prefix)}


@pytest.fixture(scope="module")
def run():
    d = load()
    x, y = t(d, "real_x"), torch.from_numpy(d["real_y"]).long()
    real = RealData(info(), Split(x, y), Split(x[:0], y[:0]), Split(x, y))
    syn = SYNSETS.get("pixels")(info(), ipc=IPC).double()
    with torch.no_grad():
        syn.x.copy_(t(d, "x_init"))
    net = create_model("convnet", info(), width=WIDTH, depth=3, norm="instance").double()
    net.load_state_dict(state(d, "net0."))
    cafe = create_distiller("cafe", batch_real=NREAL, init="real")  # the published rest
    cafe.use_run(RUN)
    cafe.setup(real, syn)
    cafe.fresh_network = lambda real: net.train()

    terms, steps, epochs = [], [], []
    mt, opt_step, train_epoch = cafe.matching_terms, cafe.optimizer_.step, cafe.train_epoch

    def rec_terms(*a, **k):
        out = mt(*a, **k)
        terms.append({n: v.detach().clone() for n, v in out.items()})
        epochs.append(0)
        return out

    def rec_step(*a, **k):
        rec = {"grad": syn.x.grad.detach().clone(),
               "net": {n: v.detach().clone() for n, v in net.state_dict().items()}}
        out = opt_step(*a, **k)
        rec["x"] = syn.x.detach().clone()
        steps.append(rec)
        return out

    def rec_epoch(*a, **k):
        epochs[-1] += 1
        return train_epoch(*a, **k)

    cafe.matching_terms, cafe.optimizer_.step, cafe.train_epoch = rec_terms, rec_step, rec_epoch
    metrics = cafe.step(real, syn)
    return d, terms, steps, epochs, metrics


def test_cafe_dynamic_loops_match_reference(run):
    """The accuracy watchers end the loops where the reference's did: the same number of summary
    updates and of inner epochs after each."""
    d, terms, steps, epochs, metrics = run
    assert len(steps) == int(d["num_steps"]) == metrics["outer_steps"]
    assert epochs == [int(e) for e in d["inner_epochs"]]
    assert metrics["inner_epochs"] == int(np.sum(d["inner_epochs"])) and metrics["capped"] == 0


def test_cafe_loss_terms_match_reference(run):
    """Every outer step: the four layer alignments (relu1, relu2, relu3, pool3), the embedding
    alignment, the discriminative cross-entropy sum, the real cross-entropy and the total."""
    d, terms, _, _, _ = run
    n = min(len(terms), int(d["num_steps"]))
    for i in range(n):
        got = {"align": terms[i]["align"].tolist(), "embed": float(terms[i]["embed"]),
               "disc": float(terms[i]["disc"]), "real_ce": float(terms[i]["real_ce"]),
               "total": float(terms[i]["loss"]) + float(terms[i]["real_ce"])}
        ref = {"align": d["mid"][i, :4].tolist(), "embed": float(d["mid"][i, 4]),
               "disc": float(d["disc_ce_sum"][i]), "real_ce": float(d["real_ce"][i]),
               "total": float(d["total"][i])}
        for k in ("embed", "disc", "real_ce", "total"):
            assert math.isclose(got[k], ref[k], rel_tol=LOSS_RTOL), f"step {i} {k}: {got[k]!r} vs {ref[k]!r}"
        for j, (a, b) in enumerate(zip(got["align"], ref["align"])):
            assert math.isclose(a, b, rel_tol=LOSS_RTOL), f"step {i} layer {j}: {a!r} vs {b!r}"


def test_cafe_updates_match_reference(run):
    """The gradient w.r.t. the summary, the summary after the update and the network at the
    update, for the first, second and last outer steps of the iteration."""
    d, _, steps, _, _ = run
    for i in d["kept_steps"].tolist():
        rec = steps[i]
        g = t(d, f"step{i}_grad")
        err = float((rec["grad"] - g).norm() / g.norm())
        assert err < GRAD_RTOL, f"step {i}: gradient relative error {err:.3g}"
        err = float((rec["x"] - t(d, f"step{i}_x_after")).abs().max())
        assert err < X_ATOL, f"step {i}: summary after the update differs by {err:.3g}"
        for name, v in state(d, f"step{i}_net.").items():
            e = float((rec["net"][name] - v).abs().max())
            assert e < NET_ATOL, f"step {i}: network {name} differs by {e:.3g}"
