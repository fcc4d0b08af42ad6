"""Where a ConvNet training step's time goes on this CPU, and what bounds the "fraction of the
machine's convolution throughput" that gradient matching can reach (issue 3's speed target).

    OMP_NUM_THREADS=1 python bench/gm_roofline.py --threads 1 [--batch 100,256]

For the Fashion-MNIST ConvNet-128-3 (1x28x28 input, first conv padded to 32x32) it measures, in
CPU-seconds of one thread:

* ``bench``: the reference convolution (128->128, 3x3, 16x16 maps, batch 256, forward + both
  backward passes) that the speed tables divide by;
* ``convs``: every convolution the training step runs, at its real shape, alone (forward,
  input gradient where the step needs one, weight gradient), summed;
* ``stem``: the library's first layer (``GrayStemConv2d``, im2col + 1x1) in place of the direct
  kernel's first-layer ``convs`` entry;
* ``step``: the whole training step (forward, backward, SGD update), eager and ``torch.compile``,
  with the library's ConvNet, with the direct kernel as first layer (``_plainstem``) and with
  the fused norm/ReLU/pool kernel (``_fused``, ``runtime.fused_kernels``);
* ``copy``: the memory bandwidth of one thread (a 256 MiB copy), to size the memory-bound part.

``step - convs`` is the non-convolution part (instance norm, ReLU, average pooling, their
backward passes, the update): memory-bound work on tensors far larger than the caches. The ratio
``FLOPs / step / bench`` is what the speed tables call "of fp32 conv"; ``convs`` alone bounds it
from above even if everything else took no time. Results: bench/results/gm_roofline.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from datadistill import runtime  # noqa: E402
from datadistill.data.base import DataInfo  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from datadistill.runtime import autocast  # noqa: E402
from datadistill.train import label_loss  # noqa: E402

CPU = torch.device("cpu")


def best(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return min(ts)


def dtype_of(precision: str):
    return torch.bfloat16 if precision == "bf16" else torch.float32


def conv_pass(batch: int, cin: int, cout: int, hw: int, pad: int, need_input_grad: bool,
              precision: str, reps: int, channels_last: bool = False) -> tuple[float, float]:
    """(seconds, FLOPs) of one conv's forward + weight gradient (+ input gradient)."""
    dt = dtype_of(precision)
    x = torch.randn(batch, cin, hw, hw, dtype=dt)
    w = torch.randn(cout, cin, 3, 3, dtype=dt)
    out_hw = hw + 2 * pad - 2
    go = torch.randn(batch, cout, out_hw, out_hw, dtype=dt)
    if channels_last:
        x, w, go = (t.contiguous(memory_format=torch.channels_last) for t in (x, w, go))
    mask = [need_input_grad, True, True]

    def run():
        F.conv2d(x, w, None, 1, pad)
        torch.ops.aten.convolution_backward(go, x, w, [cout], [1, 1], [pad, pad], [1, 1], False,
                                            [0, 0], 1, mask)
    macs = batch * cout * cin * 9 * out_hw * out_hw
    return best(run, reps), 2 * macs * (3 if need_input_grad else 2)


def bench_conv(precision: str, reps: int, channels_last: bool = False) -> float:
    s, f = conv_pass(256, 128, 128, 16, 1, True, precision, reps, channels_last)
    return f / s / 1e9


def stem_pass(batch: int, precision: str, reps: int) -> float:
    """Seconds of the library's first layer (``GrayStemConv2d``: im2col + 1x1 conv), forward +
    weight gradient, for comparison with the direct kernel's ``conv_pass``."""
    from datadistill.models.layers import GrayStemConv2d
    dt = dtype_of(precision)
    m = GrayStemConv2d(1, 128, 3, padding=3).to(dt)
    x = torch.randn(batch, 1, 28, 28, dtype=dt)
    go = torch.randn(batch, 128, 32, 32, dtype=dt)
    return best(lambda: torch.autograd.grad(m(x), [m.weight, m.bias], go), reps)


def step_time(batch: int, precision: str, compile_: bool, reps: int,
              plain_stem: bool = False, fused: bool = False) -> tuple[float, float]:
    with runtime.fused_kernels(fused):
        return _step_time(batch, precision, compile_, reps, plain_stem)


def _step_time(batch: int, precision: str, compile_: bool, reps: int,
               plain_stem: bool = False) -> tuple[float, float]:
    info = DataInfo(name="fmnist-shape", modality="image", num_classes=10, shape=(1, 28, 28))
    net = create_model("convnet", info)
    if plain_stem:  # the direct oneDNN kernel for the 1-channel first conv (before GrayStemConv2d)
        plain = torch.nn.Conv2d(1, 128, 3, padding=3)
        plain.load_state_dict(net.features[0].state_dict())
        net.features[0] = plain
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def train_step(p, xb, yb):
        with autocast(CPU, precision):
            out = torch.func.functional_call(net, p, (xb,))
        loss = label_loss(out, yb)
        g = torch.autograd.grad(loss, list(p.values()))
        with torch.no_grad():
            for t, gt in zip(p.values(), g):
                t.sub_(0.01 * gt)
        return loss.detach()

    fn = torch.compile(train_step, dynamic=False) if compile_ else train_step
    fn(params, x, y)
    flops = 2 * batch * (128 * 9 * 32 * 32 * 2 + 128 * 128 * 9 * 16 * 16 * 3
                         + 128 * 128 * 9 * 8 * 8 * 3 + 2048 * 10 * 3)
    return best(lambda: fn(params, x, y), reps), flops


def bandwidth(reps: int) -> float:
    a = torch.empty(64 * 2**20)  # 256 MiB
    b = torch.empty_like(a)
    a.fill_(1.0)
    s = best(lambda: b.copy_(a), reps)
    return 2 * a.numel() * 4 / s / 1e9  # read + write, GB/s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", default="100,256")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="gm_roofline", help="results name (bench/results/NAME.json)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    alloc = runtime.tune_allocator()
    rec = {"command": "python bench/gm_roofline.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "allocator": alloc, "clock": "process_time", "rows": []}
    rec["copy_gb_s"] = bandwidth(a.reps)
    rec["bench_conv_gflops"] = {p: bench_conv(p, a.reps) for p in a.precisions.split(",")}
    rec["bench_conv_gflops_channels_last"] = {p: bench_conv(p, a.reps, True)
                                              for p in a.precisions.split(",")}
    print(f"copy {rec['copy_gb_s']:.1f} GB/s, bench conv {rec['bench_conv_gflops']}", flush=True)
    for prec in a.precisions.split(","):
        for batch in (int(b) for b in a.batch.split(",")):
            convs = [conv_pass(batch, 1, 128, 28, 3, False, prec, a.reps),
                     conv_pass(batch, 128, 128, 16, 1, True, prec, a.reps),
                     conv_pass(batch, 128, 128, 8, 1, True, prec, a.reps)]
            conv_s = sum(s for s, _ in convs)
            conv_f = sum(f for _, f in convs)
            row = {"precision": prec, "batch": batch, "conv_s": conv_s, "conv_gflop": conv_f / 1e9,
                   "conv_layers_s": [s for s, _ in convs],
                   "conv_layers_gflops": [f / s / 1e9 for s, f in convs]}
            row["stem_s"] = stem_pass(batch, prec, a.reps)
            for comp, plain, fz in ((False, False, False), (True, False, False),
                                    (False, True, False), (True, True, False),
                                    (False, False, True), (True, False, True)):
                s, f = step_time(batch, prec, comp, a.reps, plain_stem=plain, fused=fz)
                key = ("compile" if comp else "eager") + ("_plainstem" if plain else "") \
                    + ("_fused" if fz else "")
                row[f"step_{key}_s"] = s
                row[f"step_{key}_of_bench"] = f / s / 1e9 / rec["bench_conv_gflops"]["fp32"]
                row[f"step_{key}_of_best_fp32"] = f / s / 1e9 / max(
                    rec["bench_conv_gflops"]["fp32"], rec["bench_conv_gflops_channels_last"]["fp32"])
                row[f"nonconv_{key}_s"] = s - (conv_s if plain else conv_s - convs[0][0] + row["stem_s"])
            row["step_gflop"] = f / 1e9
            row["convs_only_of_bench"] = conv_f / conv_s / 1e9 / rec["bench_conv_gflops"]["fp32"]
            row["convs_only_stem_of_bench"] = conv_f / (conv_s - convs[0][0] + row["stem_s"]) / 1e9 \
                / rec["bench_conv_gflops"]["fp32"]
            rec["rows"].append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            save(a.out, rec)
    rec["peak_rss_mib"] = runtime.peak_rss_bytes() / 2**20
    save(a.out, rec)


if __name__ == "__main__":
    main()
