"""Neural architecture search application (apps/nas.py, apps/nas_space.py) on digits."""
from __future__ import annotations

import json

import pytest
import torch

from datadistill.apps import _common as C
from datadistill.apps import nas
from datadistill.apps.nas_space import (FIELD_CONVNET, Arch, register, sample_space,
                                        search_space)
from datadistill.errors import ConfigError, DataFormatError
from datadistill.models import MODELS, create_model


def test_space_is_dc_bench_and_names_round_trip():
    space = search_space()
    assert len(space) == 720 and len({a.name for a in space}) == 720
    for a in space[::37]:
        assert Arch.parse(a.name) == a
    assert FIELD_CONVNET.name == "convnet_d3_w128_in_relu_ap"
    with pytest.raises(ConfigError, match="not an architecture name"):
        Arch.parse("convnet_d3_w128_xx_relu_ap")
    with pytest.raises(ConfigError):
        Arch(3, 128, "instance", "tanh", "avg")


def test_sample_is_fixed_and_keeps_the_field_convnet():
    space = search_space()
    a, b = sample_space(space, 32, seed=0), sample_space(space, 32, seed=0)
    assert a == b and len(set(a)) == 32 and FIELD_CONVNET in a
    assert sample_space(space, 32, seed=1) != a
    assert sample_space(space[:10], None) == space[:10]
    with pytest.raises(ConfigError):
        sample_space(space, 2)


def test_register_binds_convnet_arguments(digits):
    arch = Arch(2, 8, "layer", "leakyrelu", "max")  # (not in any default registration)
    assert arch.name not in MODELS  # importing the space registers nothing
    assert register([arch, arch]) == [arch.name, arch.name]
    net = create_model(arch.name, digits.info, generator=torch.Generator().manual_seed(0))
    kinds = {type(m).__name__ for m in net.features}
    assert {"LayerNorm", "LeakyReLU", "MaxPool2d"} <= kinds
    assert net(digits.train.x[:4]).shape == (4, 10)


def test_every_part_builds_and_runs(digits):
    """One architecture per (norm, activation, pooling) at depth 4 runs on 8x8 digits."""
    archs = search_space(depths=(4,), widths=(4,))
    register(archs)
    for a in archs:
        out = create_model(a.name, digits.info)(digits.train.x[:2])
        assert out.shape == (2, 10) and bool(torch.isfinite(out).all()), a.name


def test_rank_agreement():
    truth = [10.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0]
    r = nas.rank_agreement([t / 2 for t in truth], truth, subsets=(4,))
    assert r["spearman"] == pytest.approx(1) and r["kendall"] == pytest.approx(1)
    assert r["top_overlap"] == 5 and r["chosen_true_rank"] == 1
    assert r["rho_by_size"]["rho@4"] == pytest.approx(1) and "rho@7" in r["rho_by_size"]
    r = nas.rank_agreement([-t for t in truth], truth)
    assert r["spearman"] == pytest.approx(-1) and r["chosen_true_acc"] == 10.0
    assert r["top_overlap"] == 3  # of 7, the top 5 and the bottom 5 share 3
    with pytest.raises(ConfigError):
        nas.rank_agreement([1.0, 2.0], [1.0, 2.0])


@pytest.mark.slow
def test_run_nas_digits_and_cache(digits):
    archs = sorted([Arch(1, 8, "instance", "relu", "avg"), Arch(2, 8, "batch", "relu", "max"),
                    Arch(2, 8, "none", "sigmoid", "none"), Arch(1, 16, "group", "leakyrelu", "avg")])
    syn = C.summary_for(digits, "random", 3)
    res = nas.run_nas(digits, archs, [("random@3", syn)], full_settings={"epochs": 3},
                      epochs=10, num_models=1)
    r = res["results"]["random@3"]
    assert set(res["full"]) == {a.name for a in archs}
    assert -1 <= r["spearman"] <= 1 and -1 <= r["kendall"] <= 1
    assert r["top_k"] == 4 and r["top_overlap"] == 4
    assert r["speedup"] > 1  # 30 examples x 10 epochs against 1131 x 3
    assert res["settings"]["full"]["epochs"] == 3 and res["settings"]["full"]["cached"] == 0
    again = nas.run_nas(digits, archs, [("random@3", syn)], full_settings={"epochs": 3},
                        epochs=1, num_models=1)
    assert again["settings"]["full"]["cached"] == 4
    assert again["full"] == {k: {**v, "cached": True} for k, v in res["full"].items()}
    assert "best architecture on the full data" in nas.results_table(res)


def test_cli_nas(tmp_path, capsys):
    from datadistill.cli import main
    out = tmp_path / "nas.json"
    rc = main(["app", "nas", "--dataset", "digits", "--depths", "1,2", "--widths", "4",
               "--norms", "instance,batch", "--acts", "relu", "--pools", "avg,max",
               "--archs", "5", "--methods", "random,dm:2", "--ipcs", "1",
               "--set", "batch_real=8", "--set", "model=convnet_w32",
               "--epochs", "2", "--full-epochs", "1", "--full-per-class", "20", "--quiet",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and "dm@1" in text and "random@1" in text
    assert "truth: test accuracy after 1 epochs on 200 full-data examples" in text
    rec = json.loads(out.read_text())
    assert rec["settings"]["num_archs"] == 5 and rec["cpu_s"] > 0
    assert set(rec["results"]) == {"random@1", "dm@1"}
    assert (tmp_path / "nas.png").stat().st_size > 1000


def test_errors(tmp_path, digits, capsys):
    from datadistill.cli import main
    two = C.summary_for(C.class_view(digits, [0, 1]), "random", 1)
    two.save(tmp_path / "two")
    archs = search_space(depths=(1,), widths=(4,), norms=("instance",), acts=("relu",))
    with pytest.raises(DataFormatError, match="2 classes"):
        nas.run_nas(digits, archs, [("two", two)])
    with pytest.raises(ConfigError, match="at least 3"):
        nas.run_nas(digits, archs[:2], [("x", C.summary_for(digits, "random", 1))])
    rc = main(["app", "nas", "--dataset", "digits", "--summary", str(tmp_path / "two"),
               "--methods", "", "--quiet"])
    assert rc == 2 and "2 classes" in capsys.readouterr().err
    rc = main(["app", "nas", "--dataset", "digits", "--arch", "convnet_bad", "--quiet"])
    assert rc == 2 and "not an architecture name" in capsys.readouterr().err
