"""The HTML report, the robust scores (DD-Ranking), progress logging, and a real browser."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from datadistill.cli import main
from datadistill.data.base import DataInfo
from datadistill.evaluation import Protocol, evaluate
from datadistill.evaluation.robust import (
    HardLabelView, augmentation_robust_score, label_robust_score, normalized_score,
    robust_scores)
from datadistill.report import MetricsLog, curve_png, image_grid, write_report  # noqa: F401
from datadistill.report.modality import DRAWERS, draw_summary
from datadistill.report.runs import load_run
from datadistill.synsets.graph import GraphBatchSet, GraphSet
from datadistill.synsets.pixels import PixelSet
from datadistill.synsets.users import UserRowSet

TINY = Protocol("tiny", epochs=2, num_models=2)
PNG_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


# -- DD-Ranking's formulas ------------------------------------------------------------------------
def test_scores_follow_dd_ranking_definition():
    e = math.e
    assert normalized_score(1.0) == pytest.approx(100.0)
    assert normalized_score(-1.0) == pytest.approx(0.0)
    # full 90, syn hard 70, syn 80, random 60: HLR 20 pp, IOR 20 pp, alpha = .5*.2 - .5*.2 = 0
    s = label_robust_score(90.0, 70.0, 80.0, 60.0)
    assert (s["hlr"], s["ior"], s["alpha"]) == pytest.approx((20.0, 20.0, 0.0))
    assert s["lrs"] == pytest.approx(100 * (1 - 1 / e) / (e - 1 / e))
    # w = 1: only IOR counts; a perfect summary over a useless subset reaches 100
    assert label_robust_score(100.0, 0.0, 100.0, 0.0, weight=1.0)["lrs"] == pytest.approx(100.0)
    a = augmentation_robust_score(80.0, 60.0, 50.0, 45.0, weight=0.5)
    assert (a["aug_gap"], a["noaug_gap"]) == pytest.approx((20.0, 5.0))
    assert a["ars"] == pytest.approx(100 * (math.exp(0.125) - 1 / e) / (e - 1 / e))


def test_robust_scores_pair_rounds_and_use_hard_labels(digits):
    syn = PixelSet(digits.info, ipc=2, label_format="soft")
    with torch.no_grad():
        for c in range(10):
            syn.x[syn.class_slice(c)] = digits.train.x[digits.class_indices(c)[:2]]
        syn.y.mul_(5.0)  # confident soft labels
    seen = []
    rob = robust_scores(syn, digits, models=["mlp"], protocol=TINY, seed=3,
                        full_reference={"epochs": 1}, on_model=seen.append)
    m = rob["models"]["mlp"]
    assert rob["rounds"] == 2 and rob["random"]["ipc"] == 2 and rob["summary_labels"] == "soft"
    # summary, no-aug summary, hard-label summary: 2 models each; random subsets: 2 x 2
    assert len(seen) == 10 and {e["stage"] for e in seen} >= {"summary, hard labels"}
    acc = m["accuracies"]
    for k in ("hlr", "ior", "lrs", "aug_gap", "noaug_gap", "ars"):
        assert len(m[k]["values"]) == 2 and m[k]["std"] >= 0
    for r in range(2):  # every round's scores from that round's accuracies
        s = label_robust_score(m["full_acc"], acc["summary_hard_labels"][r], acc["summary"][r],
                               acc["random"][r])
        assert m["lrs"]["values"][r] == pytest.approx(s["lrs"])
        a = augmentation_robust_score(acc["summary"][r], acc["random"][r],
                                      acc["summary_no_aug"][r], acc["random_no_aug"][r])
        assert m["ars"]["values"][r] == pytest.approx(a["ars"])
        assert 0.0 <= m["lrs"]["values"][r] <= 100.0
    assert m["lrs"]["mean"] == pytest.approx(np.mean(m["lrs"]["values"]))
    assert "DD-Ranking" in rob["source"] and rob["full_reference"]["kind"] == "custom"
    view = HardLabelView(syn)
    assert view.label_format == "hard" and torch.equal(view.materialize()[1], syn.class_ids)


def test_robust_reuses_a_matching_report(digits):
    syn = PixelSet(digits.info, ipc=1)
    with torch.no_grad():
        syn.x.copy_(digits.train.x[[int(digits.class_indices(c)[0]) for c in range(10)]])
    rep = evaluate(syn, digits, models=("mlp",), protocol=TINY)
    seen = []
    rob = robust_scores(syn, digits, models=["mlp"], protocol=TINY, report=rep,
                        full_reference={"epochs": 1}, on_model=seen.append)
    assert rob["models"]["mlp"]["accuracies"]["summary"] == rep.results["mlp"]["accs"]
    assert "summary" not in {e["stage"] for e in seen}  # not trained again
    with pytest.raises(ValueError, match="DSA"):
        robust_scores(syn, digits, protocol=Protocol("x", epochs=1, num_models=1, dsa=False))


# -- drawings per modality ------------------------------------------------------------------------
def _graph_summary():
    info = DataInfo("toy-graph", "graph", 3, (4,), task="node")
    g = GraphSet(info, counts=[3, 2, 3], adjacency="fixed")
    ei = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 6], [1, 0, 2, 1, 4, 3, 6, 5]])
    g.set_edges(ei)
    with torch.no_grad():
        g.x.normal_(generator=torch.Generator().manual_seed(0))
    return g


def _user_summary():
    info = DataInfo("toy-recsys", "recsys", 1, (40,), flip=False)
    u = UserRowSet(info, users=6)
    u.rows[:, :10] = (torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    return u


def test_every_modality_has_a_drawing(digits):
    assert {"image", "graph", "recsys", "text", "tabular"} <= set(DRAWERS.names())
    img = PixelSet(digits.info, ipc=2)
    for syn in (img, _graph_summary(), _user_summary()):
        panels = draw_summary(syn)
        assert panels and all(p.png and p.png[:4] == b"\x89PNG" for p in panels), syn.info.modality
    assert len(draw_summary(_graph_summary())) == 2  # graph + degree histogram
    sets = GraphBatchSet(DataInfo("toy-graphs", "graph", 2, (3,), task="graph"), ipc=2, nodes=4)
    with torch.no_grad():
        sets.adj_logits.normal_(generator=torch.Generator().manual_seed(0)).mul_(3)
    assert [p.title.split(" ")[0] for p in draw_summary(sets)] == ["first", "degree"]
    from datadistill.compact import compact
    small = compact(sets, dtype="uint8", edge_dtype="binary")  # drawn as the set it came from
    assert [p.title for p in draw_summary(small)] == [p.title for p in draw_summary(sets)]
    text = PixelSet(DataInfo("toy-text", "text", 2, (1, 4, 4)), ipc=1)
    assert draw_summary(text)[0].png is None and "decoded" in draw_summary(text)[0].text
    odd = PixelSet(DataInfo("toy-audio", "audio", 2, (1, 4, 4)), ipc=1)
    assert "No drawing" in draw_summary(odd)[0].text


def test_report_of_runs_across_modalities(tmp_path, digits):
    runs = []
    for name, syn, ipc in (("img", PixelSet(digits.info, ipc=2), 2), ("graph", _graph_summary(), 1),
                           ("users", _user_summary(), 6)):
        syn.meta.update({"method": name, "params": {"lr": 0.1}, "iterations": 4,
                         "wall_time_s": 2.0, "run": {"threads": 1, "device": "cpu"}})
        d = tmp_path / name
        syn.save(d / "summary")
        (d / "log.jsonl").write_text("".join(json.dumps({"iteration": i, "loss": 1.0 / i,
                                                         "cpu_s": 0.5 * i}) + "\n"
                                             for i in range(1, 5)) + '{"iteration": 5, "lo')
        ev = {"protocol": {"name": "fast", "epochs": 300, "num_models": 3, "dsa": True},
              "results": {"convnet": {"mean": 50.0 + ipc, "std": 1.0, "accs": [1, 2, 3]}},
              "overrides": {}, "summary": {}, "run": {"device": "cpu"}}
        if name == "img":
            ev["robust"] = {"full_reference": {"kind": "published"}, "models": {"convnet": {
                "full_acc": 93.5, **{k: {"mean": 1.0, "std": 0.0} for k in
                                     ("hlr", "ior", "lrs", "aug_gap", "noaug_gap", "ars")}}}}
        (d / "evaluations").mkdir()
        (d / "evaluations" / "fast-convnet.json").write_text(json.dumps(ev))
        runs.append(d)
    r = load_run(runs[0])
    assert len(r.log) == 4 and r.cpu_seconds() == (2.0, "measured") and len(r.evaluations) == 1
    out = write_report(runs, tmp_path / "out" / "report.html", load_real=False)
    text = out.read_text()
    assert "http://" not in text and "https://" not in text
    pngs = PNG_URI.findall(text)
    assert len(pngs) >= 3 * 2 + 3  # per run: drawing(s) + curves; across runs: three plots
    assert all(p.startswith("iVBORw0KGgo") for p in pngs)
    for s in ("Cross-architecture table", "Robust scores", "fast: 300 ep x 3, DSA",
              "Method parameters", "Run options", "condensed graph", "item-popularity"):
        assert s in text, s


def test_report_decodes_text_and_tabular_runs(tmp_path):
    """Text summaries appear as their nearest tokens and nearest real sentences, tabular ones as
    their decoded rows under the original column names (the decoding ``datadistill show`` uses)."""
    import html as html_mod

    from datadistill.baselines import select_baseline
    from datadistill.data import load_dataset
    from datadistill.synsets.tabular import decode_rows
    from datadistill.synsets.text import nearest_sentences, nearest_tokens

    text, table = load_dataset("text-toy"), load_dataset("tabular-toy")
    runs = []
    for name, real in (("text", text), ("tabular", table)):
        syn = select_baseline(real, "herding", ipc=2)
        syn.save(tmp_path / name / "summary")
        runs.append((tmp_path / name, syn, real))
    out = write_report([r for r, _, _ in runs], tmp_path / "report.html")
    page = html_mod.unescape(out.read_text())
    _, syn, real = runs[0]
    x = syn.materialize()[0]
    for toks, near in zip(nearest_tokens(x, real.table, real.vocab.tokens),
                          nearest_sentences(x, real)):
        assert " ".join(toks) in page and near[0][0] in page
    assert "nearest tokens" in page and "politics" in page
    _, syn, _ = runs[1]
    assert "<th>age</th><th>income</th><th>color</th><th>size</th><th>y</th>" in page
    for rec in decode_rows(syn):
        cells = "".join(f"<td>{'' if v is None else f'{v:.4g}' if isinstance(v, float) else v}"
                        f"</td>" for v in rec.values())
        assert cells in page, cells
    assert "will be drawn here" not in page and "will be shown here" not in page
    # without the real data (its encoder), a text summary says why it is not decoded
    bare = write_report([runs[0][0]], tmp_path / "bare.html", load_real=False).read_text()
    assert "cannot be decoded" in bare


# -- progress -----------------------------------------------------------------------------------
def test_metrics_log_every_n_resume_and_cpu(tmp_path):
    path = tmp_path / "log.jsonl"
    log = MetricsLog(path, every=2)
    for i in range(1, 6):
        log({"iteration": i, "iterations": 5, "loss": float(i), **({"accuracy": 9.0} if i == 3 else {})})
    log.close()
    first = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["iteration"] for e in first] == [2, 3, 4, 5]  # every 2nd, evaluated ones, the last
    assert all(e["cpu_s"] >= 0 for e in first)
    log = MetricsLog(path, every=1)  # resumed from iteration 3: lines from 4 on are redone
    log({"iteration": 4, "iterations": 6, "loss": 0.0})
    log.close()
    again = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["iteration"] for e in again] == [2, 3, 4] and again[-1]["cpu_s"] >= first[1]["cpu_s"]


def test_cli_distill_log_every_report_and_tensorboard(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "4",
            "--set", "batch_real=8", "--out", str(run), "--quiet", "--device", "cpu"]
    assert main(base + ["--log-every", "3"]) == 0
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [3, 4] and all("cpu_s" in e for e in log)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "self-contained" in capsys.readouterr().out
    assert "distillation metrics" not in (tmp_path / "r.html").read_text() or \
        (tmp_path / "r.html").read_text().count("data:image/png;base64,") >= 2
    try:
        import tensorboard  # noqa: F401
        has_tb = True
    except ImportError:
        has_tb = False
    code = main(base + ["--tensorboard", str(tmp_path / "tb")])
    if has_tb:
        assert code == 0 and any((tmp_path / "tb").iterdir())
    else:
        assert code == 2 and "pip install tensorboard" in capsys.readouterr().err


# -- a real browser -----------------------------------------------------------------------------
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _browse(browser: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _page_check(browser: str, page: Path) -> tuple[int, int, list[str]]:
    """(images, decoded images, console messages) of ``page`` in headless Chromium: the DOM
    after load carries the report's hook attributes; console messages are logged to stderr."""
    proc = _browse(browser, page, "--dump-dom")
    total = re.search(r'data-images-total="(\d+)"', proc.stdout)
    decoded = re.search(r'data-images-decoded="(\d+)"', proc.stdout)
    console = [x for x in proc.stderr.splitlines() if "CONSOLE" in x or "Uncaught" in x]
    return (int(total.group(1)) if total else -1, int(decoded.group(1)) if decoded else -1, console)


@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path, capsys):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium (Debian package `chromium`; .ci/run installs it)")
    from PIL import Image

    # the check itself catches a broken image and console errors (a negative control)
    bad = tmp_path / "bad.html"
    from datadistill.report.html import HOOK
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                   f'<script>console.error("boom")</script><script>{HOOK}</script></body></html>')
    total, decoded, console = _page_check(browser, bad)
    assert (total, decoded) == (1, 0) and any("boom" in c for c in console)

    runs = [tmp_path / "dm", tmp_path / "random"]
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "2",
                 "--iterations", "4", "--set", "batch_real=16", "--out", str(runs[0]),
                 "--quiet", "--device", "cpu", "--eval-every", "2"]) == 0
    assert main(["baseline", "--coreset", "random", "--dataset", "digits", "--ipc", "2",
                 "--out", str(runs[1])]) == 0
    for r in runs:
        assert main(["evaluate", str(r), "--protocol", "smoke", "--models", "convnet,mlp",
                     "--device", "cpu", "--quiet"] + (["--robust", "--robust-full", "quick"]
                                                      if r == runs[0] else [])) == 0
    saved = json.loads((runs[0] / "evaluations" / "smoke-convnet+mlp-robust.json").read_text())
    assert 0 <= saved["robust"]["models"]["convnet"]["lrs"]["mean"] <= 100
    page = tmp_path / "report.html"
    assert main(["report", *map(str, runs), "--out", str(page)]) == 0
    capsys.readouterr()
    text = page.read_text()
    assert "LRS %" in text and text.count("data:image/png;base64,") >= 7

    total, decoded, console = _page_check(browser, page)
    assert console == [], console
    assert total >= 7 and decoded == total, (total, decoded)
    shot = tmp_path / "shot.png"
    proc = _browse(browser, page, "--window-size=1280,2400", f"--screenshot={shot}")
    assert shot.exists(), proc.stderr[-2000:]
    a = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert a.shape == (2400, 1280)
    assert a.std() > 20 and (a < 128).mean() > 0.01 and (a > 200).mean() > 0.3  # not blank
