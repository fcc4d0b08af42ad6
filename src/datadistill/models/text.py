"""Text classifiers over embedded sequences ``[B, max_len, embed_dim]`` (``data/text.py``).

The summary and the real data are both sequences of token embeddings in the frozen table of the
dataset's encoder, so these networks start after the embedding lookup (as in Sucholutsky &
Schonlau 2021, where the distilled data are embedding matrices). Sentence-embedding datasets
(``*-minilm``, shape ``[384]``) use the ``mlp``.
"""
from __future__ import annotations

import torch
from torch import nn

from . import MODELS


@MODELS.register("textcnn")
class TextCNN(nn.Module):
    """Kim (2014)'s CNN for sentence classification, small: 1-D convolutions of widths
    ``widths`` (``filters`` each, ReLU) over the embedded sequence, max-over-time pooling,
    concatenated, then a linear classifier (no dropout: the function is deterministic)."""

    modality = "text"

    def __init__(self, info, *, widths: tuple[int, ...] = (3, 4, 5), filters: int = 64):
        super().__init__()
        length, dim = info.shape
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, min(w, length), padding=0) for w in widths)
        self.feature_dim = filters * len(widths)
        self.classifier = nn.Linear(self.feature_dim, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # [B, dim, length]
        return torch.cat([torch.relu(c(h)).amax(dim=2) for c in self.convs], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@MODELS.register("boe-mlp")
class BagOfEmbeddingsMLP(nn.Module):
    """Bag of embeddings: the mean of the sequence's token embeddings (padding positions are
    zero vectors and count, for real and synthetic sequences alike), then an MLP
    (``width``-``width``, ReLU) and a linear classifier."""

    modality = "text"

    def __init__(self, info, *, width: int = 128):
        super().__init__()
        dim = info.shape[-1]
        self.body = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.feature_dim = width
        self.classifier = nn.Linear(width, info.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.mean(dim=1) if x.dim() == 3 else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
