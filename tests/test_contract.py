"""Registry-wide contract: every registered method distills its test dataset with its ``tiny``
preset, the summary changes, stays finite, saves, loads identically and evaluates."""
import math
import shutil

import pytest
import torch

from datadistill.data import load_dataset
from datadistill.distillers import DISTILLERS, create_distiller
from datadistill.evaluation import evaluate
from datadistill.synsets import load_summary

#: test dataset name -> folder under ../shared/data to copy (PyG writes processed/ next to raw/)
SHARED_DATASETS = {
    "cora": "planetoid", "citeseer": "planetoid",
    "mutag": "graphs/TU", "proteins": "graphs/TU", "nci1": "graphs/TU",
    "movietweetings": "recsys/movietweetings",
}


def load_test_dataset(name, tmp_path_factory, shared_data_dir=None):
    if name in SHARED_DATASETS:
        from conftest import SHARED_DATA
        src = SHARED_DATA / SHARED_DATASETS[name]
        if not src.is_dir():
            pytest.skip(f"{src} not available")
        dst = tmp_path_factory.mktemp(name) / "data"
        shutil.copytree(src, dst)
        return load_dataset(name, data_dir=dst)
    return load_dataset(name)


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_method_contract(method, tmp_path, tmp_path_factory):
    cls = DISTILLERS.get(method)
    assert "tiny" in cls.presets, f"{method} needs a 'tiny' preset for the contract test"
    # the class's own docstring (a dataclass without one gets a generated "Name(field=...)"
    # signature as __doc__, which says nothing about the method)
    doc = cls.__dict__.get("__doc__") or ""
    assert len(doc) > 80 and not doc.startswith(cls.__name__ + "("), \
        f"{method} needs a class docstring with its paper and objective"
    real = load_test_dataset(cls.test_dataset, tmp_path_factory)
    d = create_distiller(method, "tiny")
    syn = d.init_synset(real, **cls.test_budget)
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    seen = []
    d.distill(real, syn, [seen.append], workdir=tmp_path / "run")
    assert len(seen) == d.iterations
    assert all(math.isfinite(e["loss"]) for e in seen if "loss" in e)
    assert syn.check_finite()
    changed = any(not torch.equal(before[k], v) for k, v in syn.state_dict().items())
    assert changed, f"{method} did not change its summary"
    assert syn.meta["method"] == method and syn.meta["iterations"] == d.iterations
    # save -> load round trip, bit for bit
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    for k, v in syn.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert back.meta["params"] == d.params()
    assert back.stored_bytes() == syn.stored_bytes() > 0
    rep = evaluate(back, real, protocol="smoke")
    r = next(iter(rep.results.values()))
    assert 0.0 <= r["mean"] <= 100.0 and len(r["accs"]) == 1
