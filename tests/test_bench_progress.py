"""A running benchmark row says what it is doing: the parent reads the child's files (distillation
log, curve points, evaluation states) into one line, logs it while the row runs, and ``list``
shows it beside a row still marked running."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from datadistill import checkpoint as ckpt
from datadistill.bench.__main__ import main
from datadistill.bench.execute import run_suite
from datadistill.bench.progress import row_alive, row_progress
from datadistill.bench.results import Layout
from datadistill.bench.suites import load_suite


def test_each_stage_of_a_row_reads_from_its_files(tmp_path):
    run = tmp_path / "row"
    assert row_progress(run, 20) is None  # nothing yet
    s0 = run / "s0"
    s0.mkdir(parents=True)
    (s0 / "progress.jsonl").write_text('{"iteration": 1, "cpu_s": 0.5, "wall_s": 1}\n'
                                       '{"iteration": 7, "cpu_s": 3.2, "wall_s": 4}\n{"itera')
    # the last complete line counts (a line caught half-written is skipped)
    assert row_progress(run, 20) == "seed 0: distilling, iteration 7 of 20 (3 CPU-s)"
    assert row_progress(run) == "seed 0: distilling, iteration 7 (3 CPU-s)"
    (s0 / "distilled.json").write_text("{}")
    (s0 / "curve").mkdir()
    (s0 / "curve" / "it5.json").write_text("{}")
    model = s0 / "eval-state" / "summary" / "0-convnet-0"
    ckpt.save_state({"epoch": 12, "passes": 301, "cpu_s": 40.4, "key": "k", "losses": [1.0]},
                    model, "train")
    assert row_progress(run, 20) == ("seed 0: distilled, curve points done: [5]; evaluating "
                                     "summary: model 0-convnet-0 at epoch 12 of 301 (40 CPU-s), "
                                     "0 tested")
    ckpt.save_state({"key": "k", "accuracy": 50.0, "losses": [1.0], "cpu_s": 90.0}, model, "result")
    assert row_progress(run, 20).endswith("evaluating summary: 1 model(s) tested")
    s1 = run / "s1"
    s1.mkdir()
    (s1 / "seed.json").write_text("{}")
    (s1 / "progress.jsonl").write_text('{"iteration": 20, "cpu_s": 9}\n')
    assert row_progress(run, 20).endswith("; seed 1: done")


def test_an_evaluation_state_records_its_total_passes(digits, tmp_path):
    import torch

    from datadistill.evaluation import Protocol, evaluate
    from datadistill.runtime import RunOptions
    from datadistill.synsets import init_from

    syn = init_from(digits, 1, generator=torch.Generator().manual_seed(0))
    evaluate(syn, digits, models=["convnet"], protocol=Protocol("tiny", epochs=3, num_models=1),
             run=RunOptions(device="cpu", threads=1, fused=False, compile=False),
             state_dir=tmp_path)
    (model,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    state = json.loads((model / "train.json").read_text())["state"]
    assert state["passes"] == state["epoch"] == 4  # the reference schedule: 3 epochs + 1 pass


TINY = """
title = "Tiny"
[defaults]
dataset = "digits"
protocol = "smoke"
run = {threads = 1}

[[rows]]
id = "dm"
method = "dm"
preset = "tiny"
ipc = 2
iterations = 40
"""


def test_a_running_row_logs_its_progress_and_list_shows_it(tmp_path, capsys):
    root = tmp_path / "bench"
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "tiny.toml").write_text(TINY)
    layout = Layout(root)
    said: list[str] = []
    alive: list[bool] = []

    def log(msg: str) -> None:
        said.append(msg)
        if msg.startswith("[bench] tiny/dm: seed 0: "):  # (said while the child runs)
            alive.append(row_alive(layout.run_dir("tiny", "dm")))

    assert run_suite(load_suite(root / "suites" / "tiny.toml"), layout, log=log,
                     progress_every=0.05) == 0
    moving = [m for m in said if m.startswith("[bench] tiny/dm: seed 0: ")]
    assert moving, said
    assert alive and all(alive)  # its pid file names the live child while it runs
    assert len(moving) == len(set(moving))  # only when it changed
    assert said[-2] == "[bench] tiny/dm: done"
    # silent when asked
    quiet: list[str] = []
    assert run_suite(load_suite(root / "suites" / "tiny.toml"), layout, log=quiet.append,
                     progress_every=None) == 0
    assert not [m for m in quiet if "seed 0:" in m]
    # a row left "running" (its process stopped): list shows how far its files got
    res = root / "results" / "tiny.json"
    data = json.loads(res.read_text())
    data["rows"]["dm"]["status"] = "running"
    res.write_text(json.dumps(data))
    (layout.run_dir("tiny", "dm") / "s0" / "seed.json").unlink()
    (layout.run_dir("tiny", "dm") / "s0" / "distilled.json").unlink()
    assert not (layout.run_dir("tiny", "dm") / "child.pid").exists()  # removed when it ended
    assert main(["--bench-dir", str(root), "list"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("dm ")][0]
    assert "interrupted (seed 0: distilling, iteration 40 of 40 (" in line
    assert "`run --resume` continues it" in line
    # its pid file naming a live row process: running; a live pid of another program: not
    row_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                 "datadistill.bench", "_row"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for proc, word in ((row_proc, "running (seed 0"), (other, "interrupted (seed 0")):
            (layout.run_dir("tiny", "dm") / "child.pid").write_text(f"{proc.pid}\n")
            assert main(["--bench-dir", str(root), "list"]) == 0
            out = capsys.readouterr().out.splitlines()
            assert word in [x for x in out if x.strip().startswith("dm ")][0]
    finally:
        row_proc.kill()
        other.kill()
        row_proc.wait()
        other.wait()
    # a dead pid, or a file that names no process: interrupted; no run folder on this machine:
    # it says a resume starts over
    for text in (f"{row_proc.pid}\n", "0\n", "-1\n", "", "soon\n"):
        (layout.run_dir("tiny", "dm") / "child.pid").write_text(text)
        assert not row_alive(layout.run_dir("tiny", "dm"))
    assert main(["--bench-dir", str(root), "list"]) == 0
    assert "interrupted (seed 0" in capsys.readouterr().out
    shutil.rmtree(layout.run_dir("tiny", "dm"))
    assert main(["--bench-dir", str(root), "list"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("dm ")][0]
    assert line.rstrip().endswith("interrupted (no run state on this machine: "
                                  "`run --resume` starts it over)")
    for bad in ("-5", "nan", "soon"):  # a clear error, not a busy loop
        with pytest.raises(SystemExit):
            main(["--bench-dir", str(root), "run", "tiny", "--progress-every", bad])
        assert "a number of seconds >= 0" in capsys.readouterr().err
