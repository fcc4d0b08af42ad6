"""Compact storage for sparse summaries: recommender user rows and synthetic graphs (and an
IT-GAN summary's generated images, without its generator).

A distilled recommender summary (Distill-CF) is a *dense, soft* matrix of fake users over all
items; a graph summary (GCond) is dense features plus an adjacency that a generator produces.
``compact(syn, ...)`` converts either into a summary that stores only what is kept, in the
smallest types that hold it, and materializes back to what the evaluator needs:

* recommender rows (``topk-users``, ``synsets.compact_users``): per fake user the ``topk``
  largest entries (all non-zeros with ``topk=None``), as item indices in the smallest unsigned
  type that holds the item count (int16 for up to 32,768 items), values in ``dtype`` (``float32``, ``float16``, ``uint8`` with a
  per-row affine range, or ``binary``: no values, every kept entry is 1), and the number of kept
  entries per user;
* node-classification graphs (``compact-graph``, ``synsets.compact_graph``): features in ``dtype``
  (``float32``, ``float16`` or per-row ``uint8``), the adjacency baked at ``threshold`` (entries
  below it dropped), kept once per undirected pair when symmetric, node ids in the smallest
  unsigned type, edge weights in ``edge_dtype`` (or ``binary``), labels in the smallest type;
* graph-classification sets of small graphs (``compact-graphs``, same module; DosCond and the
  coreset baselines): the same per graph, features of real nodes only (no padding rows), local
  node ids, with each graph's size and edge count.

Quantization is exact about what it stores: the materialized values are the stored ones
(``dequantize(quantize(v)) == materialized``), and ``stored_bytes()`` is the sum of the stored
tensors' sizes. This module holds the shared encoding helpers and the conversion; the summary
kinds live with their modality.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError

#: value types of the sparse layouts; ``binary`` stores no values (every kept entry is 1)
VALUE_DTYPES = ("float32", "float16", "bfloat16", "uint8", "binary")
#: feature types of compact graphs (features are dense, so never binary)
FEATURE_DTYPES = ("float32", "float16", "bfloat16", "uint8")
#: the precisions an IT-GAN summary's generated images can be stored at (dense too: the same)
PIXEL_DTYPES = FEATURE_DTYPES
_FLOATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_dtype(dtype: str, allowed: tuple[str, ...] = VALUE_DTYPES, what: str = "dtype") -> str:
    if dtype not in allowed:
        raise ConfigError(f"unknown {what} {dtype!r}; known: {', '.join(allowed)}")
    return dtype


def index_dtype(count: int) -> torch.dtype:
    """The smallest integer type that holds 0 .. ``count`` - 1: uint8, int16, int32, int64
    (not uint16: most torch operations do not support it)."""
    if count <= 1 << 8:
        return torch.uint8
    if count <= 1 << 15:
        return torch.int16
    if count <= 1 << 31:
        return torch.int32
    return torch.int64


def nbytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def quantize(values: Tensor, dtype: str, segments: Tensor | None = None,
             num_segments: int = 0) -> tuple[Tensor, Tensor]:
    """``values`` stored as ``dtype``; returns ``(stored, ranges)``. ``uint8`` is affine per row
    (2-d ``values``) or per segment (1-d ``values`` with ``segments``, the segment id of each
    value, out of ``num_segments``): ranges [rows, 2] float32 (lo, hi), codes round((v - lo) /
    (hi - lo) * 255), decoded as lerp(lo, hi, code / 255) (exactly lo and hi at the ends, so
    re-quantizing decoded values gives them back bit for bit). Other types store the values as
    they are (``binary``: nothing) and no ranges."""
    check_dtype(dtype)
    empty = torch.zeros(0, 2)
    if dtype == "binary":
        return torch.zeros(0, dtype=torch.uint8), empty
    if dtype in _FLOATS:
        return values.detach().to(_FLOATS[dtype]).contiguous(), empty
    v = values.detach().float()
    if segments is None:  # 2-d: one range per row
        lo, hi = v.amin(-1), v.amax(-1)
        lo_v, hi_v = lo[..., None], hi[..., None]
    else:
        lo = torch.full((num_segments,), float("inf")).scatter_reduce(0, segments, v, "amin")
        hi = torch.full((num_segments,), float("-inf")).scatter_reduce(0, segments, v, "amax")
        lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))  # empty segments
        hi = torch.where(torch.isfinite(hi), hi, torch.zeros_like(hi))
        lo_v, hi_v = lo[segments], hi[segments]
    span = hi_v - lo_v
    scale = torch.where(span > 0, 255.0 / torch.where(span > 0, span, torch.ones_like(span)),
                        torch.zeros_like(span))
    q = torch.round((v - lo_v) * scale).clamp_(0, 255).to(torch.uint8)
    return q.contiguous(), torch.stack([lo, hi], -1).contiguous()


def dequantize(stored: Tensor, dtype: str, ranges: Tensor, count: int = 0,
               segments: Tensor | None = None) -> Tensor:
    """The float32 values ``quantize`` stored (``count`` ones for ``binary``)."""
    if dtype == "binary":
        return torch.ones(count, device=stored.device)
    if dtype != "uint8":
        return stored.float()
    lo, hi = ranges[..., 0].float(), ranges[..., 1].float()
    if segments is None:
        lo, hi = lo[..., None], hi[..., None]
    else:
        lo, hi = lo[segments], hi[segments]
    return torch.lerp(lo, hi, stored.float() / 255.0)


# -- conversion ---------------------------------------------------------------------------------
def compact(syn, *, topk: int | None = None, dtype: str | None = None,
            threshold: float | None = None, edge_dtype: str = "float16"):
    """A compact copy of a summary (the input is left as it is).

    Recommender summaries (any with ``modality == "recsys"``): keep the ``topk`` largest entries
    per user (``None``: every non-zero) with values as ``dtype`` (default ``float16``).
    Graph summaries (``graph``: one graph for node classification; ``graphs``: a set of small
    graphs for graph classification): features as ``dtype`` (default ``float16``), the
    adjacency with entries below ``threshold`` (default: the summary's own) dropped, edge
    weights as ``edge_dtype`` (``binary`` for DosCond's hard 0/1 graphs). IT-GAN summaries
    (``itgan``: latents + generator): the generated images as a ``pixels`` summary at ``dtype``
    (default float32; ``storage`` of image summaries), whose bytes are the images and labels
    alone. The copy keeps the source's
    metadata (method, parameters, seed...) and records ``compacted_from`` (its kind and stored
    bytes) and ``compact`` (these options).
    """
    from .synsets.base import SyntheticSet

    if not isinstance(syn, SyntheticSet):
        raise ConfigError(f"compact needs a summary, got {type(syn).__name__}")
    modality = syn.info.modality
    if modality == "recsys":
        if threshold is not None:
            raise ConfigError("threshold is for graph summaries; recommender rows take topk")
        from .synsets.compact_users import CompactUserSet

        with torch.no_grad():
            rows = syn.materialize()[0].detach().float().cpu()
        out = CompactUserSet.from_rows(syn.info, rows, topk=topk, dtype=dtype or "float16",
                                       label_format=syn.label_format)
    elif modality == "graph" and getattr(syn, "kind", None) in ("graph", "compact-graph"):
        if topk is not None:
            raise ConfigError("topk is for recommender summaries; graphs take threshold")
        from .synsets.compact_graph import CompactGraphSet

        out = CompactGraphSet.from_graph(syn, dtype=dtype or "float16", threshold=threshold,
                                         edge_dtype=edge_dtype)
    elif modality == "graph" and getattr(syn, "kind", None) in ("graphs", "compact-graphs"):
        if topk is not None:
            raise ConfigError("topk is for recommender summaries; graphs take threshold")
        from .synsets.compact_graph import CompactGraphBatchSet

        out = CompactGraphBatchSet.from_graphs(syn, dtype=dtype or "float16", threshold=threshold,
                                               edge_dtype=edge_dtype)
    elif getattr(syn, "kind", None) == "itgan":
        if topk is not None or threshold is not None:
            raise ConfigError("an IT-GAN summary converts to its generated images: dtype only")
        out = syn.to_pixels()  # the images alone, without latents and generator
        if dtype not in (None, "float32"):
            out.set_storage(check_dtype(dtype, PIXEL_DTYPES))
    else:
        raise ConfigError(f"no compact storage for {syn.kind!r} summaries of {modality} data "
                          f"(recommender rows, graphs and IT-GAN summaries have "
                          f"one)")
    out.meta = {k: v for k, v in syn.meta.items()}
    out.meta["compacted_from"] = {"kind": syn.kind, "stored_bytes": int(syn.stored_bytes()),
                                  **({"compacted_from": syn.meta["compacted_from"]}
                                     if "compacted_from" in syn.meta else {})}
    out.meta["compact"] = out.config()
    out.preprocess = dict(syn.preprocess)
    return out


def bytes_breakdown(syn) -> dict[str, Any]:
    """What a summary stores, part by part, in bytes (recommender rows and graphs have their own
    ``bytes_breakdown``; other summaries: one entry per tensor as saved, at the storage
    precision: uint8 data as codes plus their ``q.lo`` / ``q.hi`` ranges)."""
    own = getattr(syn, "bytes_breakdown", None)
    if callable(own):
        return own()
    return {k: nbytes(v) for k, v in syn._stored_state().items()}
