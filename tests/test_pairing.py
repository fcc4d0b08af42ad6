"""Any objective with any summary parametrization (survey §2.5): ``synset`` / ``synset_args``
on the image methods, refusals where a method needs stored images, metadata and resume."""
import json
import math

import pytest
import torch

from datadistill.cli import main
from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError
from datadistill.synsets import load_summary
from datadistill.synsets.multiformation import MultiFormationSet
from datadistill.synsets.pixels import PixelSet

def _run(method, digits, kind, tmp_path=None, **kw):
    d = create_distiller(method, "tiny", synset=kind, **kw)
    syn = d.init_synset(digits, ipc=2)
    before = {k: v.clone() for k, v in syn.state_dict().items()}
    seen = []
    d.distill(digits, syn, [seen.append], workdir=tmp_path)
    assert all(math.isfinite(e["loss"]) for e in seen) and syn.check_finite()
    assert not torch.equal(before[_data_key(syn)], syn.state_dict()[_data_key(syn)]), \
        f"{method} x {kind} did not change the stored data"
    return d, syn


def _data_key(syn):
    return "x"


#: every method's own kind is in the registry-wide contract test; here: the other pairings
PAIRS = [("dm", "pixels"), ("dm", "multiformation"), ("dc", "multiformation"),
         ("dsa", "multiformation"), ("idc", "pixels")]


@pytest.mark.parametrize("method,kind", PAIRS)
def test_objective_x_parametrization(method, kind, digits):
    d, syn = _run(method, digits, kind)
    assert syn.kind == kind and d.summary_kind() == kind
    if kind == "multiformation":
        assert isinstance(syn, MultiFormationSet) and syn.factor == 2
        assert syn.num_examples == 4 * 20  # factor**2 examples per stored image
    else:
        assert type(syn) is PixelSet and syn.num_examples == 20


def test_mtt_with_multiformation(digits):
    d, syn = _run("mtt", digits, "multiformation")
    assert syn.kind == "multiformation" and syn.lr is not None and syn.num_examples == 80


def test_kind_options_and_metadata(digits, tmp_path):
    d, syn = _run("dm", digits, "multiformation", tmp_path / "r", synset_args={"factor": 3})
    assert syn.factor == 3 and syn.num_examples == 9 * 20
    meta = json.loads((tmp_path / "r" / "summary" / "summary.json").read_text())
    assert meta["kind"] == "multiformation" and meta["config"] == {"ipc": 2, "factor": 3}
    assert meta["params"]["synset"] == "multiformation"
    assert meta["params"]["synset_args"] == {"factor": 3}
    back = load_summary(tmp_path / "r" / "summary")
    assert torch.equal(back.materialize()[0], syn.materialize()[0])
    # resume with another kind or other options: refused, naming the change
    for kw in ({"synset": "pixels"}, {"synset": "multiformation", "synset_args": {"factor": 2}}):
        d2 = create_distiller("dm", "tiny", iterations=4, **kw)
        with pytest.raises(ConfigError, match="synset"):
            d2.distill(digits, d2.init_synset(digits, ipc=2), workdir=tmp_path / "r", resume=True)


def test_default_is_the_methods_own_kind(digits):
    assert create_distiller("dm", "tiny").init_synset(digits, ipc=1).kind == "pixels"
    idc = create_distiller("idc", "tiny", factor=3)
    syn = idc.init_synset(digits, ipc=1)
    assert syn.kind == "multiformation" and syn.factor == 3  # IDC's own factor feeds its kind
    assert idc.params()["synset"] is None


def test_bad_kinds_and_options(digits):
    with pytest.raises(ConfigError, match="unknown summary kind 'voxels'"):
        create_distiller("dm", "tiny", synset="voxels")
    with pytest.raises(ConfigError, match="has no option"):
        create_distiller("dm", "tiny", synset="pixels", synset_args={"factor": 2}).init_synset(
            digits, ipc=1)
    with pytest.raises(ConfigError, match="at least 20 pixels"):  # a factor beyond the image
        create_distiller("dm", "tiny", synset="multiformation",
                         synset_args={"factor": 20}).init_synset(digits, ipc=1)
    with pytest.raises(ConfigError, match="use factor=3"):
        create_distiller("idc", "tiny", synset_args={"factor": 3})
    with pytest.raises(ConfigError, match="must be a dict"):
        create_distiller("dm", "tiny", synset_args=[2])


@pytest.mark.parametrize("method", ["kip", "rfad", "frepo", "tesla"])
def test_methods_that_need_stored_images_refuse_other_kinds(method, digits):
    with pytest.raises(ConfigError, match="cannot optimize a 'multiformation' summary"):
        create_distiller(method, "tiny", synset="multiformation")
    # a summary made elsewhere is refused before anything runs
    d = create_distiller(method, "tiny")
    mf = create_distiller("dm", "tiny", synset="multiformation").init_synset(digits, ipc=1)
    with pytest.raises(ConfigError, match="cannot optimize"):
        d.distill(digits, mf)


def test_idc_refuses_a_kind_without_stored_images():
    from datadistill.synsets import SYNSETS
    others = [k for k in SYNSETS.names() if k not in ("pixels", "multiformation")]
    with pytest.raises(ConfigError, match="idc cannot optimize"):
        create_distiller("idc", "tiny", synset=others[0])


def test_cli_set_synset_and_option(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--preset", "tiny",
            "--iterations", "2", "--quiet", "--device", "cpu", "--out", str(out),
            "--set", "synset=multiformation", "--set", "synset.factor=3", "--set", "storage=uint8"]
    assert main(argv) == 0
    syn = load_summary(out / "summary")
    assert syn.kind == "multiformation" and syn.factor == 3 and syn.storage.name == "uint8"
    assert syn.meta["params"]["synset_args"] == {"factor": 3}
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    assert "uint8" in capsys.readouterr().out
    # the JSON spelling is the same setting
    assert main(argv[:-6] + ["--out", str(tmp_path / "b"), "--set", "synset=multiformation",
                             "--set", 'synset_args={"factor": 3}', "--set", "storage=uint8"]) == 0
    assert load_summary(tmp_path / "b" / "summary").meta["params"]["synset_args"] == {"factor": 3}


@pytest.mark.parametrize("method", ["dm", "dc"])
def test_factorized_summary_decoders_get_their_own_optimizer(method, digits):
    """A pixel step size (DM's lr 1) on decoder weights diverges: the base optimizer gives a
    factorized summary's codes SGD at lr_data and its decoders Adam at DECODER_LR."""
    from datadistill.distillers.base import DECODER_LR
    from datadistill.optim import JointOptimizer

    d = create_distiller(method, "tiny", synset="kfs")
    syn = d.init_synset(digits, ipc=2)
    opt = d.make_optimizer(syn)
    assert isinstance(opt, JointOptimizer)
    sgd, adam = opt.parts["codes"], opt.parts["decoders"]
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["lr"] == d.lr_data
    assert {id(p) for p in sgd.param_groups[0]["params"]} == {id(p) for p in syn.code_parameters()}
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == DECODER_LR
    assert {id(p) for p in adam.param_groups[0]["params"]} == \
        {id(p) for p in syn.decoder_parameters()}
    dec0 = [p.detach().clone() for p in syn.decoder_parameters()]
    d.distill(digits, syn)
    # Adam moves each weight by at most ~lr per step: the decoders change, but stay close
    moved = max(float((p - q).abs().max()) for p, q in zip(syn.decoder_parameters(), dec0))
    assert 0 < moved <= 1.5 * DECODER_LR * d.iterations * 10
