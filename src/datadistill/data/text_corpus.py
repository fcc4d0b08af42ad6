"""Raw text for ``data/text.py``: the tokenizer (``tokenize``, ``TOKEN_RE``), the vocabulary
(``Vocab``), the file readers (TREC, SentEval's SST, a user's CSV/TSV) and the generated toy
corpus. Everything here is strings and token ids; the tensors are ``text_encoders.py``'s.
"""
from __future__ import annotations

import collections
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataFormatError, DatasetNotFoundError
from ..runtime import make_generator

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PAD, UNK = "<pad>", "<unk>"


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it with ``TOKEN_RE``."""
    return TOKEN_RE.findall(text.lower())


@dataclass
class Vocab:
    tokens: list[str]

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, sentences, *, max_vocab: int = 10_000, min_freq: int = 1) -> "Vocab":
        counts = collections.Counter(t for s in sentences for t in tokenize(s))
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + kept[:max(0, max_vocab - 2)])

    def encode(self, sentence: str, max_len: int) -> list[int]:
        ids = [self.index.get(t, 1) for t in tokenize(sentence)][:max_len]
        return ids + [0] * (max_len - len(ids))


# -- readers ---------------------------------------------------------------------------------------
def _read(path: Path, encoding: str = "utf-8") -> str:
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path} is not valid {encoding.upper()} (byte {e.start}: "
                              f"{e.object[e.start:e.start + 1]!r}); re-save it as UTF-8") from None


def read_trec(path: Path) -> tuple[list[str], list[str]]:
    """``COARSE:fine question ...`` lines (the files are latin-1, see PROVENANCE.md)."""
    texts, labels = [], []
    for i, line in enumerate(_read(path, "latin-1").splitlines()):
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        if ":" not in head:
            raise DataFormatError(f"{path}:{i + 1}: expected 'COARSE:fine question', got {line[:40]!r}")
        labels.append(head.split(":")[0])
        texts.append(text.strip())
    return texts, labels


def read_sst(path: Path) -> tuple[list[str], list[str]]:
    """SentEval's ``sentence \\t label`` lines (UTF-8, no header)."""
    texts, labels = [], []
    for i, line in enumerate(_read(path).splitlines()):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep:
            raise DataFormatError(f"{path}:{i + 1}: expected 'sentence<TAB>label'")
        texts.append(text.strip())
        labels.append(label.strip())
    return texts, labels


def read_text_csv(path: Path, *, text_column: str = "text", label_column: str = "label"
                  ) -> tuple[list[str], list[str]]:
    """A user's CSV (``.csv``) or TSV (``.tsv``): UTF-8, a header naming ``text_column`` and
    ``label_column`` (any other columns are ignored)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"no such file: {path}")
    body = _read(path)
    rows = csv.DictReader(io.StringIO(body), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    cols = rows.fieldnames or []
    for want in (text_column, label_column):
        if want not in cols:
            raise DataFormatError(f"{path}: no column {want!r} in the header (columns: "
                                  f"{', '.join(cols) or 'none'}); a text file needs "
                                  f"{text_column!r} and {label_column!r} columns")
    texts, labels = [], []
    for i, r in enumerate(rows):
        t, y = r.get(text_column), r.get(label_column)
        if t is None or y is None or not y.strip():
            raise DataFormatError(f"{path}: row {i + 2} has no {label_column!r} value")
        texts.append(t)
        labels.append(y.strip())
    if not texts:
        raise DataFormatError(f"{path}: no rows")
    return texts, labels


def toy_corpus(n_per_class: int = 40, seed: int = 0):
    """A tiny generated 3-class corpus (tests, the contract test): each class has its own topic
    words mixed with shared filler words."""
    g = make_generator(seed)
    topics = (("goal", "match", "team", "score", "coach"), ("vote", "law", "senate", "party", "tax"),
              ("gene", "cell", "virus", "protein", "lab"))
    filler = ("the", "a", "of", "new", "today", "report", "says", "big", "in", "on")
    texts, labels = [], []
    for c, words in enumerate(topics):
        for _ in range(n_per_class):
            n = int(torch.randint(4, 9, (1,), generator=g))
            toks = [words[int(torch.randint(5, (1,), generator=g))] if float(torch.rand(1, generator=g)) < 0.4
                    else filler[int(torch.randint(10, (1,), generator=g))] for _ in range(n)]
            texts.append(" ".join(toks))
            labels.append(("sports", "politics", "science")[c])
    return texts, labels
