import json

import numpy as np
import pytest
import torch

from datadistill.cli import main
from datadistill.distillers.dm import DM
from datadistill.synsets import load_summary

DISTILL = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "2", "--iterations", "4",
           "--set", "batch_real=16", "--quiet", "--device", "cpu"]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods: " in out and "dm" in out and "digits" in out and "convnet" in out and "herding" in out
    assert main(["list", "methods", "-v"]) == 0
    assert "lr_data=1.0" in capsys.readouterr().out


def test_distill_evaluate_show_baseline(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(DISTILL + ["--out", str(run)]) == 0
    for f in ("summary/summary.json", "summary/summary.safetensors", "grid.png", "loss.png",
              "checkpoint.json", "log.jsonl", "run.json"):
        assert (run / f).exists(), f
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [1, 2, 3, 4]
    syn = load_summary(run / "summary")
    assert syn.meta["params"]["batch_real"] == 16 and syn.meta["dataset_source"] == "digits"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--models", "convnet,mlp", "--protocol", "smoke",
                 "--num-models", "1", "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert set(rep["results"]) == {"convnet", "mlp"} and rep["protocol"]["name"] == "smoke"
    assert rep["overrides"] == {} and "overrides protocol" in captured.err
    assert main(["show", str(run), "--png", str(tmp_path / "g.png"), "--npz", str(tmp_path / "s.npz")]) == 0
    assert "dm" in capsys.readouterr().out
    from PIL import Image
    im = Image.open(tmp_path / "g.png")
    assert im.size[1] > im.size[0]  # 10 rows (classes) x 2 columns
    assert np.load(tmp_path / "s.npz")["x"].shape == (20, 1, 8, 8)
    assert main(["baseline", "--coreset", "random", "--dataset", "digits", "--ipc", "2",
                 "--out", str(tmp_path / "b")]) == 0
    assert load_summary(tmp_path / "b" / "summary").meta["method"] == "random"


def test_interrupt_then_resume_matches(tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    assert main(DISTILL + ["--out", str(ref)]) == 0
    real_step = DM.step
    calls = {"n": 0}

    def interrupted(self, real, syn):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, real, syn)
    monkeypatch.setattr(DM, "step", interrupted)
    run = tmp_path / "run"
    assert main(DISTILL + ["--out", str(run)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert load_summary(run / "summary").meta["iterations"] == 2
    monkeypatch.setattr(DM, "step", real_step)
    assert main(["distill", "--out", str(run), "--resume", "--quiet"]) == 0
    a, b = load_summary(run / "summary"), load_summary(ref / "summary")
    assert a.meta["iterations"] == 4 and torch.equal(a.x, b.x)


@pytest.mark.parametrize("argv, message", [
    (["distill", "--method", "dmm", "--dataset", "digits", "--ipc", "1", "--out", "X"], "unknown method 'dmm'; known methods: .*dm"),
    (["distill", "--method", "dm", "--dataset", "digitz", "--ipc", "1", "--out", "X"], "unknown dataset 'digitz'"),
    (["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--out", "X", "--set", "lr_img=1"], "dm has no parameter 'lr_img'"),
    (["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--out", "X", "--set", "batch_real=many"], "expected a value of type int"),
    (["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1000", "--out", "X", "--quiet"], "ipc 1000 is larger than"),
    (["distill", "--method", "dm", "--dataset", "missing/nothing.npz", "--ipc", "1", "--out", "X"], "no such file"),
    (["baseline", "--coreset", "best", "--dataset", "digits", "--ipc", "1", "--out", "X"], "unknown coreset 'best'"),
])
def test_bad_input(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if "--set" in argv else _nullcontext() as exc:
        code = main(argv)
    err = capsys.readouterr().err + (str(exc.value) if exc is not None and hasattr(exc, "value") else "")
    if "--set" not in argv:
        assert code == 2
    import re
    assert re.search(message, err), err


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_evaluate_bad_model_and_corrupt_summary(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(DISTILL + ["--iterations", "1", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--models", "convnett", "--protocol", "smoke"]) == 2
    assert "unknown model 'convnett'; known models:" in capsys.readouterr().err
    (run / "summary" / "summary.safetensors").write_bytes(b"broken")
    assert main(["evaluate", str(run), "--protocol", "smoke"]) == 2
    assert "corrupted" in capsys.readouterr().err
