"""The privacy app: the RDP accountant, DP distillation (dp-dm, dp-dc), membership inference."""
import json
import math

import numpy as np
import pytest
import torch

from datadistill.apps import _common as C
from datadistill.apps import accounting as A
from datadistill.apps import mia
from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError, DataFormatError
from datadistill.runtime import RunOptions

CPU = RunOptions(device="cpu", threads=1, fused=False, compile=False)


# -- the accountant ---------------------------------------------------------------------------
def _rdp_by_quadrature(q, sigma, alpha):
    """D_alpha((1-q)N(0,s^2) + qN(1,s^2) || N(0,s^2)) by numerical integration (Mironov et al.
    2019, the quantity their series computes)."""
    from scipy import integrate, stats
    nu = lambda z: stats.norm.pdf(z, 0, sigma)  # noqa: E731
    mu = lambda z: (1 - q) * nu(z) + q * stats.norm.pdf(z, 1, sigma)  # noqa: E731
    a, _ = integrate.quad(lambda z: nu(z) * (mu(z) / nu(z)) ** alpha, -30 * sigma, 30 * sigma,
                          limit=400)
    return math.log(a) / (alpha - 1)


@pytest.mark.parametrize("q,sigma,alpha", [(0.01, 1.1, 8), (0.1, 2.0, 2.5), (0.3, 1.5, 4),
                                           (0.05, 0.8, 12)])
def test_rdp_series_match_numerical_integration(q, sigma, alpha):
    assert A.rdp_step(q, sigma, alpha) == pytest.approx(_rdp_by_quadrature(q, sigma, alpha),
                                                        rel=1e-6)


def test_full_batch_is_the_gaussian_mechanism():
    # q = 1: RDP alpha / (2 sigma^2) per step, composed over T steps
    assert A.rdp_step(1.0, 2.0, 5.0) == pytest.approx(5 / 8)
    eps = A.epsilon(2.0, 1.0, 10, 1e-5, backend="datadistill")
    best = min(10 * a / 8 - (math.log(1e-5) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
               for a in A.ORDERS)
    assert eps == pytest.approx(best)


@pytest.mark.parametrize("sigma,q,steps", [(1.1, 256 / 60000, 14062), (1.0, 0.01, 1000),
                                           (4.0, 0.01, 10000), (0.9, 0.2, 50)])
def test_accountant_matches_opacus(sigma, q, steps):
    pytest.importorskip("opacus")
    ours = A.epsilon(sigma, q, steps, 1e-5, backend="datadistill")
    theirs = A.epsilon(sigma, q, steps, 1e-5, backend="opacus")
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_known_value_dp_sgd_mnist():
    # DP-SGD on MNIST (Abadi et al. 2016's setting: 60k examples, batch 256, sigma 1.1, 60
    # epochs, delta 1e-5): RDP with the Balle et al. 2020 conversion gives epsilon 2.59 (the
    # moments accountant of the paper and older RDP conversions report ~3)
    eps = A.epsilon(1.1, 256 / 60000, int(60 * 60000 / 256), 1e-5, backend="datadistill")
    assert 2.5 < eps < 2.7


def test_calibration_meets_the_budget_and_refuses_the_impossible():
    s = A.noise_multiplier_for(1.0, 1e-5, 0.1, 200)
    eps = A.epsilon(s, 0.1, 200, 1e-5)
    assert 0.99 - 0.01 <= eps <= 1.0
    assert A.epsilon(s * 0.97, 0.1, 200, 1e-5) > 1.0 - 0.02
    with pytest.raises(A.PrivacyBudgetError, match="cannot be met with 100000 steps"):
        A.noise_multiplier_for(0.01, 1e-5, 1.0, 100000)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(A.PrivacyBudgetError):
            A.noise_multiplier_for(bad, 1e-5, 0.1, 10)
    with pytest.raises(ConfigError, match="delta"):
        A.epsilon(1.0, 0.1, 10, 1.5)


# -- DP distillation --------------------------------------------------------------------------
def test_dp_configuration_errors(digits):
    with pytest.raises(ConfigError, match="publish real"):
        create_distiller("dp-dm", init="real")
    with pytest.raises(ConfigError, match="epsilon .*or noise_multiplier"):
        create_distiller("dp-dm", noise_multiplier=1.0)
    with pytest.raises(A.PrivacyBudgetError):
        create_distiller("dp-dc", epsilon=-1.0)
    d = create_distiller("dp-dm", "tiny", model="convnet_bn")
    syn = d.init_synset(digits, ipc=1)
    with pytest.raises(ConfigError, match="batch norm"):
        d.distill(digits, syn, run=CPU)
    d = create_distiller("dp-dm", iterations=1000, batch_real=256, epsilon=0.01)
    with pytest.raises(A.PrivacyBudgetError, match="cannot be met"):
        d.distill(digits, d.init_synset(digits, ipc=1), run=CPU)


def test_dp_dm_records_its_privacy(digits, tmp_path):
    d = create_distiller("dp-dm", "tiny", epsilon=1.0, delta=1e-5)
    syn = d.init_synset(digits, ipc=2)
    d.distill(digits, syn, workdir=tmp_path / "run", run=CPU)
    p = syn.meta["privacy"]
    q = max(min(1.0, 16 / n) for n in digits.class_counts())
    assert p["steps"] == 3 and p["sample_rate"] == pytest.approx(q) and p["delta"] == 1e-5
    assert 0.98 <= p["epsilon"] <= 1.0 and p["noise_multiplier"] > 0 and p["clip"] > 0
    assert p["epsilon"] == pytest.approx(A.epsilon(p["noise_multiplier"], q, 3, 1e-5))
    syn.save(tmp_path / "s")
    back = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert back["privacy"]["epsilon"] == p["epsilon"]
    # extending a DP run would overspend what the metadata states
    more = create_distiller("dp-dm", "tiny", epsilon=1.0, iterations=5)
    with pytest.raises(ConfigError, match="calibrated for 3 iterations"):
        more.distill(digits, more.init_synset(digits, ipc=2), workdir=tmp_path / "run",
                     resume=True, run=CPU)


def test_dp_dc_counts_outer_loops_as_steps(digits):
    d = create_distiller("dp-dc", "tiny", epsilon=None, noise_multiplier=1.0)
    syn = d.init_synset(digits, ipc=2)
    d.distill(digits, syn, run=CPU)
    p = syn.meta["privacy"]
    assert p["steps"] == 2 * 2 and p["noise_multiplier"] == 1.0 and p["target_epsilon"] is None
    assert math.isfinite(p["epsilon"]) and p["epsilon"] > 0


def test_dp_release_without_noise_or_clipping_is_the_class_mean(digits):
    """q = 1 (batch >= class size), noise ~0 and a huge clip: DP-DC's released real gradient
    is DC's gradient on the whole class, and DP-DM's released mean the class mean."""
    n_max = max(digits.class_counts())
    common = dict(epsilon=None, noise_multiplier=1e-12, clip=1e6, batch_real=n_max)
    d = create_distiller("dp-dc", "tiny", **common)
    syn = d.init_synset(digits, ipc=1)
    d.use_run(CPU)
    d.setup(digits, syn)
    net = d.fresh_network(digits)
    params = d.matched_parameters(net)
    c = 3
    x = digits.train.x[digits.class_indices(c)]
    y = torch.full((x.shape[0],), c)
    d.class_ = c
    got = d.loss_gradient(net, params, x, y)
    from datadistill.distillers.dc import DC
    want = DC.loss_gradient(d, net, params, x, y)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)

    m = create_distiller("dp-dm", "tiny", **common)
    syn = m.init_synset(digits, ipc=1)
    m.use_run(CPU)
    m.setup(digits, syn)
    emb = torch.randn(x.shape[0], 7)
    assert torch.allclose(m.noisy_mean(emb, c, (7,)), emb.mean(0), atol=1e-5)


def test_summary_checks_refuse_other_data(digits):
    from datadistill.apps.privacy import clip_rows
    syn = create_distiller("dm", "tiny").init_synset(digits, ipc=1)
    other = digits.info.replace(num_classes=3)
    with pytest.raises(DataFormatError, match="3"):
        C.check_image_summary(syn, other)
    with pytest.raises(DataFormatError, match="image summaries"):
        C.check_image_summary(syn, digits.info.replace(modality="graph"))
    v = clip_rows(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    assert torch.allclose(v.norm(dim=1), torch.tensor([1.0, 0.5]))


# -- membership inference ---------------------------------------------------------------------
def test_roc_metrics_and_membership_split():
    perfect = mia.roc_metrics(np.r_[np.ones(50) + 1, np.zeros(50)], np.r_[np.ones(50), np.zeros(50)])
    assert perfect["auc"] == 1.0 and perfect["tpr_at_1fpr"] == 1.0
    rng = np.random.default_rng(0)
    chance = mia.roc_metrics(rng.normal(size=4000), np.r_[np.ones(2000), np.zeros(2000)])
    assert abs(chance["auc"] - 0.5) < 0.03 and chance["tpr_at_1fpr"] < 0.05
    sp = mia.split_membership(100, 20, seed=0)
    allidx = torch.cat(list(sp.values()))
    assert torch.unique(allidx).numel() == 100 and len(sp["members"]) == len(sp["non_members"]) == 20
    with pytest.raises(ConfigError, match="members"):
        mia.split_membership(100, 60)
    with pytest.raises(KeyError):
        mia.parse_targets("real,nosuchmethod")


@pytest.mark.slow
def test_attack_end_to_end(digits, tmp_path, capsys):
    res = mia.run_attack(digits, targets=("real", "random", "dp-dm"), ipc=3, members=200,
                         shadows=1, epsilon=10.0, model="convnet_w32", protocol="smoke",
                         real_epochs=15, iterations=3, params={"model": "convnet_w32",
                                                              "batch_real": 16}, run=CPU)
    t = res["targets"]
    assert set(t) == {"real", "random", "dp-dm"}
    for r in t.values():
        assert 0 <= r["loss_attack"]["auc"] <= 1 and 0 <= r["shadow_attack"]["auc"] <= 1
        assert 0 <= r["utility"] <= 100
    assert t["random"]["init_members"] == 30  # the coreset's examples are members, copied
    assert t["dp-dm"]["init_members"] == 0 and t["dp-dm"]["privacy"]["epsilon"] <= 10.0
    assert "loss AUC" in mia.results_table(res)
    assert mia.plot(res, tmp_path / "mia.png").stat().st_size > 1000


def test_cli_epsilon_and_impossible_budget(capsys):
    from datadistill.cli import main
    assert main(["app", "privacy", "epsilon", "--noise-multiplier", "1.1", "--sample-rate",
                 "0.01", "--steps", "1000"]) == 0
    assert "epsilon" in capsys.readouterr().out
    rc = main(["app", "privacy", "epsilon", "--epsilon", "0.01", "--sample-rate", "1",
               "--steps", "100000"])
    assert rc != 0 and "cannot be met" in capsys.readouterr().err
