"""Reading a text summary: synthetic embedding sequences decoded to their nearest vocabulary
tokens, and every synthetic example's nearest real training sentences.

A text summary is a ``PixelSet`` in the encoder's space (``data/text.py``): ``[max_len,
embed_dim]`` embedding sequences or ``[384]`` sentence embeddings, with hard or soft labels.
Decoding needs the encoder (the embedding table and vocabulary, or the real sentences), which
the real dataset holds; ``show`` loads it by the summary's dataset name and refuses a table
that is not the summary's (``encoder_sha256``).
"""
from __future__ import annotations

import torch

from ..errors import DataFormatError


def nearest_tokens(x: torch.Tensor, table: torch.Tensor, tokens: list[str]) -> list[list[str]]:
    """Per sequence ``[L, d]`` of ``x``, the vocabulary token whose embedding is nearest
    (Euclidean) to each position; ``<pad>`` positions are dropped."""
    d = torch.cdist(x.detach().float().reshape(-1, x.shape[-1]), table.float())
    idx = d.argmin(1).reshape(x.shape[0], x.shape[1])
    return [[tokens[i] for i in row.tolist() if i != 0] for row in idx]


def sentence_features(x: torch.Tensor) -> torch.Tensor:
    f = x.detach().float()
    f = f.mean(1) if f.dim() == 3 else f.flatten(1)
    return torch.nn.functional.normalize(f, dim=1)


def nearest_sentences(x: torch.Tensor, real, k: int = 1) -> list[list[tuple[str, float]]]:
    """Per synthetic example, the ``k`` real training sentences nearest in the encoder space
    (cosine of sentence embeddings / mean token embeddings), with their similarity."""
    sims = sentence_features(x) @ sentence_features(real.train.x).T
    top = sims.topk(min(k, sims.shape[1]), dim=1)
    texts = real.texts["train"]
    return [[(texts[j], float(s)) for s, j in zip(sv.tolist(), jv.tolist())]
            for sv, jv in zip(top.values, top.indices)]


def describe_text(syn, real, *, per_class: int = 3, k: int = 1) -> list[str]:
    """Lines describing up to ``per_class`` synthetic examples of every class."""
    from ..evaluation.text import check_text_match

    if not hasattr(real, "texts"):
        raise DataFormatError(f"{real.info.name} is not a text dataset")
    check_text_match(syn, real)
    x, y = syn.materialize()
    ids = syn.class_ids
    names = syn.info.class_names or tuple(str(c) for c in range(syn.info.num_classes))
    toks = nearest_tokens(x, real.table, real.vocab.tokens) if real.table is not None else None
    near = nearest_sentences(x, real, k)
    lines = []
    for c in range(syn.info.num_classes):
        sel = torch.nonzero(ids == c).flatten().tolist()[:per_class]
        for n, i in enumerate(sel):
            head = f"[{names[c]} #{n + 1}]"
            if y.dim() == 2:  # soft labels: the learned distribution
                p = torch.softmax(y[i].detach().float(), 0)
                head += " soft label " + ", ".join(f"{names[j]} {float(p[j]):.2f}"
                                                   for j in p.argsort(descending=True)[:3].tolist())
            lines.append(head)
            if toks is not None:
                lines.append("  nearest tokens: " + (" ".join(toks[i]) or "(all <pad>)"))
            for s, sim in near[i]:
                lines.append(f"  nearest real ({sim:.2f}): {s}")
    return lines
