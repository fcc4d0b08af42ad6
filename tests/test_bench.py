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
repeats = 2
run = {threads = 1, fused = false}

[[rows]]
id = "ext-speed"
kind = "speed"
method = "dm"
ipc = 2
timed = 2
repeats = 2
external = "python -c 'import json; print(json.dumps({\\"marks\\": [[0, 0], [1, 1], [3, 2], [4, 3]], \\"peak_rss_bytes\\": 7, \\"info\\": {\\"program\\": \\"a stand-in\\"}}))'"
vs = "dm-speed"
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


def test_run_options_are_apart_from_parameters_and_recorded_resolved(bench):
    """A row's ``run`` table is ``RunOptions`` (never method parameters); every record keeps what
    ``auto`` resolved to, for distillation and evaluation."""
    rows = json.loads((bench / "results" / "tiny.json").read_text())["rows"]
    acc, speed = rows["dm-ipc2"], rows["dm-speed"]
    for resolved in (acc["run_resolved"]["distill"], acc["run_resolved"]["evaluate"],
                     speed["run_resolved"]):
        assert resolved["device"] == "cpu" and resolved["fused"] in (True, False)
        assert resolved["compile"] in (True, False) and resolved["allocator"] in ("tuned", "default")
    assert speed["run"] == {"threads": 1, "fused": False} and speed["run_resolved"]["fused"] is False
    assert "fused" not in speed["params"]  # not a method parameter


def test_repeated_rows_alternate_and_pool_their_rounds(bench):
    """``repeats = 2``: two rounds per row (round 1 of every row, then round 2), timed iterations
    pooled, per-round medians and their spread kept; an ``external`` row is timed by the command's
    own marks."""
    rows = json.loads((bench / "results" / "tiny.json").read_text())["rows"]
    speed, ext = rows["dm-speed"], rows["ext-speed"]
    assert len(speed["rounds"]) == 2 and len(speed["cpu_s_per_iter"]["all"]) == 4
    assert len(speed["cpu_s_per_iter"]["round_medians"]) == 2
    assert speed["rounds"][0]["date"] <= rows["ext-speed"]["rounds"][0]["date"] \
        <= speed["rounds"][1]["date"]
    # marks 0, 1, 3, 4 s: iterations of 1, 2, 1 s; warm-up 1 -> timed [2, 1] in each round
    assert ext["cpu_s_per_iter"]["all"] == [2, 1, 2, 1] and ext["cpu_s_per_iter"]["median"] == 1.5
    assert ext["peak_rss_bytes"] == 7 and ext["provenance"] == {"program": "a stand-in"}


def test_old_speed_flags_are_not_method_parameters(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "dc"\ndataset = "digits"\n'
                                     'ipc = 1\nset = {fused = true}\n')
    with pytest.raises(SuiteError, match="fused"):
        load_suite(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "dc"\ndataset = "digits"\n'
                                     'ipc = 1\nrun = {real_chunk = 4}\n')
    with pytest.raises(SuiteError, match="real_chunk"):
        load_suite(tmp_path / "s.toml")


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
