"""``BENCHMARKS.md`` from results files: rows whose method stopped its own run (not reduced runs),
old rows read the same way, and a tiny real row that stops early."""
from __future__ import annotations

import json

from datadistill.bench.__main__ import main
from datadistill.bench.report import STATUS_RULE, status, summary_table
from datadistill.bench.report.cells import _iters


def _row(rid: str, **kw) -> dict:
    declared = {"method": kw.pop("method", "dm"), "preset": kw.pop("preset", None),
                "iterations": kw.pop("declared_iterations", None), "set": {}}
    row = {"id": rid, "kind": "accuracy", "status": "done", "label": declared["method"],
           "method": declared["method"], "dataset": "digits", "budget": {"ipc": 1},
           "declared": declared, "accuracy": {"mean": 50.0, "std": 0.0, "n": 1},
           "protocol": {"name": "fast"}}
    row.update(kw)
    return row


def _cells(row: dict) -> dict[str, str]:
    head, _, line = summary_table([{"suite": "s", "rows": {row["id"]: row}}], {})
    return dict(zip(head.strip("| ").split(" | "), line.strip("| ").split(" | ")))


def test_a_row_that_stopped_itself_is_not_a_reduced_run():
    row = _row("cf", iterations_run=280, iterations_requested=500, stopped_early=True,
               iterations_published=500, published={"accuracy": 49.0})
    assert _iters(row) == "280 (stopped) / 500"
    word, why = status(row)
    assert word == "stopped early" and why.startswith("by its own rule: 280 of 500 iterations")
    assert why.endswith("reproduced, +1.00 points")
    cells = _cells(row)
    assert cells["status"].startswith("**stopped early** (by its own rule: 280 of 500")
    assert cells["iterations run / published"] == "280 (stopped) / 500"
    # no published figure: still marked, the comparison says there is none
    row = _row("cf", iterations_run=280, iterations_requested=500, stopped_early=True,
               iterations_published=500)
    assert status(row) == ("stopped early",
                           "by its own rule: 280 of 500 iterations; no published figure")
    # asked for another count than the published schedule: the cell says what was asked
    row = _row("cf", iterations_run=80, iterations_requested=600, stopped_early=True,
               iterations_published=500)
    assert _iters(row) == "80 (stopped, of 600) / 500" and status(row)[0] == "stopped early"
    assert "stopped early" in STATUS_RULE


def test_a_shortened_request_that_also_stopped_stays_reduced():
    row = _row("r", iterations_run=80, iterations_requested=100, stopped_early=True,
               iterations_published=1000, published={"accuracy": 60.0})
    word, why = status(row)
    assert word == "reduced run"
    assert why == ("100 of 1,000 iterations asked for, stopped early by its own rule: 80 of "
                   "100 iterations; -10.00 points")
    # a row that ran everything it asked for, short of the schedule: reduced, as before
    row = _row("r", iterations_run=100, iterations_requested=100, stopped_early=False,
               iterations_published=1000, published={"accuracy": 60.0})
    assert status(row) == ("reduced run", "100 of 1,000 iterations; -10.00 points")
    assert _iters(row) == "100 / 1,000"


def test_rows_recorded_before_the_flag_are_inferred():
    """No ``stopped_early`` / ``iterations_requested``: fewer iterations run than declared, or
    than the method's default after the row's preset (the registry), is a stop."""
    old = _row("cf", method="distill-cf", iterations_run=280, iterations_published=500)
    assert _iters(old) == "280 (stopped) / 500"  # Distill-CF's default: 500 iterations
    assert status(old)[0] == "stopped early"
    declared = _row("x", iterations_run=7, declared_iterations=10, iterations_published=10)
    assert _iters(declared) == "7 (stopped) / 10"
    # DM's tiny preset asks for 3: a 3-iteration row ran everything (reduced, not stopped)
    tiny = _row("t", preset="tiny", iterations_run=3, iterations_published=10,
                published={"accuracy": 40.0})
    assert _iters(tiny) == "3 / 10" and status(tiny)[0] == "reduced run"
    # what cannot be told is not a stop: baselines, unknown methods, no iterations recorded
    for row in (_row("b", method="random", iterations_run=0),
                _row("u", method="no-such-method", iterations_run=5),
                _row("n", method="dm")):
        assert "stopped" not in _iters(row) and status(row)[0] != "stopped early"


TINY_STOP = """
title = "Stops"
[[rows]]
id = "rfad-stop"
method = "rfad"
preset = "tiny"
dataset = "digits"
ipc = 1
iterations = 12
protocol = "smoke"
run = {threads = 1}
# a validation check every iteration, no patience, a step size that makes it worse at once
set = {val_every = 1, patience = 0, lr_data = 1.0, lr_platt = 1.0}
published = {accuracy = 1.0, iterations = 12}
"""


def test_a_real_row_that_stops_early_is_recorded_and_reported(tmp_path):
    root = tmp_path / "bench"
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "stops.toml").write_text(TINY_STOP)
    assert main(["--bench-dir", str(root), "run", "stops"]) == 0
    row = json.loads((root / "results" / "stops.json").read_text())["rows"]["rfad-stop"]
    assert row["status"] == "done" and row["iterations_requested"] == 12
    assert row["stopped_early"] is True and row["iterations_run"] < 12
    assert row["seeds"][0]["stopped_early"] is True
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--bench-dir", str(root), "report", "--out", str(out)]) == 0
    text = out.read_text()
    run = row["iterations_run"]
    assert f"| {run} (stopped) / 12 |" in text
    assert f"**stopped early** (by its own rule: {run} of 12 iterations; reproduced" in text
