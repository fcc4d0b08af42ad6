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


def test_multiformation_pads_with_half_in_pixels(digits):
    """A factor that does not divide the size pads the stored image at the bottom/right with 0.5
    in [0, 1] pixels, as IDC's reference (``(0.5 - mean) / std`` in the normalized space); the
    library padded with 0 (the mean) before the parity fix."""
    from datadistill.synsets.multiformation import MultiFormationSet, decode_zoom, pad_value_for

    info = digits.info  # 8x8: factor 3 pads 8 -> 9
    syn = MultiFormationSet(info, ipc=1, factor=3)
    pv = (0.5 - info.mean[0]) / info.std[0]
    assert float(syn.pad_value[0]) == pytest.approx(pv)
    x = torch.full((1, 1, 8, 8), 2.0)
    dec = decode_zoom(x, 3, pad_value_for(info))
    # the bottom-right cell is 2x2 of data (rows/cols 6-7) and a row/column of padding
    small = torch.tensor([[2.0, 2.0, pv], [2.0, 2.0, pv], [pv, pv, pv]]).view(1, 1, 3, 3)
    want = torch.nn.functional.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(dec[8], want[0], atol=1e-6)
    assert torch.equal(dec[0], torch.full((1, 8, 8), 2.0))  # interior cells: no padding
    assert torch.allclose(decode_zoom(x, 3)[8].min(), torch.tensor(0.0), atol=1e-6)  # default 0
    with torch.no_grad():
        syn.x.fill_(2.0)
    assert torch.allclose(syn.materialize()[0][:9], dec, atol=1e-6)  # stored image 0's cells
    assert torch.equal(decode_zoom(x, 2, pad_value_for(info)), decode_zoom(x, 2))  # divisible
