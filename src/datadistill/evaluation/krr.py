"""The kernel-ridge-regression evaluation of a summary: the second evaluation of the kernel methods
(KIP, RFAD). KRR with the summary as support set and its own kernel (``kernels.KERNELS``),
predictions on the real test split, accuracy of the arg-max. Reported beside (never instead of)
the finite-network protocol.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..kernels import make_kernel
from ..kernels.krr import krr_predict_batched
from ..runtime import make_generator, resolve_device


def regression_targets(syn) -> torch.Tensor:
    """The summary's labels as KRR targets: regression labels as stored, soft labels as
    probabilities, hard labels one-hot."""
    _, y = syn.materialize()
    if syn.label_format == "regression":
        return y.detach().float()
    if syn.label_format == "soft":
        return F.softmax(y.detach().float(), dim=-1)
    return F.one_hot(y, syn.info.num_classes).float()


@torch.no_grad()
def evaluate_krr(syn, real, kernel: str | None = None, *, reg: float | None = None,
                 depth: int | None = None, width: int | None = None, seed: int = 0,
                 batch: int = 256, limit: int | None = None, device=None) -> dict[str, Any]:
    """Test accuracy (%) of KRR on the summary with ``kernel`` (default: the kernel the summary
    was distilled with, from its metadata) and regularizer ``reg`` (trace-scaled). ``limit``
    uses only the first ``limit`` test examples (a fixed subset, for expensive kernels: RFAD's
    summaries name the pooled ConvNet NNGP, ``conv_pool_nngp``, as its authors evaluate)."""
    from .images import matched_test_split

    params = syn.meta.get("params") or {}
    kernel = kernel or params.get("kernel")
    if kernel is None:
        raise ConfigError("no kernel given and the summary's metadata names none; pass kernel=")
    reg = params.get("reg", 1e-6) if reg is None else reg
    depth = depth if depth is not None else params.get("kernel_depth")
    width = width if width is not None else params.get("kernel_width")
    dev = resolve_device(device)
    test = matched_test_split(syn, real)
    if limit is not None:
        test = type(test)(test.x[:limit], test.y[:limit])
    test = test.to(dev)
    x_s, _ = syn.materialize()
    x_s, y_s = x_s.detach().to(dev).float(), regression_targets(syn).to(dev)
    k = make_kernel(kernel, syn.info, generator=make_generator(seed), device=dev, depth=depth,
                    width=width)
    kern64 = lambda a, b: k(a, b).double()  # noqa: E731  (solve in float64: lambda is ~1e-6)
    pred = krr_predict_batched(kern64, x_s, y_s.double(), test.x.float(), reg, batch=batch)
    acc = 100.0 * float((pred.argmax(1) == test.y).float().mean())
    return {"kernel": kernel, "depth": depth, "width": width, "reg": reg, "seed": seed,
            "accuracy": acc, "num_support": int(x_s.shape[0]), "num_test": len(test)}
