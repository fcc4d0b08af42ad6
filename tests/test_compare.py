"""``datadistill compare``: accuracy against examples per class and against stored bytes."""
import json

import pytest
import torch

from datadistill.cli import main
from datadistill.errors import ConfigError
from datadistill.report.compare import compare, compare_points, compare_table, load_runs
from datadistill.synsets import init_from


def _summary_run(folder, digits, ipc, storage=None, kind="pixels", acc=None, protocol="fast"):
    """A run folder with a summary and (optionally) one saved evaluation of one model."""
    syn = init_from(digits, ipc, kind=kind, generator=torch.Generator().manual_seed(ipc),
                    storage=storage)
    syn.meta["method"] = "random"
    syn.save(folder / "summary")
    if acc is not None:
        ev = {"protocol": {"name": protocol, "epochs": 300, "num_models": 3, "dsa": True},
              "results": {"convnet": {"mean": acc, "std": 0.5, "accs": [acc] * 3}},
              "summary": {}, "overrides": {}}
        (folder / "evaluations").mkdir(parents=True, exist_ok=True)
        (folder / "evaluations" / f"{protocol}-convnet.json").write_text(json.dumps(ev))
    return syn


def test_table_by_examples_and_bytes(digits, tmp_path):
    a = _summary_run(tmp_path / "f32-ipc4", digits, 4, acc=80.0)
    b = _summary_run(tmp_path / "u8-ipc8", digits, 8, storage="uint8", acc=85.0)
    c = _summary_run(tmp_path / "mf-ipc1", digits, 1, kind="multiformation", acc=70.0)
    _summary_run(tmp_path / "bare", digits, 2)
    runs = load_runs([tmp_path / n for n in ("f32-ipc4", "u8-ipc8", "mf-ipc1", "bare")])
    pts = compare_points(runs)
    by_run = {p["run"]: p for p in pts}
    assert by_run["u8-ipc8"]["stored_bytes"] == b.stored_bytes() < a.stored_bytes()
    assert by_run["u8-ipc8"]["storage"] == "uint8" and by_run["mf-ipc1"]["ipc"] == 4.0
    assert by_run["mf-ipc1"]["stored_bytes"] == c.stored_bytes()
    # f32-ipc: the bytes as float32 images per class
    assert by_run["f32-ipc4"]["f32_ipc"] == pytest.approx(4 + 4 / 256)  # + one-byte labels
    assert by_run["bare"]["mean"] is None
    ex = compare_table(pts, "examples").splitlines()
    order_ex = [line.split()[0] for line in ex[2:6]]
    assert order_ex == ["bare", "f32-ipc4", "mf-ipc1", "u8-ipc8"]  # 2, 4, 4 (80 before 70), 8
    by = compare_table(pts, "bytes").splitlines()
    order_b = [line.split()[0] for line in by[2:6]]
    assert order_b == ["mf-ipc1", "bare", "u8-ipc8", "f32-ipc4"]  # 2570, 5140, 5208, 10280 B
    text = "\n".join(by)
    assert "fast: 300 ep x 3, DSA" in text and "not evaluated: bare" in text
    with pytest.raises(ConfigError, match="--by"):
        compare_table(pts, "seconds")


def test_mixed_protocols_are_flagged(digits, tmp_path):
    _summary_run(tmp_path / "a", digits, 1, acc=60.0, protocol="fast")
    _summary_run(tmp_path / "b", digits, 2, acc=65.0, protocol="paper")
    table, pts = compare([tmp_path / "a", tmp_path / "b"])
    assert "2 protocols" in table and {p["protocol"].split(":")[0] for p in pts} == {"fast", "paper"}


def test_cli_compare_with_a_real_evaluation_and_png(digits, tmp_path, capsys):
    run = tmp_path / "dm"
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--preset",
                 "tiny", "--iterations", "2", "--quiet", "--device", "cpu", "--out", str(run),
                 "--set", "storage=uint8"]) == 0
    assert main(["evaluate", str(run), "--protocol", "smoke", "--json", "--device", "cpu"]) == 0
    _summary_run(tmp_path / "rnd", digits, 1, acc=50.0)
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["compare", str(run), str(tmp_path / "rnd"), "--by", "bytes", "--png",
                 str(png)]) == 0
    out = capsys.readouterr().out
    assert "accuracy by stored bytes" in out and "smoke" in out and "uint8" in out
    from PIL import Image
    w, h = Image.open(png).size
    assert w > h > 100  # two panels side by side
    # nothing evaluated: a plot is refused with the reason
    assert main(["compare", str(tmp_path / "rnd"), "--png", str(tmp_path / "x.png")]) == 0
    _summary_run(tmp_path / "none", digits, 1)
    assert main(["compare", str(tmp_path / "none"), "--png", str(tmp_path / "y.png")]) == 2
    assert "evaluate RUN" in capsys.readouterr().err
