"""The benchmark suite (``python -m datadistill.bench``): a tiny suite runs end to end into a
results file of the documented schema, ``--resume`` reruns nothing, the report opens with the
summary table, and a suite naming an unknown method or dataset fails with that name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from datadistill.bench.__main__ import main
from datadistill.bench.results import SCHEMA
from datadistill.bench.suites import SuiteError, load_suite

TINY = """
title = "Tiny"
notes = "DM's tiny preset on the embedded digits."
[defaults]
dataset = "digits"
protocol = "smoke"
run = {threads = 1}

[[rows]]
id = "dm-ipc2"
method = "dm"
preset = "tiny"
ipc = 2
published = {accuracy = 50.0, std = 1.0, source = "a test figure", iterations = 10}

[[rows]]
id = "dm-speed"
kind = "speed"
method = "dm"
preset = "tiny"
ipc = 2
timed = 2
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "bench"
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "tiny.toml").write_text(TINY)
    assert main(["--bench-dir", str(root), "run", "tiny"]) == 0
    return root


def test_results_file_schema(bench):
    data = json.loads((bench / "results" / "tiny.json").read_text())
    assert data["schema"] == SCHEMA and data["suite"] == "tiny"
    for key in ("cpu", "cores", "threads", "torch", "commit", "dirty", "date"):
        assert key in data["machine"]
    assert "CPU-seconds" in data["units"]["cpu_s"]
    acc = data["rows"]["dm-ipc2"]
    assert acc["status"] == "done" and acc["kind"] == "accuracy"
    assert acc["protocol"]["name"] == "smoke" and acc["env"]["threads"] == 1
    assert 0 <= acc["accuracy"]["mean"] <= 100 and acc["accuracy"]["n"] == 1
    assert set(acc["per_model"]) == {"convnet"}
    assert acc["iterations_run"] == 3 and acc["iterations_published"] == 10
    assert acc["cpu_s"]["distill"] > 0 and acc["cpu_s"]["evaluate"] > 0
    assert acc["wall_s"]["distill"] > 0 and acc["peak_rss_bytes"] > 0
    summ = acc["summaries"][0]
    assert summ["stored_bytes"] == acc["stored_bytes"] > 0 and len(summ["sha256"]) == 64
    kept = bench.parent / summ["kept"]  # small summaries are copied beside the results
    assert (kept / "summary.safetensors").exists()
    speed = data["rows"]["dm-speed"]
    assert speed["status"] == "done" and speed["iterations_timed"] == 2
    assert speed["cpu_s_per_iter"]["median"] > 0 and speed["peak_rss_bytes"] > 0


def test_resume_reruns_nothing(bench):
    path = bench / "results" / "tiny.json"
    before = json.loads(path.read_text())["rows"]
    records = {p: p.stat().st_mtime_ns for p in (bench / "runs").rglob("*.json")}
    assert main(["--bench-dir", str(bench), "run", "tiny", "--resume"]) == 0
    assert json.loads(path.read_text())["rows"] == before
    assert {p: p.stat().st_mtime_ns for p in (bench / "runs").rglob("*.json")} == records


def test_report_opens_with_the_summary_table(bench, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--bench-dir", str(bench), "report", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "do not edit by hand" in text
    first_table = next(line for line in text.splitlines() if line.startswith("|"))
    assert first_table.startswith("| method | dataset | budget | accuracy % | protocol | "
                                  "iterations run / published |")
    assert "| dm | digits | IPC 2 |" in text and "reduced run" in text  # 3 of 10 iterations
    assert text.index("## Summary") < text.index("## Tiny (`tiny`)")


@pytest.mark.parametrize("field,value", [("method", "no-such-method"), ("dataset", "no-such-data")])
def test_unknown_name_is_a_clear_error(tmp_path, capsys, field, value):
    (tmp_path / "suites").mkdir()
    row = {"id": "r", "method": "dm", "dataset": "digits", "ipc": 1, field: value}
    body = "\n".join(f'{k} = {json.dumps(v)}' for k, v in row.items())
    (tmp_path / "suites" / "bad.toml").write_text(f"[[rows]]\n{body}\n")
    with pytest.raises(SuiteError, match=f"row 'r'.*{value}"):
        load_suite(tmp_path / "suites" / "bad.toml")
    assert main(["--bench-dir", str(tmp_path), "run", "bad"]) == 2
    assert value in capsys.readouterr().err


def test_unknown_key_is_a_clear_error(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "digits"\nipcs = 1\n')
    with pytest.raises(SuiteError, match="ipcs"):
        load_suite(tmp_path / "s.toml")
