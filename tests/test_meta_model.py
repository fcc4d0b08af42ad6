"""Meta-model matching family: kernels (closed form vs finite width), KRR evaluation, and the
behaviour of DD, KIP, RFAD and FRePO beyond the registry-wide contract."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from datadistill.distillers import ConfigError, create_distiller
from datadistill.kernel_eval import KERNELS, evaluate_krr, make_kernel
from datadistill.kernels import fc_kernels
from datadistill.kernels_conv import EmpiricalNTK, RandomFeatureNNGP, conv_kernels


class NTKNet(nn.Module):
    """A finite ReLU network in the NTK parametrization (weights N(0, 1), scaled in forward):
    ``conv=False``: FC with ``depth`` hidden layers; ``conv=True``: 3x3 convs + flatten readout."""

    def __init__(self, in_shape, width, depth, *, conv, first_padding=1, w_var=2.0, b_var=0.0):
        super().__init__()
        self.conv, self.w_var, self.b_var, self.pads = conv, w_var, b_var, []
        self.ws, self.bs = nn.ParameterList(), nn.ParameterList()
        c, h = in_shape[0], in_shape[-1]
        fan = math.prod(in_shape)
        for d in range(depth):
            if conv:
                pad = first_padding if d == 0 else 1
                self.ws.append(nn.Parameter(torch.randn(width, c, 3, 3)))
                self.pads.append(pad)
                c, h = width, h + 2 * pad - 2
                fan = width * h * h
            else:
                self.ws.append(nn.Parameter(torch.randn(width, fan)))
                fan = width
            self.bs.append(nn.Parameter(torch.randn(width)))
        self.readout = nn.Parameter(torch.randn(1, fan))
        self.rb = nn.Parameter(torch.randn(1))

    def forward(self, x):
        sb = math.sqrt(self.b_var)
        if not self.conv:
            x = x.flatten(1)
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            s = math.sqrt(self.w_var / w[0].numel())
            if self.conv:
                x = F.relu(F.conv2d(x, w, padding=self.pads[i]) * s + sb * b[:, None, None])
            else:
                x = F.relu(x @ w.T * s + sb * b)
        x = x.flatten(1)
        return x @ self.readout.T * math.sqrt(self.w_var / x.shape[1]) + sb * self.rb


def finite_ntk(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    j = vmap(jacrev(lambda p, xi: functional_call(net, p, (xi[None],)).reshape(())),
             in_dims=(None, 0))(params, x)
    j = torch.cat([v.reshape(x.shape[0], -1) for v in j.values()], 1)
    return j @ j.T


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def ntk_errors(exact, x, widths, seeds=3, **net_kw):
    errs = []
    for width in widths:
        e = []
        for s in range(seeds):
            torch.manual_seed(1000 * width + s)  # test-only: the finite nets' weights
            e.append(rel_err(finite_ntk(NTKNet(tuple(x.shape[1:]), width, **net_kw), x), exact))
        errs.append(sum(e) / len(e))
    return errs


@pytest.mark.parametrize("depth,b_var", [(1, 0.0), (3, 0.1)])
def test_fc_ntk_matches_finite_width_and_converges(depth, b_var):
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(0))
    nngp, ntk = fc_kernels(x, depth=depth, b_var=b_var)
    assert torch.allclose(ntk, ntk.T) and torch.linalg.eigvalsh(ntk).min() > 0
    errs = ntk_errors(ntk, x, (32, 256, 2048), depth=depth, conv=False, b_var=b_var)
    assert errs[0] > errs[1] > errs[2], errs  # converges as width grows ...
    assert errs[0] / errs[2] > 3 and errs[2] < 0.1, errs  # ... at about 1/sqrt(width)


def test_conv_ntk_matches_finite_width_and_converges():
    x = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    nngp, ntk = conv_kernels(x, depth=2, first_padding=3)
    errs = ntk_errors(ntk, x, (8, 64, 512), seeds=2, depth=2, conv=True, first_padding=3)
    assert errs[0] > errs[2] and errs[2] < 0.1, errs
    # NNGP = covariance of the random network's output: Monte-Carlo over many draws
    torch.manual_seed(7)
    outs = torch.stack([NTKNet((1, 5, 5), 32, 2, conv=True, first_padding=3)(x).flatten()
                        for _ in range(400)]).detach()
    assert rel_err(outs.T @ outs / outs.shape[0], nngp) < 0.15


def test_random_features_approximate_the_conv_nngp(digits):
    x = digits.train.x[:8]
    nngp, _ = conv_kernels(x, depth=3, first_padding=3)
    errs = []
    for m in (1, 16):
        # the exact kernel has a flatten readout: random ConvNets without pooling or norm
        rf = RandomFeatureNNGP(digits.info, n_models=m, model="convnet", width=32, norm="none",
                               pool="none", generator=torch.Generator().manual_seed(0))
        k = rf(x) * 2.0  # embed features omit the readout's w_var = 2
        errs.append(rel_err(k, nngp))
    assert errs[1] < errs[0] and errs[1] < 0.05, errs


def test_empirical_ntk_is_jacobian_gram_and_differentiable(digits):
    k = EmpiricalNTK.for_model("convnet", digits.info, generator=torch.Generator().manual_seed(0),
                               width=8)
    x = digits.train.x[:4].clone().requires_grad_(True)
    kk = k(x)
    g = []
    for i in range(2):
        out = k.model(x[i:i + 1].detach()).sum()
        g.append(torch.cat([p.reshape(-1) for p in torch.autograd.grad(out, list(k.model.parameters()))]))
    assert torch.allclose(kk[0, 1], g[0] @ g[1], rtol=1e-4)
    assert torch.allclose(kk, kk.T, atol=1e-5)
    kk.sum().backward()  # double backward through vmap(jacrev) reaches the inputs
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_kernel_registry_and_errors(digits):
    assert {"fc_ntk", "fc_nngp", "conv_ntk", "conv_nngp", "convnet_entk", "rf_nngp"} <= set(KERNELS.names())
    with pytest.raises(ValueError, match="depth"):
        conv_kernels(digits.train.x[:2], depth=0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        conv_kernels(digits.train.x[:2].flatten(1))
    with pytest.raises(ConfigError, match="unknown kernel"):
        create_distiller("kip", kernel="rbf")
    k = make_kernel("conv_ntk", digits.info)
    assert k(digits.train.x[:3], digits.train.x[:5]).shape == (3, 5)


def test_krr_evaluation_beats_chance_and_reads_kernel_from_metadata(digits):
    d = create_distiller("kip", "tiny", kernel="fc_ntk")
    syn = d.init_synset(digits, ipc=5)
    d.distill(digits, syn)
    r = evaluate_krr(syn, digits)
    assert r["kernel"] == "fc_ntk" and r["num_test"] == len(digits.test)
    assert r["accuracy"] > 60.0  # 50 real-initialised support images, 10 classes
    assert evaluate_krr(syn, digits, limit=100)["num_test"] == 100


def test_kip_learns_and_respects_label_flag(digits):
    kw = dict(kernel="fc_ntk", iterations=15, batch_real=256, lr_data=0.04)
    d = create_distiller("kip", learn_labels=False, **kw)
    syn = d.init_synset(digits, ipc=1)
    y0 = syn.y.detach().clone()
    seen = []
    d.distill(digits, syn, [seen.append])
    assert torch.equal(syn.y, y0)  # labels fixed
    assert seen[-1]["loss"] < 0.8 * seen[0]["loss"]
    d = create_distiller("kip", **kw)
    syn = d.init_synset(digits, ipc=1)
    d.distill(digits, syn)
    assert not torch.equal(syn.y, y0)


@pytest.mark.parametrize("kernel", ["conv_ntk", "convnet_entk"])  # kernel / feature-map paths
def test_kip_streaming_equals_one_block(digits, kernel):
    """The real batch streamed in chunks gives the same update as one block."""
    out = []
    for chunk in (7, 1000):
        d = create_distiller("kip", "tiny", kernel=kernel, kernel_width=8, iterations=1,
                             real_chunk=chunk)
        syn = d.init_synset(digits, ipc=1)
        d.distill(digits, syn)
        out.append((syn.x.detach().clone(), syn.y.detach().clone()))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6)


def test_cli_evaluate_reports_krr(digits, tmp_path, capsys):
    from datadistill.cli import main
    d = create_distiller("kip", "tiny", kernel="fc_ntk")
    syn = d.init_synset(digits, ipc=1)
    d.distill(digits, syn)
    syn.save(tmp_path / "s")
    assert main(["evaluate", str(tmp_path / "s"), "--protocol", "smoke", "--krr"]) == 0
    assert "KRR (fc_ntk" in capsys.readouterr().out


def test_dd_checkpointed_unroll_gives_plain_bptt_gradients(digits):
    res = []
    for ck in (None, 2):
        d = create_distiller("dd", "tiny", init_mode="fixed", inner_momentum=0.9, unroll=5,
                             checkpoint_every=ck, iterations=2, model="convnet_w32")
        syn = d.init_synset(digits, ipc=1)
        d.distill(digits, syn)
        res.append((syn.x.detach().clone(), d.log_lrs_.detach().clone()))
    assert torch.allclose(res[0][0], res[1][0], atol=1e-5)
    assert torch.allclose(res[0][1], res[1][1], atol=1e-6)
    assert not torch.allclose(res[0][1], torch.full_like(res[0][1], math.log(0.02)))
    assert len(syn.meta["dd_lrs"]) == 5


def test_dd_truncation_only_updates_last_step_sizes(digits):
    res = []
    for ck in (None, 4):  # truncation point inside a checkpoint segment: same update
        d = create_distiller("dd", "tiny", unroll=6, backprop_steps=3, iterations=1,
                             model="convnet_w32", init_mode="fixed", checkpoint_every=ck)
        syn = d.init_synset(digits, ipc=1)
        d.distill(digits, syn)
        res.append((syn.x.detach().clone(), d.log_lrs_.detach().clone()))
    lrs = res[0][1]
    assert torch.allclose(lrs[:3], torch.full((3,), math.log(0.02)))
    assert (lrs[3:] - math.log(0.02)).abs().min() > 1e-3
    assert torch.allclose(res[0][0], res[1][0], atol=1e-5) and torch.allclose(lrs, res[1][1])
    with pytest.raises(ConfigError):
        create_distiller("dd", init_mode="zeros")


def test_rfad_learns_platt_temperature(digits):
    d = create_distiller("rfad", "tiny", iterations=3)
    syn = d.init_synset(digits, ipc=1)
    seen = []
    d.distill(digits, syn, [seen.append])
    assert seen[-1]["tau"] != pytest.approx(d.platt_init)


def test_frepo_pool_resets_and_resume_is_exact(digits, tmp_path):
    d = create_distiller("frepo", "tiny", iterations=6)
    syn = d.init_synset(digits, ipc=1)
    assert torch.allclose(syn.y.sum(1), torch.zeros(10), atol=1e-6)  # centred one-hot targets
    d.distill(digits, syn)
    assert max(d.steps_) < d.max_online_updates
    full = syn.x.detach().clone()
    d2 = create_distiller("frepo", "tiny", iterations=6)
    syn2 = d2.init_synset(digits, ipc=1)

    def stop(ev):
        if ev["iteration"] == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d2.distill(digits, syn2, [stop], workdir=tmp_path)
    d3 = create_distiller("frepo", "tiny", iterations=6)
    syn3 = d3.init_synset(digits, ipc=1)
    d3.distill(digits, syn3, workdir=tmp_path, resume=True)  # pool models, steps, optimizers
    assert torch.equal(syn3.x, full) and torch.equal(syn3.y, syn.y)
