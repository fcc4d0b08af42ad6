"""Continual learning application (apps/continual.py) on the embedded digits data."""
from __future__ import annotations

import json
import math

import pytest
import torch

from datadistill.apps import _common as C
from datadistill.apps import continual as CL
from datadistill.errors import ConfigError, DataFormatError


def test_split_tasks_and_errors():
    assert CL.split_tasks(10, 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert CL.split_tasks(4, 2, [3, 1, 0, 2]) == [[3, 1], [0, 2]]
    with pytest.raises(ConfigError, match="do not split"):
        CL.split_tasks(10, 3)
    with pytest.raises(ConfigError, match="permutation"):
        CL.split_tasks(4, 2, [0, 1, 1, 2])
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        CL.split_tasks(2, 2)


def test_parse_strategies():
    s = CL.parse_strategies("finetune,replay-random,recall-{method}", method="dm")
    assert [(x.kind, x.source) for x in s] == [("finetune", None), ("replay", "random"),
                                               ("recall", "dm")]
    for bad in ("replay", "finetune-dm", "forget-random", "replay-random,replay-random"):
        with pytest.raises(ConfigError):
            CL.parse_strategies(bad)
    with pytest.raises(KeyError, match="unknown"):  # an unknown method lists the known ones
        CL.parse_strategies("replay-nosuchmethod")


def test_metrics_forgetting():
    acc = [[100.0], [60.0, 90.0], [50.0, 80.0, 70.0]]
    m = CL.metrics(acc)
    assert m["avg_acc"] == [100.0, 75.0, pytest.approx(200 / 3)]
    # forgetting: task 0: max(100, 60) - 50 = 50; task 1: 90 - 80 = 10
    assert m["forgetting"] == pytest.approx(30.0)


def test_class_view_relabels(digits):
    v = C.class_view(digits, [7, 2])
    assert v.info.num_classes == 2 and v.info.name == "digits[c7,2]"
    assert set(v.train.y.tolist()) == {0, 1}
    n7 = int((digits.train.y == 7).sum())
    assert int((v.train.y == 0).sum()) == n7
    assert torch.equal(v.test.x[v.test.y == 1], digits.test.x[digits.test.y == 2])
    with pytest.raises(ConfigError):
        C.class_view(digits, [1, 1])
    with pytest.raises(ConfigError):
        C.class_view(digits, [10])


def test_globalize_labels():
    y = torch.tensor([0, 1, 1])
    assert CL._globalize(y, "hard", [4, 7], 10).tolist() == [4, 7, 7]
    soft = CL._globalize(torch.tensor([[2.0, 1.0]]), "soft", [4, 7], 10)
    assert soft.shape == (1, 10) and soft[0, 4] == 2.0 and soft[0, 7] == 1.0
    assert bool(torch.isfinite(soft).all()) and soft.softmax(-1)[0, [4, 7]].sum() > 0.999


@pytest.mark.slow
def test_run_continual_digits(digits):
    """Recall (retraining on all memories) keeps the early tasks; fine-tuning forgets them."""
    strategies = CL.parse_strategies("finetune,replay-random,recall-random,recall-dm")
    res = CL.run_continual(digits, strategies=strategies, ipc=5, model="convnet_w32",
                           epochs=4, batch_size=32, recall_epochs=40, iterations=3,
                           params={"batch_real": 16, "model": "convnet_w32"}, seeds=(0,))
    r = res["results"]
    assert res["settings"]["tasks"] == CL.split_tasks(10, 2)
    for name, v in r.items():
        assert len(v["avg_acc"]) == 5 and all(0 <= a <= 100 for a in v["avg_acc"])
        assert len(v["acc_matrices"][0][4]) == 5
        assert math.isfinite(v["forgetting"])
    assert r["finetune"]["memory_examples_per_class"] == 0
    assert r["replay-random"]["memory_examples_per_class"] == 5
    # equal memory: the same stored bytes per class for real exemplars and the DM summary
    assert r["recall-dm"]["memory_bytes_per_class"] == r["recall-random"]["memory_bytes_per_class"]
    assert r["finetune"]["forgetting"] > 60  # class-incremental fine-tuning forgets
    assert r["recall-random"]["final_avg_acc"] > r["finetune"]["final_avg_acc"] + 30
    assert r["recall-dm"]["final_avg_acc"] > r["finetune"]["final_avg_acc"] + 30
    table = CL.results_table(res)
    assert "recall-dm" in table and "forgetting" in table


def test_cli_continual(tmp_path, digits, capsys):
    from datadistill.cli import main
    out = tmp_path / "cl.json"
    rc = main(["app", "continual", "--dataset", "digits", "--strategies",
               "finetune,replay-herding", "--ipc", "2", "--model", "convnet_w32",
               "--epochs", "1", "--feature-epochs", "1", "--train-per-class", "40",
               "--quiet", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "replay-herding" in text and "final avg" in text
    rec = json.loads(out.read_text())
    assert rec["app"] == "continual" and rec["machine"]["cores"] >= 1 and rec["cpu_s"] > 0
    assert rec["settings"]["train_examples"] == 400
    assert (tmp_path / "cl.png").stat().st_size > 1000


def test_errors_saved_summary(tmp_path, digits, capsys):
    """A summary of another class count or modality is refused with a clear message."""
    from datadistill.cli import main
    syn = C.summary_for(C.class_view(digits, [0, 1]), "random", 2)
    syn.save(tmp_path / "two")
    with pytest.raises(DataFormatError, match="2 classes but digits has 10"):
        C.load_summary(tmp_path / "two", digits)
    rc = main(["app", "continual", "--dataset", "digits", "--strategies", "recall-summary",
               "--summary", str(tmp_path / "two"), "--quiet"])
    assert rc == 2 and "2 classes" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--summary"):
        CL.run_continual(digits, strategies=CL.parse_strategies("replay-summary"))
    rc = main(["app", "nosuchapp"])
    assert rc == 2 and "continual" in capsys.readouterr().err
