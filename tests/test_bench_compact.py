"""A suite row's ``compact = {...}``: the row's summary (its own or the one ``from_summary``
names) converted by ``datadistill.compact.compact`` before it is evaluated and its bytes counted
(issue 17, "bytes for every modality": graph and recommender summaries at equal bytes)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from datadistill.bench.__main__ import main
from datadistill.bench.suites import SuiteError, load_suite
from datadistill.synsets import load_summary

pytest.importorskip("torch_geometric")


@pytest.mark.parametrize("extra,match", [
    ('compact = {topk = 5, bits = 4}', r"unknown compact option\(s\) \['bits'\]"),
    ('compact = {}', "a table of compact options"),
    ('compact = "uint8"', "a table of compact options"),
    ('compact = {dtype = "uint8"}\nkind = "speed"', "accuracy row"),
])
def test_compact_keys_are_checked(tmp_path, extra, match):
    (tmp_path / "s.toml").write_text(f'[[rows]]\nid = "r"\nmethod = "random"\ndataset = "cora"\n'
                                     f'ratio = 0.01\n{extra}\n')
    with pytest.raises(SuiteError, match=match):
        load_suite(tmp_path / "s.toml", check=False)


def test_an_unknown_compact_dtype_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "s.toml").write_text('[[rows]]\nid = "r"\nmethod = "random"\ndataset = "digits"\n'
                                     'ipc = 1\ncompact = {dtype = "int4"}\n')
    with pytest.raises(Exception, match="int4"):
        load_suite(tmp_path / "s.toml")


SUITE = """
[defaults]
dataset = "cora"
data_dir = "{data}"
protocol = "smoke"
models = ["gcn"]
num_models = 1
run = {{threads = 1}}

[[rows]]
id = "f32"
method = "random"
ratio = 0.02

[[rows]]
id = "u8"
method = "random"
ratio = 0.02
compact = {{dtype = "uint8", edge_dtype = "uint8"}}
byte_budget = 60000

[[rows]]
id = "again-f16"
method = "random"
ratio = 0.02
from_summary = "g/f32"
compact = {{dtype = "float16", edge_dtype = "binary"}}

[[rows]]
id = "images"
method = "random"
dataset = "digits"
data_dir = ""
ipc = 1
compact = {{dtype = "uint8"}}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("bench") / "bench"
    data = root.parent / "planetoid"
    shutil.copytree(shared_data / "planetoid", data)
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "g.toml").write_text(SUITE.format(data=data))
    rc = main(["--bench-dir", str(root), "run", "g"])
    return root, rc


def _rows(root):
    return json.loads((root / "results" / "g.json").read_text())["rows"]


def test_a_compact_row_evaluates_and_counts_the_converted_summary(ran):
    root, _ = ran
    rows = _rows(root)
    f32, u8 = rows["f32"], rows["u8"]
    assert f32["status"] == u8["status"] == "done"
    kept = load_summary(root / "runs" / "g" / "u8" / "s0" / "summary")
    assert kept.kind == "compact-graph" and kept.stored_bytes() == u8["stored_bytes"]
    assert u8["compacted_from"] == f32["stored_bytes"] and "compacted_from" not in f32
    assert u8["stored_bytes"] < f32["stored_bytes"] / 3  # uint8 features: a quarter, plus ranges
    # the same random nodes (seed 0); Cora's binary bag-of-words survives uint8 exactly
    src = load_summary(root / "runs" / "g" / "f32" / "s0" / "summary")
    torch.testing.assert_close(kept.materialize()[0], src.materialize()[0], rtol=0, atol=0)


def test_from_summary_with_compact_converts_the_named_summary(ran):
    root, _ = ran
    rows = _rows(root)
    rec = rows["again-f16"]
    assert rec["status"] == "done" and rec["compacted_from"] == rows["f32"]["stored_bytes"]
    kept = load_summary(root / "runs" / "g" / "again-f16" / "s0" / "summary")
    assert kept.kind == "compact-graph" and kept.meta["compact"]["dtype"] == "float16"
    assert rec["summaries"][0]["sha256"] != rows["f32"]["summaries"][0]["sha256"]


def test_a_summary_without_a_compact_form_fails_its_row_by_name(ran):
    root, rc = ran
    assert rc != 0  # the image row failed; the others ran
    rec = _rows(root)["images"]
    assert rec["status"] == "failed" and "no compact storage" in json.dumps(rec)


def test_the_fixed_bytes_table_counts_the_compact_bytes(ran, tmp_path):
    root, _ = ran
    out = tmp_path / "B.md"
    assert main(["--bench-dir", str(root), "report", "--out", str(out)]) == 0
    text = out.read_text()
    assert f"{_rows(root)['u8']['stored_bytes']:,}" in text
