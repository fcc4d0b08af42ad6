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
robust = {full = {epochs = 1}}
byte_budget = 100000

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
    assert acc["iterations_requested"] == 3 and acc["stopped_early"] is False  # (tiny: 3 asked)
    assert acc["cpu_s"]["distill"] > 0 and acc["cpu_s"]["evaluate"] > 0
    assert acc["wall_s"]["distill"] > 0 and acc["peak_rss_bytes"] > 0
    summ = acc["summaries"][0]
    assert summ["stored_bytes"] == acc["stored_bytes"] > 0 and len(summ["sha256"]) == 64
    kept = bench.parent / summ["kept"]  # small summaries are copied beside the results
    assert (kept / "summary.safetensors").exists()
    # robust = {...}: DD-Ranking's scores from the library's function, pooled over seeds
    rob = acc["robust"]
    assert "DD-Ranking" in rob["source"] and rob["rounds"] == 1 and rob["seeds"] == 1
    assert rob["protocol"]["name"] == "smoke" and rob["full_reference"]["kind"] == "custom"
    conv = rob["models"]["convnet"]
    assert 0 <= conv["lrs"]["mean"] <= 100 and 0 <= conv["ars"]["mean"] <= 100
    assert conv["lrs"]["n"] == 1 and len(conv["accuracies"]["random_no_aug"]) == 1
    assert conv["accuracies"]["summary"] == acc["per_model"]["convnet"]["accs"]  # reused
    assert rob["cpu_s"] > 0 and acc["cpu_s"]["robust"] == rob["cpu_s"]
    assert acc["declared"]["byte_budget"] == 100000
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
    assert text.index("## Summary") < text.index("## At fixed stored bytes") \
        < text.index("## Robust scores") < text.index("## Tiny (`tiny`)")
    acc = json.loads((bench / "results" / "tiny.json").read_text())["rows"]["dm-ipc2"]
    summary = next(x for x in text.splitlines() if x.startswith("| dm | digits | IPC 2 |"))
    assert f"| {acc['stored_bytes']:,} " in summary  # the stored-bytes column
    fixed = text[text.index("## At fixed stored bytes"):text.index("## Robust scores")]
    assert "| digits | 100,000 (97.7 KiB) | dm | IPC 2 |" in fixed and "| fits |" in fixed
    robust = text[text.index("## Robust scores"):text.index("## Tiny (`tiny`)")]
    lrs = acc["robust"]["models"]["convnet"]["lrs"]["mean"]
    assert "| dm | digits | IPC 2 | convnet |" in robust and f"**{lrs:.2f}**" in robust
    assert "smoke (20 ep, 1 rounds)" in robust and "tiny/dm-ipc2" in robust


def test_stored_bytes_of_old_rows_and_unknown_ones():
    """Rows recorded before the runner kept ``stored_bytes`` at row level: the per-seed figure,
    else a dash (never a guess)."""
    from datadistill.bench.report import stored_bytes, summary_table

    assert stored_bytes({"stored_bytes": 7}) == 7
    assert stored_bytes({"stored_bytes": None, "summaries": [{"stored_bytes": 31440}]}) == 31440
    assert stored_bytes({"summaries": [{"stored_bytes": None}]}) is None
    row = {"id": "r", "kind": "accuracy", "status": "done", "label": "x", "method": "x",
           "dataset": "digits", "budget": {"ipc": 1}, "accuracy": {"mean": 50.0, "n": 1},
           "summaries": [{"stored_bytes": None}]}
    head, _, line = summary_table([{"suite": "s", "rows": {"r": row}}], {})
    cells = dict(zip(head.strip("| ").split(" | "), line.strip("| ").split(" | ")))
    assert cells["stored bytes"] == "—"


def test_resume_of_a_row_that_never_started(tmp_path):
    """``--resume`` on a row without a run folder starts it (it used to write its progress log
    before creating the folder: FileNotFoundError)."""
    from datadistill.bench.accuracy import _distill_seed

    class Fake:  # the runner's two calls _distill_seed makes
        def checkpoint_iteration(self, sdir):
            return 0

        def distill_summary(self, row, real, seed, sdir, *, resume, on_iteration):
            on_iteration({"iteration": 1})
            return {"iterations": 1, "stored_bytes": 4}

    sdir = tmp_path / "runs" / "suite" / "row" / "s0"
    rec = _distill_seed(None, None, 0, sdir, True, Fake())
    assert rec["iterations"] == 1 and (sdir / "distilled.json").exists()
    assert [json.loads(x)["iteration"] for x in (sdir / "progress.jsonl").read_text().splitlines()] == [1]
    # and through the command: a fresh suite run with --resume
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "r.toml").write_text(
        '[[rows]]\nid = "random"\nmethod = "random"\ndataset = "digits"\nipc = 1\n'
        'protocol = "smoke"\nrun = {threads = 1}\n')
    assert main(["--bench-dir", str(tmp_path), "run", "r", "--resume"]) == 0
    assert json.loads((tmp_path / "results" / "r.json").read_text())["rows"]["random"]["status"] == "done"


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


@pytest.mark.parametrize("extra,match", [
    ('robust = {full = "published", lrs_weight = 2.0}', "lrs_weight"),
    ('robust = {rounds = 3}', "rounds"),
    ('robust = true\nprotocol = "nope"', "nope"),
    ('robust = true\nkind = "speed"', "accuracy rows"),
    ('byte_budget = -3', "byte_budget"),
])
def test_robust_and_byte_budget_keys_are_checked(tmp_path, extra, match):
    (tmp_path / "s.toml").write_text(f'[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "digits"\n'
                                     f'ipc = 1\n{extra}\n')
    with pytest.raises(SuiteError, match=match):
        load_suite(tmp_path / "s.toml")


def test_robust_needs_images_and_augmentation(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "random"\n'
                                     'dataset = "tabular-toy"\nipc = 1\nrobust = true\n')
    with pytest.raises(SuiteError, match="image"):
        load_suite(tmp_path / "s.toml")


def test_the_robust_suite_is_valid():
    """bench/suites/robust.toml (the Fashion-MNIST rows whose robust scores BENCHMARKS.md shows)
    parses and names known methods, presets and parameters."""
    path = Path(__file__).resolve().parents[1] / "bench" / "suites" / "robust.toml"
    suite = load_suite(path)
    assert suite.rows and all(r.robust is not None and r.dataset == "fashion-mnist"
                              for r in suite.rows)
    assert {"dm", "dsa", "mtt"} <= {r.method for r in suite.rows}
    assert "CPU-min" in suite.notes


def test_unknown_key_is_a_clear_error(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "dm"\ndataset = "digits"\nipcs = 1\n')
    with pytest.raises(SuiteError, match="ipcs"):
        load_suite(tmp_path / "s.toml")


def test_baseline_rows_take_a_storage_precision_and_nothing_else(tmp_path):
    """Fixed-bytes rows: a random subset stored at uint8 (4x the examples of float32 in the same
    bytes); any other ``set`` on a baseline is refused."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "r.toml").write_text(
        '[[rows]]\nid = "f32"\nmethod = "random"\ndataset = "digits"\nipc = 4\n'
        'protocol = "smoke"\nrun = {threads = 1}\n'
        '[[rows]]\nid = "u8"\nmethod = "random"\ndataset = "digits"\nipc = 4\n'
        'protocol = "smoke"\nrun = {threads = 1}\nset = {storage = "uint8"}\n')
    assert main(["--bench-dir", str(tmp_path), "run", "r"]) == 0
    rows = json.loads((tmp_path / "results" / "r.json").read_text())["rows"]
    b32, b8 = rows["f32"]["stored_bytes"], rows["u8"]["stored_bytes"]
    assert b8 < b32 / 3.5  # 64 pixels per digit: float32 -> uint8 (+ its 8-byte range)
    (tmp_path / "suites" / "bad.toml").write_text(
        '[[rows]]\nid = "b"\nmethod = "random"\ndataset = "digits"\nipc = 1\nset = {lr_data = 1}\n')
    with pytest.raises((SuiteError, ValueError), match="storage"):
        load_suite(tmp_path / "suites" / "bad.toml")


def test_a_benchmark_rows_run_folder_reads_as_a_report_run(bench, tmp_path):
    """``datadistill report bench/runs/<suite>/<row>/s0``: the row's own evaluation (accuracies
    and robust scores, as the results file records them) and its per-iteration CPU log."""
    from datadistill.report import build_report, load_run

    row = json.loads((bench / "results" / "tiny.json").read_text())["rows"]["dm-ipc2"]
    run = load_run(bench / "runs" / "tiny" / "dm-ipc2" / "s0")
    assert len(run.evaluations) == 1
    ev = run.evaluations[0]
    model = row["accuracy_model"]
    assert ev["results"][model]["accs"] == row["per_model"][model]["accs"]
    assert ev["protocol"]["name"] == "smoke" and ev["protocol"]["dsa"] is True
    lrs = ev["robust"]["models"][model]["lrs"]["mean"]
    assert lrs == pytest.approx(row["robust"]["models"][model]["lrs"]["mean"])
    cpu, how = run.cpu_seconds()
    assert how == "measured" and cpu == pytest.approx(row["seeds"][0]["distill_cpu_s"], rel=0.05)
    html = build_report([run])
    assert f"{lrs:.2f}" in html


def test_two_runs_of_one_suite_keep_each_others_rows(tmp_path):
    """Two shells running ``--only`` different rows of one suite each hold the file as they read
    it at their start; the row each writes must not erase the row the other wrote meanwhile."""
    from datadistill.bench import results as res

    path = tmp_path / "s.json"
    start = {"schema": SCHEMA, "suite": "s", "rows": {"old": {"id": "old", "status": "done"},
                                                      "gone": {"id": "gone", "status": "done"}}}
    res.save_results(path, start)
    a = json.loads(path.read_text())
    b = json.loads(path.read_text())
    a["rows"]["ra"] = {"id": "ra", "status": "done"}
    b["rows"]["rb"] = {"id": "rb", "status": "running"}
    keep = ["rb", "old", "ra"]
    res.save_rows(path, a, ["ra"], keep=keep)
    res.save_rows(path, b, ["rb"], keep=keep)
    rows = json.loads(path.read_text())["rows"]
    assert list(rows) == ["rb", "old", "ra"]  # the suite's order; "gone" is no longer declared
    assert rows["ra"]["status"] == "done" and rows["rb"]["status"] == "running"
    b["rows"]["rb"]["status"] = "done"
    res.save_rows(path, b, ["rb"], keep=keep)
    assert json.loads(path.read_text())["rows"]["ra"] == {"id": "ra", "status": "done"}
