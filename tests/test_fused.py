"""The fused CPU kernel (instance norm -> ReLU -> 2x2 avg pool): the same function as the
reference composition, in every way the library differentiates through it."""
import contextlib

import pytest
import torch

from datadistill import perf
from datadistill.data.base import DataInfo
from datadistill.distillers import create_distiller
from datadistill.models import create_model
from datadistill.perf import fused, fused_conv
from datadistill.runtime import RunOptions

pytestmark = pytest.mark.skipif(not fused.available(),
                                reason="no C++ toolchain to build the fused kernel")

F64 = torch.float64


@contextlib.contextmanager
def kernels(net, enabled=True):
    """Within the block ``net`` computes its blocks with (or without) the fused kernels."""
    prev = [(m, m.fused) for m in net.modules() if hasattr(m, "fused")]
    for m, _ in prev:
        m.fused = enabled
    try:
        yield
    finally:
        for m, f in prev:
            m.fused = f


def _block(shape, dtype=F64, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], generator=g, dtype=dtype)
    b = torch.randn(shape[1], generator=g, dtype=dtype)
    gy = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=g, dtype=dtype)
    return x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), gy


@pytest.mark.parametrize("shape", [(4, 16, 8, 8), (3, 5, 7, 9), (2, 130, 4, 6), (1, 3, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_equals_reference_in_float64(shape, channels_last):
    x, w, b, gy = _block(shape, channels_last=channels_last)
    ref = fused.reference(x, w, b, 1e-5)
    out = fused.norm_relu_pool(x, w, b, 1e-5)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(ref, (x, w, b), gy)
    g_out = torch.autograd.grad(out, (x, w, b), gy)
    for a, r in zip(g_out, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    # odd sizes: the dropped last row/column gets only the normalisation's gradient, not zero
    if shape[2] % 2:
        assert g_out[0][:, :, -1].abs().max() > 0


@pytest.mark.parametrize("cin,hw,pad", [(1, (8, 8), 3), (3, (7, 9), 1), (2, (6, 6), 0),
                                        (1, (28, 28), 3)])
def test_first_block_with_its_convolution_equals_reference(cin, hw, pad):
    """conv3x3 -> norm -> ReLU -> pool in one kernel: values, all first derivatives (the input
    too: DM and DSA differentiate w.r.t. the images) and second derivatives, float64. Cin 1 and
    3 take the fixed-tap code, Cin 2 the generic one."""
    g = torch.Generator().manual_seed(cin)
    x = torch.randn(3, cin, *hw, generator=g, dtype=F64).requires_grad_()
    cw = torch.randn(16, cin, 3, 3, generator=g, dtype=F64).requires_grad_()
    cb, w, b = (torch.randn(16, generator=g, dtype=F64).requires_grad_() for _ in range(3))
    ref = fused.conv_reference(x, cw, cb, pad, w, b, 1e-5)
    out = fused.conv_norm_relu_pool(x, cw, cb, pad, w, b, 1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(ref.shape, generator=g, dtype=F64)
    g_ref = torch.autograd.grad(ref, (x, cw, cb, w, b), gy)
    g_out = torch.autograd.grad(out, (x, cw, cb, w, b), gy)
    for k, (a, r) in enumerate(zip(g_out, g_ref)):
        # (the conv bias feeds an instance norm: its true gradient is 0, compare absolutely)
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12 if k != 2 else 1e-10)

    def second(fn):
        gg = torch.autograd.grad(fn(x, cw, cb, pad, w, b, 1e-5), (x, cw, w), gy, create_graph=True)
        return torch.autograd.grad(sum((t * t).sum() for t in gg), (x, cw, w))

    for a, r in zip(second(fused.conv_norm_relu_pool), second(fused.conv_reference)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)
    # without an input gradient the kernel skips it; the parameter gradients are unchanged
    x2 = x.detach()
    g_noinput = torch.autograd.grad(fused.conv_norm_relu_pool(x2, cw, cb, pad, w, b, 1e-5),
                                    (cw, w), gy)
    torch.testing.assert_close(g_noinput[0], g_ref[1], rtol=1e-10, atol=1e-12)


def test_first_block_under_bf16_autocast_hands_bf16_to_the_next_layer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 12, 12, generator=g)
    cw = torch.randn(8, 1, 3, 3, generator=g, requires_grad=True)
    cb, w, b = (torch.randn(8, generator=g).requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused.conv_norm_relu_pool(x, cw, cb, 1, w, b, 1e-5)
    assert out.dtype == torch.bfloat16
    ref = fused.conv_reference(x, cw, cb, 1, w, b, 1e-5)  # float32: the kernel computes in it
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    gy = torch.randn(ref.shape, generator=g)
    g_out = torch.autograd.grad(out, (cw, w, b), gy.bfloat16())
    g_ref = torch.autograd.grad(ref, (cw, w, b), gy.bfloat16().float())
    for a, r in zip(g_out, g_ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5 * float(r.abs().max()))


def test_second_order_of_the_fused_block():
    x, w, b, gy = _block((3, 8, 6, 6))

    def second(fn):
        g = torch.autograd.grad(fn(x, w, b, 1e-5), (x, w, b), gy, create_graph=True)
        # (the bias enters the gradients only through the ReLU's mask: zero, maybe "unused")
        out = torch.autograd.grad(sum((t * t).sum() for t in g), (x, w, b), allow_unused=True)
        return [torch.zeros_like(v) if o is None else o for o, v in zip(out, (x, w, b))]

    for a, r in zip(second(fused.norm_relu_pool), second(fused.reference)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.fixture
def dbwd_calls(monkeypatch):
    """Counts calls of the double-backward kernel (which then runs as usual)."""
    calls = []
    real = fused._dbwd
    monkeypatch.setattr(fused, "_dbwd", lambda *a: calls.append(1) or real(*a))
    return calls


def _double_backward(fn, x, w, b, gy, v):
    """Gradients of <v, (dL/dx, dL/dw, dL/db)> w.r.t. (gy, x, w): what an unroll's outer
    backward asks of a block's backward."""
    gy = gy.clone().requires_grad_()
    g = torch.autograd.grad(fn(x, w, b, 1e-5), (x, w, b), gy, create_graph=True)
    inner = sum((a * t).sum() for a, t in zip(g, v))
    return g, torch.autograd.grad(inner, (gy, x, w))


@pytest.mark.parametrize("shape", [(3, 8, 6, 6), (2, 5, 7, 9), (2, 130, 4, 5), (1, 3, 2, 2)])
def test_double_backward_kernel_equals_autograd_of_the_reference(shape, dbwd_calls):
    """MTT's unroll differentiates the backward: the double-backward kernel (not torch ops)
    gives the reference's second derivatives w.r.t. the incoming gradient, the input and the
    norm weight, in float64, at odd sizes too (dropped row/column) and C not a multiple of 16."""
    x, w, b, gy = _block(shape)
    g = torch.Generator().manual_seed(7)
    v = [torch.randn(t.shape, generator=g, dtype=F64) for t in (x, w, b)]
    g_ref, d_ref = _double_backward(fused.reference, x, w, b, gy, v)
    g_out, d_out = _double_backward(fused.norm_relu_pool, x, w, b, gy, v)
    assert dbwd_calls, "the double-backward kernel was not used"
    for a, r in zip(g_out + d_out, g_ref + d_ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)
    # only the norm weight's gradient arrives (v_x, v_b None inside the kernel's caller)
    gw = torch.autograd.grad(fused.norm_relu_pool(x, w, b, 1e-5), w, gy, create_graph=True)[0]
    ref_w = torch.autograd.grad(fused.reference(x, w, b, 1e-5), w, gy, create_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(gw.sum(), x)[0],
                               torch.autograd.grad(ref_w.sum(), x)[0], rtol=1e-9, atol=1e-12)


def test_double_backward_formula_and_third_order():
    """The torch-op double backward (used for a third derivative) is the kernel's formula, and
    a third derivative through it equals the reference's."""
    x, w, b, gy = _block((2, 6, 5, 6))
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(t.shape, generator=g, dtype=F64) for t in (x, w, b)]
    stats = torch.var_mean(x.detach(), dim=(2, 3), correction=0)
    mean, rstd = stats[1], torch.rsqrt(stats[0] + 1e-5)
    k = fused._dbwd(gy, x.detach(), mean, rstd, w.detach(), b.detach(), *v)
    f = fused._differentiable_double_backward(gy, x.detach(), w.detach(), b.detach(), 1e-5, *v)
    for a, r in zip(k, f):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)

    def third(fn):
        gyr = gy.clone().requires_grad_()
        gr = torch.autograd.grad(fn(x, w, b, 1e-5), (x, w), gyr, create_graph=True)
        d = torch.autograd.grad(sum((t * t).sum() for t in gr), (gyr, x), create_graph=True)
        return torch.autograd.grad(sum((t * t).sum() for t in d), (x, w))

    for a, r in zip(third(fused.norm_relu_pool), third(fused.reference)):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-11)


def test_double_backward_kernel_in_bfloat16():
    """bf16 activations (MTT under autocast): the kernel computes in float32 from the bf16
    values; the same values through the float32 formula agree to bf16 rounding of the outputs."""
    x, w, b, gy = _block((4, 32, 8, 8), dtype=torch.float32)
    xb, gb_ = x.detach().bfloat16(), gy.bfloat16()
    g = torch.Generator().manual_seed(5)
    vx = torch.randn(x.shape, generator=g).bfloat16()
    vw, vb = torch.randn(32, generator=g), torch.randn(32, generator=g)
    stats = torch.var_mean(xb.float(), dim=(2, 3), correction=0)
    mean, rstd = stats[1], torch.rsqrt(stats[0] + 1e-5)
    k = fused._dbwd(gb_, xb, mean, rstd, w.detach(), b.detach(), vx, vw, vb)
    assert (k[0].dtype, k[1].dtype, k[2].dtype) == (torch.bfloat16, torch.bfloat16, torch.float32)
    f = fused._differentiable_double_backward(gb_.float(), xb.float(), w.detach(), b.detach(),
                                              1e-5, vx.float(), vw, vb)
    for a, r in zip(k, f):
        assert float((a.float() - r).abs().max()) <= 1e-2 * float(r.abs().max())


def test_conv2d_double_backward_equals_autograd():
    """``fused_conv.conv2d``: the values and the first and second derivatives of ``F.conv2d``; its
    double backward computes the weight-shaped term with a weight-gradient kernel."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 7, 6, generator=g, dtype=F64).requires_grad_()
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=F64).requires_grad_()
    b = torch.randn(5, generator=g, dtype=F64).requires_grad_()
    gy = torch.randn(3, 5, 7, 6, generator=g, dtype=F64)
    v = [torch.randn(t.shape, generator=g, dtype=F64) for t in (x, w, b)]

    def run(fn):
        gyr = gy.clone().requires_grad_()
        y = fn(x, w, b, 1)
        gr = torch.autograd.grad(y, (x, w, b), gyr, create_graph=True)
        inner = sum((a * t).sum() for a, t in zip(gr, v))
        return (y, *gr, *torch.autograd.grad(inner, (gyr, x, w)))

    ref = run(lambda x, w, b, p: torch.nn.functional.conv2d(x, w, b, padding=p))
    for a, r in zip(run(fused_conv.conv2d), ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda x, w, b: fused_conv.conv2d(x, w, b, 1),
                                        (x[:1, :2, :4, :4].detach().requires_grad_(),
                                         w[:2, :2].detach().requires_grad_(),
                                         b[:2].detach().requires_grad_()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused_conv.conv2d(x.float(), w.float(), b.float(), 1).dtype == torch.bfloat16


def test_mtt_with_the_kernels_follows_the_same_trajectory(dbwd_calls):
    """Two MTT iterations (3-step unrolls; the outer gradient goes through every step's
    backward) in float64: with the kernels (the double-backward kernel is called) the
    same summary and step size as the reference, to rounding."""
    from datadistill.data import load_dataset
    from datadistill.experts import ExpertTrajectories, flat_parameters
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        data = load_dataset("digits")
        data.train.x = data.train.x.double()
        runs = []
        for flag in (False, True):
            d = create_distiller("mtt", iterations=2, syn_steps=3, expert_epochs=1,
                                 max_start_epoch=1, num_experts=1, train_epochs=2,
                                 seed=0, lr_img=100.0)

            class Traj(ExpertTrajectories):  # a fixed two-epoch segment from the model's init
                def __init__(self, real_, model):
                    net = create_model(model, real_.info,
                                       generator=torch.Generator().manual_seed(0)).double()
                    p0 = flat_parameters(net)
                    p1 = p0 + 1e-2 * torch.randn(p0.shape, generator=torch.Generator()
                                                 .manual_seed(1), dtype=F64)
                    self.traj = torch.stack([p0, p1, p1 + (p1 - p0)])
                    self.num_params = p0.numel()

                def __len__(self):
                    return 1

                def __getitem__(self, i):
                    return self.traj

                def params_at(self, i, epoch):
                    return self.traj[epoch].clone()

            d.experts = lambda r, d=d: Traj(r, d.model)
            syn = d.init_synset(data, ipc=2)
            x_init = syn.x.detach().clone()
            d.distill(data, syn, run=RunOptions(fused=flag))
            runs.append((syn.x.detach().clone(), float(syn.lr.detach())))
    finally:
        torch.set_default_dtype(prev)
    assert dbwd_calls, "the double-backward kernel was not used"
    (x0, lr0), (x1, lr1) = runs
    assert x0.dtype == F64 and float((x0 - x_init).abs().max()) > 1e-6  # the summary moved
    assert float((x0 - x1).abs().max()) < 1e-9 and abs(lr0 - lr1) < 1e-12


def test_grad_of_grad_under_torch_func():
    from torch.func import functional_call, grad
    info = DataInfo(name="t", modality="image", num_classes=10, shape=(1, 12, 12))
    net = create_model("convnet", info, generator=torch.Generator().manual_seed(0)).to(F64)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = torch.randn(5, 1, 12, 12, dtype=F64), torch.randint(0, 10, (5,))

    def outer(xb):  # gradient matching's shape: a function of the parameter gradient
        g = grad(lambda p: torch.nn.functional.cross_entropy(functional_call(net, p, (xb,)), y))(
            params)
        return sum((t * t).sum() for t in g.values())

    ref = grad(outer)(x)
    with kernels(net):
        got = grad(outer)(x)
        compiled = torch.compile(grad(outer), dynamic=False)(x)  # cannot see through a kernel
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(compiled, ref, rtol=1e-7, atol=1e-10)


def test_bfloat16_matches_the_reference_on_the_same_values():
    x, w, b, gy = _block((4, 32, 8, 8), dtype=torch.float32)
    xb = x.detach().bfloat16().requires_grad_()
    gyb = gy.bfloat16()
    out = fused.norm_relu_pool(xb, w, b, 1e-5)
    assert out.dtype == torch.bfloat16
    xr = xb.detach().float().requires_grad_()
    ref = fused.reference(xr, w, b, 1e-5)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    g_out = torch.autograd.grad(out, (xb, w, b), gyb)
    g_ref = torch.autograd.grad(ref, (xr, w, b), gyb.float())
    assert g_out[0].dtype == torch.bfloat16 and g_out[1].dtype == torch.float32
    for a, r in zip(g_out, g_ref):
        scale = r.abs().max()
        assert (a.float() - r).abs().max() <= 2e-2 * scale


def test_bad_inputs_raise():
    w, b = torch.ones(4), torch.zeros(4)
    with pytest.raises(ValueError, match="H>=2"):
        fused.norm_relu_pool(torch.randn(2, 4, 1, 5), w, b)
    with pytest.raises(ValueError, match="float32"):
        fused.norm_relu_pool(torch.ones(2, 4, 4, 4, dtype=torch.int32), w, b)
    with pytest.raises(RuntimeError, match="weight and bias"):
        fused.norm_relu_pool(torch.randn(2, 4, 4, 4), torch.ones(3), torch.zeros(3))


def test_build_failure_says_what_is_missing(monkeypatch):
    from torch.utils import cpp_extension

    def broken(**kw):
        raise OSError("c++: not found")
    monkeypatch.setattr(fused, "_ext", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler and ninja"):
        fused.build()
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):  # remembered, not retried
        perf.resolve(RunOptions(device="cpu", fused=True))
    # the auto path falls back to plain PyTorch (the same function) and says so once
    monkeypatch.setattr(perf, "_warned", set())
    with pytest.warns(RuntimeWarning, match="fused CPU kernels are off"):
        assert perf.resolve(RunOptions(device="cpu")).fused is False
    monkeypatch.setattr(perf, "compiler_available", lambda: False)
    assert perf.resolve(RunOptions(device="cpu")).fused is False  # (warned already: silent)


def _net_and_grads(info, x, dtype, enabled, seed=0):
    net = create_model("convnet", info, generator=torch.Generator().manual_seed(seed),
                       fused=enabled).to(dtype)
    out = net(x)
    grads = torch.autograd.grad((out * out).sum(), list(net.parameters()))
    return out, grads


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_convnet_is_the_same_function_with_the_kernel(shape):
    info = DataInfo(name="t", modality="image", num_classes=10, shape=shape)
    x = torch.randn(6, *shape, dtype=F64)
    out0, g0 = _net_and_grads(info, x, F64, False)
    out1, g1 = _net_and_grads(info, x, F64, True)
    torch.testing.assert_close(out1, out0, rtol=1e-10, atol=1e-12)
    # conv biases feeding an instance norm have a zero true gradient: compare against the
    # largest gradient, not elementwise relative error on rounding noise
    scale = max(float(g.abs().max()) for g in g0)
    for a, r in zip(g1, g0):
        assert float((a - r).abs().max()) <= 1e-10 * scale


def test_convnet_variants_without_the_block_are_untouched():
    info = DataInfo(name="t", modality="image", num_classes=10, shape=(1, 28, 28))
    for name in ("convnet_bn", "convnet_mp", "convnet_nn"):
        net = create_model(name, info, generator=torch.Generator().manual_seed(0))
        assert not net._fusable
    assert len(create_model("convnet", info)._fusable) == 3


def test_compiled_func_grad_and_vmap_agree_with_eager():
    from torch.func import functional_call, grad, vmap
    info = DataInfo(name="t", modality="image", num_classes=10, shape=(1, 28, 28))
    net = create_model("convnet", info, generator=torch.Generator().manual_seed(1))
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def loss(p, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (xb,)), yb)

    ref = grad(loss)(params, x, y)
    with kernels(net):
        eager = grad(loss)(params, x, y)
        compiled = torch.compile(grad(loss), dynamic=False)(params, x, y)
        # vmap over examples: the kernel does not batch, the ConvNet takes the reference path
        per_ex = vmap(lambda xb: functional_call(net, params, (xb[None],)))(x)
    scale = max(float(g.abs().max()) for g in ref.values())
    for k in ref:
        assert float((eager[k] - ref[k]).abs().max()) <= 1e-5 * scale
        assert float((compiled[k] - ref[k]).abs().max()) <= 1e-5 * scale, (k, float((compiled[k] - ref[k]).abs().max()), scale)
    torch.testing.assert_close(per_ex[:, 0], net(x), rtol=1e-4, atol=1e-5)


def test_dc_with_the_kernel_follows_the_same_trajectory():
    """Three DC iterations (matching with second-order synthetic gradients, inner training) in
    float64: the kernel and the reference give the same summary to rounding. (In float32 the
    two drift apart over iterations, as DC from noise amplifies any rounding difference.)"""
    from datadistill.data import load_dataset
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        data = load_dataset("digits")
        data.train.x = data.train.x.double()
        runs = []
        for flag in (False, True):
            d = create_distiller("dc", preset="tiny", iterations=3, seed=0)
            syn = d.init_synset(data, ipc=2)
            d.distill(data, syn, run=RunOptions(fused=flag))
            runs.append((syn.x.detach().clone(), syn.meta["run"]["fused"]))
    finally:
        torch.set_default_dtype(prev)
    (x0, f0), (x1, f1) = runs
    assert (f0, f1) == (False, True)  # recorded in the summary
    assert x0.dtype == F64 and float((x0 - x1).abs().max()) < 1e-10


def test_resume_may_switch_the_kernel_on(digits, tmp_path):
    d1 = create_distiller("dm", iterations=4, batch_real=32, seed=0)
    s1 = d1.init_synset(digits, ipc=2)

    def stop_at_2(ev):
        if ev["iteration"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d1.distill(digits, s1, [stop_at_2], workdir=tmp_path, run=RunOptions(fused=False))
    d2 = create_distiller("dm", iterations=4, batch_real=32, seed=0)
    s2 = d2.init_synset(digits, ipc=2)
    d2.distill(digits, s2, workdir=tmp_path, resume=True, run=RunOptions(fused=True))
    assert s2.meta["iterations"] == 4 and s2.meta["run"]["fused"] is True


def test_evaluate_records_the_kernel(digits):
    from datadistill.baselines.images import select_coreset
    from datadistill.evaluation import evaluate
    syn = select_coreset(digits, 2, "random", seed=0)
    a = evaluate(syn, digits, protocol="smoke", run=RunOptions(fused=False))
    b = evaluate(syn, digits, protocol="smoke", run=RunOptions(fused=True))
    assert b.run["fused"] is True and a.run["fused"] is False and not b.overrides
    assert abs(a.results["convnet"]["mean"] - b.results["convnet"]["mean"]) <= 3.0


def test_cli_fused_flag_is_used_and_recorded(tmp_path, capsys, monkeypatch):
    import json

    from datadistill.cli import main
    from datadistill.synsets import load_summary
    calls = []
    real_kernel = fused.norm_relu_pool
    monkeypatch.setattr(fused, "norm_relu_pool", lambda *a: calls.append(1) or real_kernel(*a))
    run = tmp_path / "run"
    assert main(["distill", "--method", "dm", "--dataset", "digits", "--ipc", "2",
                 "--iterations", "2", "--set", "batch_real=16", "--quiet", "--device", "cpu",
                 "--fused", "on", "--out", str(run)]) == 0
    meta = load_summary(run / "summary").meta
    assert meta["run"]["fused"] is True and "fused" not in meta["params"]
    assert "fused" not in json.loads((run / "run.json").read_text())  # not a run setting to keep
    assert calls  # the ConvNet ran its blocks through the kernel
    n = len(calls)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "smoke", "--fused", "off", "--json",
                 "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["run"]["fused"] is False and len(calls) == n  # off means off
    assert main(["evaluate", str(run), "--protocol", "smoke", "--json", "--device", "cpu"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["run"]["fused"] is True and len(calls) > n  # auto: on where it builds


def test_tesla_fused_ignores_fast_norm_and_runs_the_kernels(digits, dbwd_calls):
    """Under fused=True the kernels compute the student's blocks whatever ``fast_norm`` says
    (TESLA's default is True): the same summary either way, and the double-backward kernel runs."""
    out = []
    for fast_norm in (True, False):
        d = create_distiller("tesla", preset="tiny", seed=0)
        syn = d.init_synset(digits, ipc=2)
        d.distill(digits, syn, run=RunOptions(fused=True, fast_norm=fast_norm))
        out.append(syn.x.detach().clone())
    assert dbwd_calls
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
