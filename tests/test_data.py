import gzip
import pickle
import struct
import urllib.error

import numpy as np
import pytest
import torch

from conftest import FASHION_DIR
from datadistill.data import (DataFormatError, DatasetNotFoundError, load_dataset)
from datadistill.data import files as files_mod
from datadistill.registry import UnknownNameError


def test_digits_splits(digits):
    info = digits.info
    assert info.name == "digits" and info.shape == (1, 8, 8) and info.num_classes == 10
    assert not info.flip
    n = len(digits.train) + len(digits.val)
    assert n + len(digits.test) == 1797
    assert abs(len(digits.val) / n - 0.1) < 0.01
    # validation is carved from train: no training row appears in validation
    tr = {tuple(r.tolist()) for r in digits.train.x.flatten(1)}
    dup = sum(tuple(r.tolist()) in tr for r in digits.val.x.flatten(1))
    assert dup <= 2  # the digits data has a couple of exact duplicate images
    assert abs(float(digits.train.x.mean())) < 0.05
    # the validation split is fixed whatever the user's seed
    again = load_dataset("digits")
    assert torch.equal(again.val.y, digits.val.y) and torch.equal(again.val.x, digits.val.x)
    assert sorted(digits.class_counts()) == sorted(digits.class_counts()) and min(digits.class_counts()) > 100


def test_unknown_dataset_lists_known():
    with pytest.raises(UnknownNameError, match="known datasets: .*digits.*fashion-mnist"):
        load_dataset("imagenet-9000")


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_idx_loader_from_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 6)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (60, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    d = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert d.info.shape == (1, 28, 28) and len(d.train) + len(d.val) == 60 and len(d.test) == 20
    assert d.info.mean == (0.1307,)  # the published normalization
    # a corrupted IDX file gives a clear error
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x63abc"))
    with pytest.raises(DataFormatError, match="header says"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_missing_files_without_network(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("mnist", data_dir=tmp_path, download=False)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(files_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed.*no network"):
        load_dataset("cifar10", data_dir=tmp_path / "c")


def test_download_checksum_verified(tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(files_mod.urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(b"not the real file"))
    with pytest.raises(OSError, match="checksum mismatch"):
        files_mod.download("http://x/y", tmp_path / "y", md5="0" * 32)
    assert not (tmp_path / "y").exists()  # nothing half-written is left
    good = files_mod.hashlib.md5(b"not the real file").hexdigest()
    assert files_mod.download("http://x/y", tmp_path / "y", md5=good).read_bytes() == b"not the real file"


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles(tmp_path, name):
    ten = name == "cifar10"
    d = tmp_path / ("cifar-10-batches-py" if ten else "cifar-100-python")
    d.mkdir()
    rng = np.random.default_rng(0)
    k = 10 if ten else 100
    key = "labels" if ten else "fine_labels"
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if ten else ["train", "test"]
    for f in files:
        n = 200 if f == "train" else 20 if ten else 100
        with open(d / f, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         key: list(np.arange(n) % k)}, fh)
    meta, names_key = ("batches.meta", "label_names") if ten else ("meta", "fine_label_names")
    with open(d / meta, "wb") as fh:
        pickle.dump({names_key: [f"c{i}" for i in range(k)]}, fh)
    real = load_dataset(name, data_dir=tmp_path, download=False)
    assert real.info.shape == (3, 32, 32) and real.info.class_names[3] == "c3"
    assert real.info.num_classes == k
    assert len(real.train) + len(real.val) == (100 if ten else 200)


def test_every_registered_dataset_fails_clearly_when_absent(tmp_path):
    """The loader contract: with no files and no download, a DatasetNotFoundError that says
    where to get the data (embedded datasets load instead)."""
    from datadistill.data import DATASETS
    for name in DATASETS.names():
        try:
            real = load_dataset(name, data_dir=tmp_path / name, download=False)
        except DatasetNotFoundError as e:
            assert name.split("-")[0].lower() in str(e).lower() or "data" in str(e).lower()
            continue
        assert real.info.num_classes >= 2, name  # embedded (digits)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_standard_location():
    real = load_dataset("fashion-mnist", download=False)
    assert (len(real.train), len(real.val), len(real.test)) == (54000, 6000, 10000)
    assert real.info.shape == (1, 28, 28) and real.info.class_names[0] == "T-shirt/top"
    assert real.info.flip


def test_npz_bring_your_own(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, x_train=rng.integers(0, 255, (40, 10, 10, 3)), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 255, (8, 10, 10, 3)), y_test=np.arange(8) % 4)
    real = load_dataset(str(p))
    assert real.info.name == "mine" and real.info.shape == (3, 10, 10) and real.info.num_classes == 4
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4, int))
    with pytest.raises(DataFormatError, match=r"lacks keys \['x_test', 'y_test'\]"):
        load_dataset(str(bad))
    np.savez(bad, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(3, int),
             x_test=np.zeros((2, 5, 5)), y_test=np.zeros(2, int))
    with pytest.raises(DataFormatError, match="one label per x_train row"):
        load_dataset(str(bad))
    np.savez(bad, x_train=np.zeros((4, 5, 5)), y_train=np.arange(4) % 2,
             x_test=np.zeros((2, 6, 6)), y_test=np.zeros(2, int))
    with pytest.raises(DataFormatError, match="differ"):
        load_dataset(str(bad))
    x = np.zeros((4, 5, 5))
    x[0, 0, 0] = np.nan
    np.savez(bad, x_train=x, y_train=np.arange(4) % 2, x_test=np.zeros((2, 5, 5)), y_test=np.zeros(2, int))
    with pytest.raises(DataFormatError, match="NaN"):
        load_dataset(str(bad))
    with pytest.raises(DatasetNotFoundError):
        load_dataset(str(tmp_path / "missing.npz"))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "pets" / c / f"{i}.png")
    real = load_dataset(str(tmp_path / "pets"))
    assert real.info.class_names == ("cat", "dog") and real.info.shape == (3, 12, 12)
    assert len(real.test) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no class subfolders"):
        load_dataset(str(tmp_path / "empty"))


def test_zca_whitens_and_is_stored(digits):
    z = load_dataset("digits", zca=True)
    assert z.info.zca and z.zca is not None
    x = z.train.x.flatten(1)
    cov = torch.cov(x.T)
    # ZCA decorrelates: off-diagonal mass shrinks a lot relative to the raw data
    raw = torch.cov(digits.train.x.flatten(1).T)
    off = lambda c: (c - torch.diag(torch.diag(c))).abs().mean() / torch.diag(c).abs().mean()
    assert off(cov) < 0.5 * off(raw)
    # the same transform applied to raw test data reproduces the whitened test split
    assert torch.allclose(z.zca(digits.test.x), z.test.x, atol=1e-4)
    assert z.info.extra["zca_mode"] == "kornia"


def test_zca_modes():
    """Issue 16, lead 2: the default whitening is MTT/TESLA's (kornia ZCAWhitening(eps) on raw
    [0, 1] pixels: unbiased covariance, absolute eps) while the transform takes the library's
    normalized images; "kip" keeps the former KIP-style one (biased covariance, eps x the mean
    eigenvalue, on the data as given). The fixture check against kornia is in
    tests/test_parity_mtt.py."""
    from datadistill.data.images import ImageArrays, build
    from datadistill.data.zca import ZCA
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(40, 2, 3, 3, generator=g, dtype=torch.float64)
    mean, std = (0.4, 0.6), (0.2, 0.3)
    norm = (raw - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    # kornia mode on normalized input == the same fit on the raw pixels
    on_raw = ZCA.fit(raw, 0.1)(raw.float())
    folded = ZCA.fit(norm, 0.1, pixel_std=std)(norm.float())
    torch.testing.assert_close(folded, on_raw, rtol=1e-4, atol=1e-4)
    # ... whose formula is (x - m) U (S + eps)^-1/2 U^T with S of the unbiased covariance
    flat = raw.flatten(1)
    s, u = torch.linalg.eigh(torch.cov(flat.T))
    ref = (flat - flat.mean(0)) @ u @ torch.diag((s.clamp_min(0) + 0.1).rsqrt()) @ u.T
    torch.testing.assert_close(on_raw.flatten(1).double(), ref, rtol=1e-4, atol=1e-4)
    # kip mode: biased covariance, eps relative to the mean eigenvalue (scale-free)
    c = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / len(flat)
    s, u = torch.linalg.eigh(c)
    s = s.clamp_min(0)
    ref = (flat - flat.mean(0)) @ u @ torch.diag((s + 0.1 * s.mean()).rsqrt()) @ u.T
    kip = ZCA.fit(raw, 0.1, mode="kip")
    torch.testing.assert_close(kip(raw.float()).flatten(1).double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ZCA.fit(7 * raw, 0.1, mode="kip")(7 * raw.float()), kip(raw.float()),
                               rtol=1e-4, atol=1e-4)
    # empty splits (val_fraction=0) pass through; a mode is recorded; unknown modes are errors
    assert ZCA.fit(raw, 0.1)(raw[:0].float()).shape == (0, 2, 3, 3)
    arrays = ImageArrays(raw.float().numpy(), np.arange(40) % 2, raw[:6].float().numpy(),
                         np.arange(6) % 2)
    real = build("zca-modes", arrays, val_fraction=0.0, zca=True, zca_mode="kip")
    assert len(real.val) == 0 and real.info.extra["zca_mode"] == "kip"
    with pytest.raises(ValueError, match="zca_mode"):
        build("zca-modes", arrays, zca=True, zca_mode="absolute")
