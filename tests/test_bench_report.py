"""``BENCHMARKS.md`` from results files: rows whose method stopped its own run (not reduced runs),
old rows read the same way, a tiny real row that stops early; a suite's declared figure."""
from __future__ import annotations

import json

import pytest

from datadistill.bench.__main__ import main
from datadistill.bench.report import STATUS_RULE, status, summary_table
from datadistill.bench.report.cells import _iters
from datadistill.bench.suites import SuiteError, load_suite


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
    # a published schedule without a published figure: still a reduced run, saying both
    row = _row("kfs", iterations_run=200, iterations_requested=200, stopped_early=False,
               iterations_published=20000)
    assert status(row) == ("reduced run", "200 of 20,000 iterations; no published figure")
    assert status(_row("kfs", iterations_run=20000, iterations_requested=20000,
                       stopped_early=False, iterations_published=20000)) == \
        ("no published figure", "")
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


# -- a suite's figure -----------------------------------------------------------------------------
def _results(rows: dict) -> dict:
    from datadistill.bench.results import SCHEMA

    return {"schema": SCHEMA, "suite": "scaling", "title": "Scaling", "notes": "", "units": {},
            "machine": {}, "rows": rows}


def _scaling_rows() -> dict:
    rows = {}
    for method, base, storage in (("dm", 60.0, None), ("random", 40.0, "uint8")):
        for ipc in (1, 10, 50):
            rid = f"{method}-ipc{ipc}"
            rows[rid] = {**_row(rid, method=method, iterations_run=0 if method == "random" else 20,
                                accuracy={"mean": base + ipc / 5, "std": 0.5, "n": 2}),
                         "budget": {"ipc": ipc}, "stored_bytes": ipc * 640 * (1 if storage else 4)}
            if storage:
                rows[rid]["declared"]["set"] = {"storage": storage}
    rows["speed"] = {"id": "speed", "kind": "speed", "status": "done"}  # (not plotted)
    return rows


def _bench(tmp_path, figure: str, rows: dict | None = None):
    root = tmp_path / "bench"
    (root / "suites").mkdir(parents=True)
    (root / "results").mkdir()
    (root / "suites" / "scaling.toml").write_text(
        f'title = "Scaling"\n{figure}\n[[rows]]\nid = "dm-ipc1"\nmethod = "dm"\n'
        f'dataset = "digits"\nipc = 1\n')
    (root / "results" / "scaling.json").write_text(json.dumps(_results(rows or _scaling_rows())))
    return root


def test_a_suite_figure_is_drawn_and_shown_in_its_section(tmp_path):
    from datadistill.bench.report.figure import series

    root = _bench(tmp_path, 'figure = {x = "ipc", title = "Accuracy against IPC"}')
    out = root.parent / "BENCHMARKS.md"  # beside bench/, as in the repository
    assert main(["--bench-dir", str(root), "report", "--out", str(out)]) == 0
    png = root / "results" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    text = out.read_text()
    section = text[text.index("## Scaling (`scaling`)"):]
    assert "![Accuracy against IPC](bench/results/scaling.png)" in section
    assert "protocol fast" in section and "examples per class" in section
    lines = series(_results(_scaling_rows()), "ipc")
    assert [k[0] for k in lines] == ["dm", "random, uint8"]  # method + storage
    assert [p["x"] for p in lines[("dm", "fast", "accuracy %")]] == [1.0, 10.0, 50.0]
    # regenerated without new results: the same bytes, the file not even rewritten
    before = png.read_bytes()
    png.unlink()
    assert main(["--bench-dir", str(root), "report", "--out", str(out)]) == 0
    assert png.read_bytes() == before  # deterministic (no date / version in the PNG)
    stamp = png.stat().st_mtime_ns
    assert main(["--bench-dir", str(root), "report", "--out", str(out)]) == 0
    assert png.stat().st_mtime_ns == stamp
    # another folder for BENCHMARKS.md: the link is relative to it
    other = tmp_path / "docs" / "B.md"
    other.parent.mkdir()
    assert main(["--bench-dir", str(root), "report", "--out", str(other)]) == 0
    assert "](../bench/results/scaling.png)" in other.read_text()


def test_a_bytes_figure_and_a_suite_without_one(tmp_path):
    from datadistill.bench.report.figure import series

    lines = series(_results(_scaling_rows()), "bytes")
    assert [p["x"] for p in lines[("random, uint8", "fast", "accuracy %")]] == [640.0, 6400.0, 32000.0]
    # two rows of one series at one x: the one with the most iterations is drawn
    rows = _scaling_rows()
    rows["dm-ipc10-short"] = {**rows["dm-ipc10"], "id": "dm-ipc10-short", "iterations_run": 5,
                              "accuracy": {"mean": 1.0, "std": 0.0, "n": 2}}
    for order in (rows, dict(reversed(list(rows.items())))):
        pts = series(_results(order), "ipc")[("dm", "fast", "accuracy %")]
        assert [(p["x"], p["row"]) for p in pts] == [(1.0, "dm-ipc1"), (10.0, "dm-ipc10"),
                                                      (50.0, "dm-ipc50")]
    root = _bench(tmp_path, 'figure = {x = "bytes"}')
    assert main(["--bench-dir", str(root), "report", "--out", str(tmp_path / "B.md")]) == 0
    assert (root / "results" / "scaling.png").stat().st_size > 0
    assert "![Scaling](bench/results/scaling.png)" in (tmp_path / "B.md").read_text()
    plain = _bench(tmp_path / "plain", "")
    assert main(["--bench-dir", str(plain), "report", "--out", str(tmp_path / "C.md")]) == 0
    assert not (plain / "results" / "scaling.png").exists()
    assert "![" not in (tmp_path / "C.md").read_text()


def test_a_figure_draws_rows_of_other_suites_it_names_and_compact_layouts_apart(tmp_path):
    from datadistill.bench.report import suite_figures
    from datadistill.bench.report.figure import caption, series, with_also

    rows = _scaling_rows()
    rows["dm-ipc10"]["declared"]["compact"] = {"topk": 5, "dtype": "uint8"}
    keys = [k[0] for k in series(_results(rows), "bytes")]
    assert keys == ["dm", "dm, compact top-5 uint8", "random, uint8"]
    root = _bench(tmp_path, 'figure = {x = "ipc", also = ["other/kfs-ipc10", "other/not-run"]}')
    other = _results({"kfs-ipc10": {**_row("kfs-ipc10", method="kfs", iterations_run=200,
                                            accuracy={"mean": 77.0, "std": 0.1, "n": 2}),
                                    "budget": {"ipc": 10}, "stored_bytes": 6000}})
    (root / "results" / "other.json").write_text(json.dumps({**other, "suite": "other"}))
    by_name = {"scaling": _results(_scaling_rows()), "other": {**other, "suite": "other"}}
    spec = {"x": "ipc", "title": None, "also": ["other/kfs-ipc10", "other/not-run"]}
    merged = with_also(by_name["scaling"], spec, by_name)
    lines = series(merged, "ipc")
    assert [(p["x"], p["mean"], p["row"]) for p in lines[("kfs", "fast", "accuracy %")]] == \
        [(10.0, 77.0, "other/kfs-ipc10")]
    assert "Also drawn from other suites: other/kfs-ipc10." in caption(merged, spec)
    shown = suite_figures(list(by_name.values()), root / "suites", root / "results",
                          tmp_path / "B.md")
    assert "other/kfs-ipc10" in " ".join(shown["scaling"])


def test_a_cpu_figure_draws_each_curve_row_as_a_line_with_the_budget_marked(tmp_path):
    from datadistill.bench.report.figure import caption, series

    def point(its, cpu, acc):
        return {"iterations": its, "distill_cpu_s": cpu, "model": "convnet",
                "accuracy": {"mean": acc, "std": 0.5, "n": 2}}

    rows = {"dm-u8": {**_row("dm-u8", iterations_run=300, label="dm, uint8",
                             accuracy={"mean": 84.0, "std": 0.2, "n": 2}),
                      "cpu_s": {"distill": 600.0},
                      "curve": [point(100, 200.0, 80.0), point(300, 600.0, 84.0)]},
            "kfs": {**_row("kfs", method="kfs", iterations_run=200, label="kfs"),
                    "cpu_s": {"distill": 400.0},
                    "curve": [point(50, 100.0, 78.0), point(200, 400.0, 82.0)]},
            "dm-plain": {**_row("dm-plain", iterations_run=10), "cpu_s": {"distill": 50.0}},
            "no-cpu": _row("no-cpu", iterations_run=10, label="lost")}
    lines = series(_results(rows), "cpu")
    # one line per row (two DM rows stay apart), curve points in CPU order; a row without
    # a curve is its one point; a row without CPU-seconds is not drawn
    assert [k[0] for k in lines] == ["dm", "dm, uint8", "kfs"]
    assert [(p["x"], p["mean"]) for p in lines[("dm, uint8", "fast", "accuracy %")]] == \
        [(200.0, 80.0), (600.0, 84.0)]
    assert [p["x"] for p in lines[("dm", "fast", "accuracy %")]] == [50.0]
    spec = {"x": "cpu", "title": None, "also": [], "limit": {"x": 900.0, "label": "goal"}}
    assert "the dashed line: goal (900)" in caption(_results(rows), spec)
    root = _bench(tmp_path, 'figure = {x = "cpu", limit = {x = 900, label = "goal"}}',
                  rows=rows)
    assert load_suite(root / "suites" / "scaling.toml", check=False).figure["limit"] == \
        {"x": 900.0, "label": "goal"}
    assert main(["--bench-dir", str(root), "report", "--out", str(tmp_path / "B.md")]) == 0
    assert (root / "results" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert "distillation CPU-seconds (linear scale" in (tmp_path / "B.md").read_text()


@pytest.mark.parametrize("figure,match", [
    ('figure = {x = "cpu", limit = 900}', "limit"),
    ('figure = {x = "cpu", limit = {x = -1}}', "limit"),
    ('figure = {x = "cpu", limit = {x = 900, colour = "red"}}', "limit"),
    ('figure = {x = "ipc", also = "scaling/x"}', "also"),
    ('figure = {x = "ipc", also = ["no-slash"]}', "also"),
    ('figure = {x = "ipc", colour = "red"}', "colour"),
    ('figure = {x = "epochs"}', "epochs"),
    ('figure = {title = "no x"}', "figure x"),
    ('figure = "ipc"', "figure"),
    ('figure = {x = "ipc", title = 3}', "title"),
])
def test_a_bad_figure_is_a_suite_error(tmp_path, capsys, figure, match):
    root = _bench(tmp_path, figure)
    with pytest.raises(SuiteError, match=match):
        load_suite(root / "suites" / "scaling.toml", check=False)
    assert main(["--bench-dir", str(root), "report", "--out", str(tmp_path / "B.md")]) == 2
    assert match in capsys.readouterr().err


def test_a_suite_table_has_stored_bytes_and_aligns_a_running_row():
    from datadistill.bench.report.sections import suite_section

    rows = {"done": {**_row("done", iterations_run=5), "stored_bytes": 313700},
            "busy": {"id": "busy", "kind": "accuracy", "status": "running",
                     "declared": {"method": "kfs"}}}
    lines = suite_section({**_results(rows), "suite": "s", "title": "S"})
    table = [x for x in lines if x.startswith("| ") and "---" not in x][:3]
    head, done, busy = table
    cols = [c.strip() for c in head.strip("|").split("|")]
    assert cols[4] == "stored bytes" and done.strip("|").split("|")[4].strip() == "313,700"
    assert head.count("|") == done.count("|") == busy.count("|")
    assert busy.rstrip(" |").endswith("unfinished (started, no result yet)")


def test_points_with_fewer_evaluation_models_stay_on_their_methods_line():
    from datadistill.bench.report.figure import series

    rows = _scaling_rows()
    for rid, r in rows.items():
        if r.get("kind") == "accuracy":
            r["protocol"] = {"name": "fast", "epochs": 300,
                             "num_models": 1 if rid.endswith("ipc50") else 2}
    lines = series(_results(rows), "ipc")
    assert list(lines) == [("dm", "fast (300 ep)", "accuracy %"),
                           ("random, uint8", "fast (300 ep)", "accuracy %")]
    assert [p["x"] for p in lines[("dm", "fast (300 ep)", "accuracy %")]] == [1.0, 10.0, 50.0]


def test_rows_declaring_a_series_are_drawn_in_their_own_line():
    from datadistill.bench.report.figure import series

    rows = _scaling_rows()
    # KFS at fixed bytes (its method's line) and at fixed examples (a named line), both at ipc 10
    for rid, ipc, acc, named in (("kfs-ipc10", 10, 80.0, False), ("kfs-n10", 10, 70.0, True),
                                 ("kfs-n50", 50, 75.0, True)):
        rows[rid] = {**_row(rid, method="kfs", iterations_run=200,
                            accuracy={"mean": acc, "std": 0.1, "n": 2}),
                     "budget": {"ipc": ipc}, "stored_bytes": 100 * ipc}
        rows[rid]["declared"]["set"] = {"codes_per_class": ipc // 2} if named else {}
        if named:
            rows[rid]["declared"]["series"] = "kfs, fixed examples"
    lines = series(_results(rows), "ipc")
    assert [(p["x"], p["row"]) for p in lines[("kfs", "fast", "accuracy %")]] == [(10.0, "kfs-ipc10")]
    assert [(p["x"], p["mean"]) for p in lines[("kfs, fixed examples", "fast", "accuracy %")]] == \
        [(10.0, 70.0), (50.0, 75.0)]
    assert ("dm", "fast", "accuracy %") in lines  # rows without one keep their method's line
    from datadistill.bench.report.figure import caption

    text = caption(_results(rows), {"x": "ipc"})
    assert "a line per series its rows name (kfs, fixed examples)" in text
    assert "series its rows name" not in caption(_results(_scaling_rows()), {"x": "ipc"})


@pytest.mark.parametrize("value", ['""', "3", '"  "'])
def test_a_bad_series_is_a_suite_error(value):
    from datadistill.bench.suites import SuiteError, parse_suite

    text = f'title = "t"\n[[rows]]\nid = "a"\nmethod = "dm"\ndataset = "digits"\nseries = {value}\n'
    with pytest.raises(SuiteError, match="series"):
        parse_suite(text, "t")
    ok = parse_suite(text.replace(f"series = {value}", 'series = "dm, named"'), "t")
    assert ok.rows[0].series == "dm, named" and ok.rows[0].declared()["series"] == "dm, named"


def test_cpu_cells_give_the_threads_each_part_ran_with():
    from datadistill.bench.report.cells import _cpu

    row = {**_row("r"), "cpu_s": {"distill": 724.0, "evaluate": 7433.0}, "env": {"threads": 2},
           "run_resolved": {"distill": {"threads": 1}, "evaluate": {"threads": 2}}}
    assert _cpu(row) == "724 (1 thr)" and _cpu(row, "evaluate") == "7,433 (2 thr)"
    row["run_resolved"] = {"distill": None, "evaluate": None}  # (a baseline: nothing resolved)
    assert _cpu(row) == "724 (2 thr)"


def test_a_repeated_speed_row_left_mid_way_says_how_many_rounds_it_has():
    from datadistill.bench.report.sections import _state

    row = {"id": "v", "kind": "speed", "status": "running", "declared": {"repeats": 3},
           "rounds": [{"cpu_s_per_iter": [1.0]}, {"cpu_s_per_iter": [1.1]}]}
    assert _state(row) == "unfinished (2 of 3 rounds)"
    assert _state({**row, "status": "done"}) == "done"
