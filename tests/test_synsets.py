import json

import pytest
import torch

from datadistill.synsets import IPCError, SummaryFormatError, init_from, load_summary
from datadistill.synsets.pixels import PixelSet


def test_real_init_uses_training_images(digits):
    syn = init_from(digits, 3, generator=torch.Generator().manual_seed(0))
    assert syn.x.shape == (30, 1, 8, 8) and syn.ipc == 3
    train = {tuple(r.tolist()) for r in digits.train.x.flatten(1)}
    for i, row in enumerate(syn.x.detach().flatten(1)):
        assert tuple(row.tolist()) in train
        c = int(syn.class_ids[i])
        assert any(torch.equal(row, r) for r in digits.train.x[digits.class_indices(c)].flatten(1))
    noise = init_from(digits, 3, init="noise", generator=torch.Generator().manual_seed(0))
    assert abs(float(noise.x.detach().std()) - 1) < 0.2


def test_ipc_larger_than_a_class(digits):
    with pytest.raises(IPCError, match="larger than these classes"):
        init_from(digits, 500, generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown init"):
        init_from(digits, 2, init="zeros", generator=torch.Generator())


def test_save_load_roundtrip_soft_labels_lr(digits, tmp_path):
    syn = init_from(digits, 2, generator=torch.Generator().manual_seed(0), label_format="soft", lr=0.02)
    with torch.no_grad():
        syn.y.add_(torch.randn_like(syn.y))
    syn.meta.update({"method": "test", "params": {"a": 1}, "seed": 5})
    syn.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert meta["label_format"] == "soft" and abs(meta["lr"] - 0.02) < 1e-7
    assert meta["stored_bytes"] == syn.stored_bytes() and meta["library_version"]
    assert meta["info"]["mean"] == list(digits.info.mean)
    back = load_summary(tmp_path / "s")
    assert isinstance(back, PixelSet) and back.label_format == "soft"
    assert torch.equal(back.x, syn.x) and torch.equal(back.y, syn.y)
    assert abs(float(back.lr) - 0.02) < 1e-7 and back.meta["params"] == {"a": 1}
    x, y = back.materialize()
    assert y.shape == (20, 10)


def test_zca_summary_carries_transform(tmp_path):
    from datadistill.data import load_dataset
    z = load_dataset("digits", zca=True)
    syn = init_from(z, 1, generator=torch.Generator())
    syn.save(tmp_path / "z")
    back = load_summary(tmp_path / "z")
    assert back.info.zca and torch.equal(back.preprocess["zca_matrix"], z.zca.matrix)
    assert back.stored_bytes() == syn.stored_bytes() < z.zca.matrix.numel() * 4  # not counted


def test_corrupted_and_incompatible_files(digits, tmp_path):
    syn = init_from(digits, 1, generator=torch.Generator())
    p = syn.save(tmp_path / "s")
    with pytest.raises(SummaryFormatError, match="not a summary folder"):
        load_summary(tmp_path / "nothing")
    (p / "summary.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SummaryFormatError, match="missing or corrupted"):
        load_summary(p)
    syn.save(p)
    meta = json.loads((p / "summary.json").read_text())
    (p / "summary.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(SummaryFormatError, match="format 99 is not supported"):
        load_summary(p)
    (p / "summary.json").write_text(json.dumps({**meta, "config": {"ipc": 3}}))
    with pytest.raises(SummaryFormatError, match="incompatible"):
        load_summary(p)
    (p / "summary.json").write_text("{not json")
    with pytest.raises(SummaryFormatError, match="corrupted"):
        load_summary(p)
