"""Storage precision as a budget lever (``synsets/storage.py``): quantization-aware summaries,
what is saved is what was materialized, bytes counted at the stored precision."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from datadistill.distillers import create_distiller
from datadistill.errors import ConfigError
from datadistill.synsets import SYNSETS, init_from, load_summary
from datadistill.synsets.factorized import FactorizedSet
from datadistill.synsets.pixels import PixelSet
from datadistill.synsets.storage import STORAGES, Storage, smallest_int_dtype

LOW = [s for s in STORAGES if s != "float32"]


class _LinearDecoded(FactorizedSet):
    """A toy factorized summary (codes -> two linear decoders) for the generic-storage tests."""

    kind = "_test-linear-decoded"

    def __init__(self, info, *, ipc, code_dim: int = 6, label_format="hard", lr=None):
        self.code_dim = code_dim
        super().__init__(info, ipc=ipc, code_shape=(code_dim,), label_format=label_format, lr=lr)

    def build_decoders(self):
        n = 1
        for s in self.info.shape:
            n *= s
        self.decoders = nn.ModuleList(nn.Linear(self.code_dim, n) for _ in range(2))

    def decode(self, j, codes):
        return self.decoders[j](codes).view(codes.shape[0], *self.info.shape)

    def config(self):
        return {**super().config(), "code_dim": self.code_dim}

    @torch.no_grad()
    def init_data(self, real, init, generator):
        self.codes.normal_(generator=generator)


@pytest.fixture(scope="module", autouse=True)
def _toy_kind():
    if _LinearDecoded.kind not in SYNSETS:
        SYNSETS.register(_LinearDecoded.kind)(_LinearDecoded)
    yield
    SYNSETS._items.pop(_LinearDecoded.kind, None)


def _summary(digits, kind, storage, seed=0):
    g = torch.Generator().manual_seed(seed)
    syn = init_from(digits, 2, kind=kind, generator=g, label_format="soft")
    with torch.no_grad():  # latent values off any grid
        for p in syn.data_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return syn.set_storage(storage)


def _file_bytes(folder):
    """Bytes of every tensor written for the summary (preprocessing excluded)."""
    t = load_file(str(folder / "summary.safetensors"))
    return sum(v.numel() * v.element_size() for k, v in t.items() if not k.startswith("pre."))


def test_parse_and_errors():
    assert Storage.parse("bf16").name == "bfloat16" and Storage.parse(None).exact
    assert Storage.parse("UINT8").bytes_per_number() == 1
    with pytest.raises(ValueError, match="unknown storage 'int4'"):
        Storage.parse("int4")
    with pytest.raises(ConfigError, match="unknown storage"):
        create_distiller("dm", "tiny", storage="fp8")
    assert create_distiller("dm", "tiny", storage="fp16").storage == "float16"


@pytest.mark.parametrize("kind", ["pixels", "multiformation", "_test-linear-decoded"])
@pytest.mark.parametrize("storage", STORAGES)
def test_materialize_is_what_is_saved(digits, tmp_path, kind, storage):
    syn = _summary(digits, kind, storage)
    x, y = syn.materialize()
    syn.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert meta["storage"] == storage and meta["format_version"] == (1 if storage == "float32" else 2)
    back = load_summary(tmp_path / "s")
    assert back.storage.name == storage and back.kind == kind
    x2, y2 = back.materialize()
    assert torch.equal(x, x2) and torch.equal(y, y2)  # bit for bit
    x3, _ = back.materialize()  # decoding the stored values again changes nothing
    assert torch.equal(x2, x3)
    # the bytes counted are the bytes written
    assert syn.stored_bytes() == back.stored_bytes() == _file_bytes(tmp_path / "s") \
        == meta["stored_bytes"]
    written = load_file(str(tmp_path / "s" / "summary.safetensors"))
    data_keys = [k for k in syn.state_dict() if k not in ("labels", "lr")]
    want = Storage.parse(storage).dtype
    assert all(written[k].dtype == want for k in data_keys)
    assert written["labels"].dtype == torch.uint8  # 10 classes: one byte a label


@pytest.mark.parametrize("storage", LOW)
def test_quantization_aware_with_straight_through_gradient(digits, storage):
    syn = _summary(digits, "pixels", storage)
    x, y = syn.materialize()
    assert not torch.equal(x, syn.x)  # the stored values, not the latent float32 ones
    st = Storage.parse(storage)
    assert torch.equal(x, st.quantize(syn.x)) and torch.equal(st.quantize(x), x)  # idempotent
    (x * 3).sum().backward()
    assert torch.equal(syn.x.grad, torch.full_like(syn.x, 3.0))  # straight through
    if storage.startswith("uint8"):
        rows = x.detach().flatten(1)
        if storage == "uint8":
            assert rows.unique().numel() <= 256
        else:
            assert max(r.unique().numel() for r in rows) <= 256
            assert rows.unique().numel() > 256  # ranges per example
        assert x.min() == syn.x.min() and x.max() == syn.x.max()  # the range is kept exactly
    # the latent parameter is untouched: the optimizer steps float32 values
    assert syn.x.dtype == torch.float32 and isinstance(syn.x, nn.Parameter)


def test_factorized_decoders_and_codes_are_stored_low(digits):
    syn = _summary(digits, "_test-linear-decoded", "uint8-channel")
    names = syn._stored_names()
    assert {"codes", "y", "decoders.0.weight", "decoders.0.bias", "decoders.1.weight"} <= names
    assert "labels" not in names and "lr" not in names
    n_numbers = sum(syn.state_dict()[k].numel() for k in names)
    n_ranges = sum(Storage.parse("uint8-channel").num_ranges(syn.state_dict()[k]) for k in names)
    assert syn.stored_bytes() == n_numbers + 8 * n_ranges + syn.labels.numel()
    with syn.as_stored():  # direct access inside the context reads the stored values
        w = syn.decoders[0].weight
        assert not isinstance(w, nn.Parameter) and w.unique().numel() <= 256 * w.shape[0]
    assert isinstance(syn.decoders[0].weight, nn.Parameter)  # restored afterwards


def test_same_bytes_four_times_the_examples(digits):
    """The claim: at (almost exactly) the bytes of float32 pixels, uint8 holds 4x the examples
    and float16 2x; what differs is the labels of the extra examples and the 8-byte range."""
    info = dataclasses.replace(digits.info, shape=(1, 28, 28))  # Fashion-MNIST-sized images
    f32 = PixelSet(info, ipc=10)
    u8 = PixelSet(info, ipc=40).set_storage("uint8")
    f16 = PixelSet(info, ipc=20).set_storage("float16")
    assert u8.num_examples == 4 * f32.num_examples and f16.num_examples == 2 * f32.num_examples
    assert f32.stored_bytes() == 100 * 784 * 4 + 100
    assert u8.stored_bytes() == 400 * 784 + 8 + 400
    assert f16.stored_bytes() == 200 * 784 * 2 + 200
    for s in (u8, f16):
        assert abs(s.stored_bytes() / f32.stored_bytes() - 1) < 0.002


def test_integer_tensors_at_their_smallest_dtype(digits, tmp_path):
    assert smallest_int_dtype(torch.tensor([0, 255])) == torch.uint8
    assert smallest_int_dtype(torch.tensor([0, 299])) == torch.int16
    assert smallest_int_dtype(torch.tensor([-1, 5])) == torch.int8
    info = dataclasses.replace(digits.info, num_classes=300, class_names=())
    syn = PixelSet(info, ipc=1)
    assert syn.stored_bytes() == 300 * 64 * 4 + 300 * 2
    syn.save(tmp_path / "s")
    assert load_file(str(tmp_path / "s" / "summary.safetensors"))["labels"].dtype == torch.int16
    back = load_summary(tmp_path / "s")
    assert back.labels.dtype == torch.int64 and torch.equal(back.labels, syn.labels)


def test_older_files_with_int64_labels_still_load(digits, tmp_path):
    from safetensors.torch import save_file
    syn = init_from(digits, 1, generator=torch.Generator().manual_seed(0))
    syn.save(tmp_path / "s")
    f = tmp_path / "s" / "summary.safetensors"
    t = load_file(str(f))
    t["labels"] = t["labels"].long()  # as written before storage precision existed
    save_file(t, str(f))
    meta = json.loads((tmp_path / "s" / "summary.json").read_text())
    meta.pop("storage")
    (tmp_path / "s" / "summary.json").write_text(json.dumps(meta))
    back = load_summary(tmp_path / "s")
    assert back.storage.exact and torch.equal(back.x, syn.x) and torch.equal(back.labels, syn.labels)


def test_summary_with_own_byte_count_refuses_low_precision(digits):
    class OwnBytes(PixelSet):
        kind = "_own-bytes"

        def stored_bytes(self):
            return 1

    s = OwnBytes(digits.info, ipc=1)
    s.set_storage("float32")
    with pytest.raises(ValueError, match="float32 only"):
        s.set_storage("uint8")


def test_distill_uint8_saves_what_it_optimized(digits, tmp_path):
    d = create_distiller("dm", "tiny", storage="uint8")
    syn = d.init_synset(digits, ipc=2)
    assert syn.storage.name == "uint8"
    d.distill(digits, syn, workdir=tmp_path / "run")
    x, _ = syn.materialize()
    back = load_summary(tmp_path / "run" / "summary")
    assert back.meta["params"]["storage"] == "uint8" and back.storage.name == "uint8"
    assert torch.equal(back.materialize()[0], x)
    assert back.stored_bytes() == 20 * 64 + 8 + 20
    # the run's checkpoint keeps the float32 latent values, so a resume continues exactly
    with pytest.raises(ConfigError, match="storage: 'uint8' -> 'float16'"):
        d2 = create_distiller("dm", "tiny", storage="float16", iterations=4)
        d2.distill(digits, d2.init_synset(digits, ipc=2), workdir=tmp_path / "run", resume=True)


def test_resume_matches_uninterrupted_with_storage(digits, tmp_path):
    full = create_distiller("dm", "tiny", storage="uint8-channel", iterations=4)
    s_full = full.init_synset(digits, ipc=2)
    full.distill(digits, s_full)
    part = create_distiller("dm", "tiny", storage="uint8-channel", iterations=2)
    s = part.init_synset(digits, ipc=2)
    part.distill(digits, s, workdir=tmp_path / "r")
    more = create_distiller("dm", "tiny", storage="uint8-channel", iterations=4)
    s2 = more.init_synset(digits, ipc=2)
    more.distill(digits, s2, workdir=tmp_path / "r", resume=True)
    assert torch.equal(s2.x, s_full.x) and torch.equal(s2.materialize()[0], s_full.materialize()[0])


def test_checkpoint_from_before_the_new_parameters_resumes(digits, tmp_path):
    d = create_distiller("dm", "tiny", iterations=2)
    d.distill(digits, d.init_synset(digits, ipc=2), workdir=tmp_path / "r")
    ck = tmp_path / "r" / "checkpoint.json"
    state = json.loads(ck.read_text())
    for k in ("storage", "synset", "synset_args"):
        state["state"]["params"].pop(k)
    ck.write_text(json.dumps(state))
    d2 = create_distiller("dm", "tiny", iterations=3)
    d2.distill(digits, d2.init_synset(digits, ipc=2), workdir=tmp_path / "r", resume=True)
    d3 = create_distiller("dm", "tiny", iterations=4, storage="uint8")  # not the default: refused
    with pytest.raises(ConfigError, match="storage"):
        d3.distill(digits, d3.init_synset(digits, ipc=2), workdir=tmp_path / "r", resume=True)
