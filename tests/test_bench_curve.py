"""A ``curve`` row: one distillation, its snapshots at the listed iterations evaluated too (the
accuracy-vs-CPU-time curve of issues 16 and 17), each point with the CPU-seconds spent up to it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datadistill.bench.__main__ import main
from datadistill.bench.suites import SuiteError, load_suite
from datadistill.synsets import load_summary

CURVE = """
[defaults]
dataset = "digits"
protocol = "smoke"
run = {threads = 1}

[[rows]]
id = "dm-curve"
method = "dm"
preset = "tiny"
ipc = 2
iterations = 4
curve = [1, 2]

[[rows]]
id = "dm-two"
method = "dm"
preset = "tiny"
ipc = 2
iterations = 2
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "bench"
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "c.toml").write_text(CURVE)
    assert main(["--bench-dir", str(root), "run", "c"]) == 0
    return root


def test_a_curve_row_records_every_point_in_order(ran):
    rec = json.loads((ran / "results" / "c.json").read_text())["rows"]["dm-curve"]
    pts = rec["curve"]
    assert [p["iterations"] for p in pts] == [1, 2, 4]
    cpu = [p["distill_cpu_s"] for p in pts]
    assert all(c is not None and c > 0 for c in cpu) and cpu == sorted(cpu)
    assert pts[-1]["accuracy"] == rec["accuracy"]  # the row's own evaluation closes the curve
    assert all(p["accuracy"]["n"] >= 1 and p["evaluate_cpu_s"] > 0 for p in pts)


def test_the_snapshot_is_the_summary_after_that_iteration(ran):
    """DM has no schedule over the total iterations: the curve's 2-iteration snapshot is what a
    separate 2-iteration run of the same seed distils."""
    snap = load_summary(ran / "runs" / "c" / "dm-curve" / "s0" / "curve" / "it2")
    two = load_summary(ran / "runs" / "c" / "dm-two" / "s0" / "summary")
    assert snap.meta["iterations"] == 2
    torch.testing.assert_close(snap.materialize()[0], two.materialize()[0], rtol=0, atol=0)


def test_resume_evaluates_only_the_missing_point(ran):
    sdir = ran / "runs" / "c" / "dm-curve" / "s0"
    before = json.loads((ran / "results" / "c.json").read_text())["rows"]["dm-curve"]["curve"]
    (sdir / "seed.json").unlink()
    (sdir / "curve" / "it2.json").unlink()
    kept = (sdir / "curve" / "it1.json").stat().st_mtime_ns
    results = json.loads((ran / "results" / "c.json").read_text())
    results["rows"]["dm-curve"]["status"] = "running"
    (ran / "results" / "c.json").write_text(json.dumps(results))
    assert main(["--bench-dir", str(ran), "run", "c", "--resume"]) == 0
    after = json.loads((ran / "results" / "c.json").read_text())["rows"]["dm-curve"]["curve"]
    assert (sdir / "curve" / "it1.json").stat().st_mtime_ns == kept
    assert (sdir / "curve" / "it2.json").exists()
    assert [p["accuracy"]["mean"] for p in after] == [p["accuracy"]["mean"] for p in before]


@pytest.mark.parametrize("extra,match", [
    ("iterations = 4\ncurve = [2, 1]", "increasing"),
    ("iterations = 4\ncurve = [4]", "not below"),
    ("curve = [1]", "needs the row's own 'iterations'"),
    ("iterations = 4\ncurve = []", "increasing"),
    ('iterations = 4\ncurve = [1]\nkind = "speed"', "accuracy rows"),
])
def test_curve_keys_are_checked(tmp_path, extra, match):
    (tmp_path / "s.toml").write_text(f'[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "digits"\n'
                                     f'ipc = 1\n{extra}\n')
    with pytest.raises(SuiteError, match=match):
        load_suite(tmp_path / "s.toml")


def test_a_baseline_has_no_curve(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "random"\ndataset = "digits"\n'
                                     'ipc = 1\niterations = 3\ncurve = [1]\n')
    with pytest.raises(SuiteError, match="baseline"):
        load_suite(tmp_path / "s.toml")


def test_from_summary_evaluates_a_kept_summary_without_distilling(ran, tmp_path):
    """A row with ``from_summary`` evaluates another row's summary under its own protocol: the
    same tensors (sha256), no distillation, its iterations taken from the summary."""
    kept = json.loads((ran / "results" / "c.json").read_text())["rows"]["dm-two"]["summaries"][0]
    (ran / "suites" / "again.toml").write_text(
        '[[rows]]\nid = "again"\nmethod = "dm"\ndataset = "digits"\nipc = 2\nprotocol = "smoke"\n'
        'num_models = 2\nrun = {threads = 1}\nfrom_summary = "c/dm-two"\n')
    assert main(["--bench-dir", str(ran), "run", "again"]) == 0
    rec = json.loads((ran / "results" / "again.json").read_text())["rows"]["again"]
    assert rec["iterations_run"] == 2 and rec["accuracy"]["n"] == 2
    assert rec["summaries"][0]["sha256"] == kept["sha256"]
    assert rec["seeds"][0]["distill_cpu_s"] < 1.0  # nothing distilled


def test_from_summary_must_name_a_finished_unchanged_summary(ran):
    (ran / "suites" / "missing.toml").write_text(
        '[[rows]]\nid = "m"\nmethod = "dm"\ndataset = "digits"\nipc = 2\nfrom_summary = "c/nope"\n')
    assert main(["--bench-dir", str(ran), "run", "missing"]) == 2
    # a summary whose tensors changed since its row recorded them is refused
    t = ran / "summaries" / "c" / "dm-two" / "s0" / "summary.safetensors"
    saved = t.read_bytes()
    t.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    run = ran / "runs" / "c" / "dm-two" / "s0" / "summary" / "summary.safetensors"
    run_saved = run.read_bytes()
    run.write_bytes(run_saved[:-1] + bytes([run_saved[-1] ^ 1]))
    try:
        (ran / "suites" / "changed.toml").write_text(
            '[[rows]]\nid = "m"\nmethod = "dm"\ndataset = "digits"\nipc = 2\nfrom_summary = "c/dm-two"\n')
        assert main(["--bench-dir", str(ran), "run", "changed"]) == 2
    finally:
        t.write_bytes(saved)
        run.write_bytes(run_saved)


@pytest.mark.parametrize("value", ["bench/summaries/x/s0", "c", "c/r/seed0"])
def test_from_summary_is_a_suite_and_row(tmp_path, value):
    (tmp_path / "s.toml").write_text(f'[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "digits"\n'
                                     f'ipc = 1\nfrom_summary = "{value}"\n')
    with pytest.raises(SuiteError, match="from_summary"):
        load_suite(tmp_path / "s.toml", check=False)


def test_the_report_has_the_curves_and_names_a_re_evaluations_source(ran, tmp_path):
    out = tmp_path / "B.md"
    assert main(["--bench-dir", str(ran), "report", "--out", str(out)]) == 0
    text = out.read_text()
    section = text.split("## Accuracy against distillation CPU time (curves)")[1].split("\n## ")[0]
    lines = [x for x in section.splitlines() if x.startswith("| dm |")]
    assert [x.split(" | ")[3].strip() for x in lines] == ["1", "2", "4"]
    rec = json.loads((ran / "results" / "c.json").read_text())["rows"]["dm-curve"]
    assert f"{rec['curve'][0]['accuracy']['mean']:.2f}" in lines[0]
    if (ran / "results" / "again.json").exists():  # (the from_summary test ran first)
        assert "— (the summary of c/dm-two)" in text


def test_from_summary_may_name_an_earlier_row_of_its_own_suite(tmp_path):
    """A suite that distils a summary and re-evaluates it under another protocol runs in one go:
    the later row's summary is looked up when it runs; a later or unknown row is an error."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "two.toml").write_text(
        '[defaults]\ndataset = "digits"\nprotocol = "smoke"\nnum_models = 1\nrun = {threads = 1}\n'
        '[[rows]]\nid = "a"\nmethod = "dm"\npreset = "tiny"\nipc = 1\niterations = 2\n'
        '[[rows]]\nid = "b"\nmethod = "dm"\nipc = 1\nprotocol = "fast"\nfrom_summary = "two/a"\n')
    load_suite(tmp_path / "suites" / "two.toml")  # b's source does not exist yet: not an error
    (tmp_path / "suites" / "bad.toml").write_text(
        '[[rows]]\nid = "b"\nmethod = "dm"\ndataset = "digits"\nipc = 1\nfrom_summary = "bad/a"\n'
        '[[rows]]\nid = "a"\nmethod = "dm"\ndataset = "digits"\nipc = 1\n')
    with pytest.raises(SuiteError, match="no earlier row"):
        load_suite(tmp_path / "suites" / "bad.toml")
