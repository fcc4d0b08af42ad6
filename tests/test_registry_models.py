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
