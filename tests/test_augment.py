import pytest
import torch

from datadistill.augment import DSA, OPS
from datadistill.data import DataInfo


@pytest.mark.parametrize("op", OPS)
def test_siamese_same_params_same_transform(op):
    g = torch.Generator().manual_seed(0)
    a = DSA(op)
    x = torch.randn(6, 3, 16, 16)
    p = a.sample(None, g, (16, 16))
    full = a.apply(x, p)
    # a shared parameter set transforms every example identically, whatever the batch
    assert torch.allclose(a.apply(x[:2], p), full[:2], atol=1e-6)
    assert torch.allclose(a.apply(x[4:], p), full[4:], atol=1e-6)
    # per-example parameters differ between examples
    q = a.sample(6, g, (16, 16))
    same = torch.stack([x[0]] * 6)
    outs = a.apply(same, q)
    if op != "flip":  # flip is binary: 6 equal draws are possible
        assert not all(torch.allclose(outs[0], outs[i]) for i in range(1, 6))


def test_differentiable_and_nontrivial():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 12, 12, requires_grad=True)
    a = DSA(mode="multiple")
    y = a.apply(x, a.sample(None, g, (12, 12)))
    y.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not torch.allclose(y, x)


def test_single_mode_picks_one_transform():
    g = torch.Generator().manual_seed(0)
    a = DSA()
    seen = {a.sample(None, g).ops for _ in range(200)}
    assert all(len(s) == 1 for s in seen) and len(seen) == 6


def test_no_flip_for_digits_and_errors():
    assert "flip" not in DSA.for_data(DataInfo("digits", "image", 10, (1, 8, 8), flip=False)).ops
    assert "flip" in DSA.for_data(DataInfo("c", "image", 10, (3, 32, 32))).ops
    with pytest.raises(ValueError, match="unknown DSA transforms"):
        DSA("color_warp")
    a = DSA("crop")
    p = a.sample(3, torch.Generator(), (8, 8))
    with pytest.raises(ValueError, match="sampled for 3 examples"):
        a.apply(torch.randn(4, 1, 8, 8), p)


def test_crop_output_flattens():
    # the reference code crashes here with .view on channels_last strides; reshape must work
    g = torch.Generator().manual_seed(0)
    a = DSA("crop")
    y = a.apply(torch.randn(5, 1, 28, 28), a.sample(None, g, (28, 28)))
    assert y.flatten(1).shape == (5, 784)


def test_idc_mode_color_one_of_rest_cutout_every_call():
    """IDC's DiffAug (mode ``idc``): flip and color on every call, then one transform picked
    from the rest, then cutout on every call — for shared and per-example parameters alike."""
    g = torch.Generator().manual_seed(0)
    a = DSA("color_crop_cutout", mode="idc")
    assert {a.sample(None, g, (8, 8)).ops for _ in range(20)} == {("color", "crop", "cutout")}
    assert a.sample(4, g, (8, 8)).ops == ("color", "crop", "cutout")
    full = DSA(mode="idc")
    seen = {full.sample(None, g).ops for _ in range(200)}
    assert seen == {("flip", "color", op, "cutout") for op in ("crop", "scale", "rotate")}
    assert DSA("color_crop", mode="idc").sample(None, g).ops == ("color", "crop")
    assert DSA("cutout", mode="idc").sample(None, g).ops == ("cutout",)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    a.apply(x, a.sample(None, g, (8, 8))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="mode"):
        DSA(mode="both")
