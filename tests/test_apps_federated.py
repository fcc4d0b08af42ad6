"""The federated-learning app: client splits, one-shot summaries, FedAvg (plain and Flower)."""
import json

import pytest
import torch

from datadistill.apps import federated as F
from datadistill.errors import ConfigError
from datadistill.runtime import RunOptions

CPU = RunOptions(device="cpu", threads=1, fused=False)


def _check_partition(parts, n):
    allidx = torch.cat(parts)
    assert allidx.numel() == n and torch.unique(allidx).numel() == n


def test_iid_split_is_an_equal_partition():
    y = torch.arange(100) % 10
    parts = F.split_clients(y, 10, None, seed=0)
    _check_partition(parts, 100)
    assert [len(p) for p in parts] == [10] * 10
    assert all(torch.equal(a, b) for a, b in zip(parts, F.split_clients(y, 10, None, seed=0)))


def test_dirichlet_split_skew_grows_as_alpha_shrinks():
    y = torch.arange(2000) % 10

    def classes_per_client(alpha):
        parts = F.split_clients(y, 10, alpha, seed=1)
        _check_partition(parts, 2000)
        counts = torch.tensor(F.describe_split(y, parts, 10)).float()
        share = counts / counts.sum(1, keepdim=True)
        return float((1 / (share ** 2).sum(1)).mean())  # effective number of classes

    assert classes_per_client(0.1) < classes_per_client(1.0) < classes_per_client(100.0)


def test_split_errors_are_clear():
    with pytest.raises(ConfigError, match="use fewer clients"):
        F.split_clients(torch.arange(5), 10, None)
    with pytest.raises(ConfigError, match="client with fewer than"):
        F.split_clients(torch.zeros(40, dtype=torch.long), 30, 0.01, seed=0, max_tries=3)
    for bad in ("dir", "x", "-1", "0"):
        with pytest.raises(ConfigError):
            F.parse_split(bad)
    assert F.parse_split("iid") is None and F.parse_split("dir0.1") == 0.1


def test_weighted_average_is_fedavg():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = F.weighted_average([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))
    assert int(out["n"]) == 3


def test_client_summary_keeps_global_labels(digits):
    y = digits.train.y
    idx = torch.nonzero((y == 2) | (y == 7)).flatten()
    idx = torch.cat([idx, torch.nonzero(y == 5).flatten()[:2]])  # class 5: fewer than ipc
    up = F.client_summary(digits, idx, "random", 3, seed=0, run=CPU)
    assert up["classes"] == [2, 7]
    assert sorted(up["y"].unique().tolist()) == [2, 7] and up["y"].shape[0] == 6
    assert up["examples_left_home"] == 2 and up["bytes"] > 0
    soft = F._globalize(torch.tensor([[1.0, 2.0]]), "soft", [2, 7], 10)
    assert soft.shape == (1, 10) and soft[0, 7] == 2.0 and soft[0, 0] == -30.0


def test_fedavg_plain_curve_and_bytes(digits):
    parts = F.split_clients(digits.train.y, 3, 1.0, seed=0)
    res = F.fedavg(digits, parts, rounds=2, model="convnet_w32", backend="plain", run=CPU)
    curve = res["curve"]
    assert [c["round"] for c in curve] == [0, 1, 2]
    assert curve[2]["bytes"] == 2 * 2 * 3 * res["model_bytes"]
    assert curve[2]["accuracy"] > curve[0]["accuracy"]


def test_fedavg_flower_matches_plain(digits):
    pytest.importorskip("flwr")
    parts = F.split_clients(digits.train.y, 3, 1.0, seed=0)
    kw = dict(rounds=2, model="convnet_w32", run=CPU)
    a = F.fedavg(digits, parts, backend="plain", **kw)
    b = F.fedavg(digits, parts, backend="flwr", **kw)
    for k, v in a["final_state"].items():
        assert torch.allclose(v, b["final_state"][k], atol=1e-6), k
    assert [c["accuracy"] for c in a["curve"]] == [c["accuracy"] for c in b["curve"]]


def test_unknown_backend_and_modality(digits):
    with pytest.raises(ConfigError, match="backend"):
        F.resolve_backend("grpc")
    if not F.have_flwr():
        with pytest.raises(ConfigError, match="pip install flwr"):
            F.resolve_backend("flwr")


def test_compare_at_equal_bytes():
    shot = {"accuracy": 60.0, "bytes": 250}
    curve = [{"round": r, "accuracy": a, "bytes": 100 * r} for r, a in enumerate([10, 40, 55, 65])]
    c = F.compare(shot, curve)
    assert c["fedavg_at_equal_bytes"] == 55 and c["fedavg_rounds_at_equal_bytes"] == 2
    assert c["rounds_to_match"] == 3 and c["bytes_to_match"] == 300
    assert c["fedavg_round1"] == 40 and c["fedavg_last"] == 65


def test_cli_end_to_end(tmp_path, capsys):
    from datadistill.cli import main
    out = tmp_path / "apps-federated.json"
    rc = main(["app", "federated", "--dataset", "digits", "--clients", "4", "--splits",
               "iid,0.1", "--method", "dm", "--ipc", "2", "--iterations", "3", "--set",
               "batch_real=16", "--model", "convnet_w32", "--set", "model=convnet_w32",
               "--rounds", "2", "--protocol", "smoke", "--fedavg-backend", "plain",
               "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "one-shot dm" in text and "FedAvg at equal MB" in text
    assert out.with_suffix(".png").stat().st_size > 1000
    data = json.loads(out.read_text())
    assert data["schema"] == "datadistill.bench/1" and data["machine"]["threads"] == 1
    assert set(data["app"]["splits"]) == {"iid", "0.1"}
    row = data["rows"]["one-shot-dm-iid"]
    assert row["cpu_s"]["distill"] > 0 and row["declared"]["summary"] is False
