import pytest
import torch
from torch.func import functional_call

from datadistill.data import DataInfo
from datadistill.models import MODELS, create_model, has_batchnorm, model_modality
from datadistill.registry import Registry, UnknownNameError

SHAPES = [(1, 28, 28), (3, 32, 32)]


def test_registry_unknown_name_lists_known():
    r = Registry("widget")
    r.register("a", lambda: 1)
    r.register("b_two", lambda x=0: x, x=2)
    assert r.create("B_TWO") == 2  # case-insensitive, bound kwargs
    with pytest.raises(UnknownNameError, match="unknown widget 'c'.*a, b_two"):
        r.get("c")
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", lambda: 3)
    assert r.names("b*") == ["b_two"]


@pytest.mark.parametrize("name", [n for n in MODELS.names() if model_modality(n) == "image"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_model(name, shape):
    info = DataInfo("t", "image", 7, shape)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    m = create_model(name, info, generator=g1)
    m2 = create_model(name, info, generator=g2)
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {k} not reproducible from the generator"
    x = torch.randn(4, *shape)
    m.eval()
    out = m(x)
    assert out.shape == (4, 7)
    emb = m.embed(x)
    assert emb.shape == (4, m.feature_dim)
    params = {k: v.detach() * 1.0 for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    assert torch.allclose(functional_call(m, {**params, **buffers}, (x,)), out, atol=1e-5)
    assert torch.isfinite(out).all()


def test_convnet_matches_the_field():
    info = DataInfo("f", "image", 10, (1, 28, 28))
    m = create_model("convnet", info)
    convs = [l for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert len(convs) == 3 and convs[0].padding == (3, 3) and convs[1].padding == (1, 1)
    assert all(c.out_channels == 128 for c in convs)
    assert m.feature_dim == 128 * 4 * 4  # 28 -> 32 -> 16 -> 8 -> 4
    norms = [l for l in m.features if isinstance(l, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(n.num_groups == n.num_channels == 128 for n in norms)
    assert not has_batchnorm(m) and has_batchnorm(create_model("convnet_bn", info))
    assert create_model("convnet_d4", DataInfo("c", "image", 10, (3, 32, 32))).feature_dim == 128 * 2 * 2
    assert create_model("convnet_w32", info).feature_dim == 32 * 16


def test_small_images_clear_error():
    with pytest.raises(ValueError, match="lenet needs images of at least"):
        create_model("lenet", DataInfo("d", "image", 10, (1, 8, 8)))


@pytest.mark.parametrize("pad", [1, 3])
def test_gray_stem_is_the_same_convolution(pad):
    """The ConvNet's 1-channel first layer (im2col + 1x1) computes nn.Conv2d exactly: output,
    first- and second-order gradients (DC differentiates the weight gradient w.r.t. the input)."""
    from datadistill.models.layers import GrayStemConv2d

    g = torch.Generator().manual_seed(0)
    ref = torch.nn.Conv2d(1, 8, 3, padding=pad).double()
    stem = GrayStemConv2d(1, 8, 3, padding=pad).double()
    stem.load_state_dict(ref.state_dict())
    x = torch.randn(4, 1, 11, 9, generator=g, dtype=torch.float64, requires_grad=True)
    outs = []
    for m in (ref, stem):
        y = m(x)
        gw = torch.autograd.grad((y.sin()).sum(), m.weight, create_graph=True)[0]
        gx = torch.autograd.grad((gw ** 2).sum(), x)[0]  # second order, through the weight grad
        outs.append((y, gw, gx))
    for a, b in zip(*outs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="1-input-channel"):
        GrayStemConv2d(3, 8, 3, padding=1)
    info = DataInfo(name="g", modality="image", num_classes=3, shape=(1, 12, 12))
    net = create_model("convnet", info)
    assert isinstance(net.features[0], GrayStemConv2d)
    plain = torch.nn.Conv2d(1, 128, 3, padding=3)
    plain.load_state_dict(net.features[0].state_dict())
    z = torch.randn(2, 1, 12, 12, generator=g)
    torch.testing.assert_close(net.features[0](z), plain(z), rtol=1e-5, atol=1e-5)
