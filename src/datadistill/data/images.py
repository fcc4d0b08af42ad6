"""Image datasets: digits (embedded), MNIST / Fashion-MNIST (IDX), CIFAR-10/100 (pickles),
and bring-your-own ``.npz`` or image folder. Every loader returns raw arrays; ``build`` turns
them into normalized train / validation / test splits."""
from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..registry import Registry
from .base import DATASETS, DataFormatError, DataInfo, DatasetNotFoundError, RealData, Split
from .files import cache_root, fetch, resolve
from .zca import ZCA, ZCA_MODES


@dataclass
class ImageArrays:
    """Raw images as float32 in [0, 1], NCHW, with integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = ()
    flip: bool = True
    mean: tuple[float, ...] | None = None  # published normalization; else computed from train
    std: tuple[float, ...] | None = None


#: name -> loader(data_dir, download) -> ImageArrays
IMAGE_LOADERS: Registry = Registry("image dataset")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataFormatError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataFormatError(f"{path}: header says {dims} but holds {arr.size} bytes")
    return arr.reshape(dims)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_loader(name, base_url, md5s, class_names, flip, mean, std):
    def load(data_dir=None, download=True) -> ImageArrays:
        files = {f + ".gz": (base_url + f + ".gz", md5) for f, md5 in zip(_IDX_FILES, md5s)}
        d = fetch(name, files, data_dir, download,
                  how_to=f"put the four IDX files ({', '.join(_IDX_FILES)}, optionally .gz) in a "
                         f"folder and pass --data-dir, or download them from {base_url}"
                  + (" (Debian: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""))
        xtr, ytr, xte, yte = (_read_idx(resolve(d, f)) for f in _IDX_FILES)
        return ImageArrays(xtr[:, None].astype(np.float32) / 255, ytr.astype(np.int64),
                           xte[:, None].astype(np.float32) / 255, yte.astype(np.int64),
                           class_names, flip, mean, std)
    return load


IMAGE_LOADERS.register("mnist", _idx_loader(
    "mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
    tuple(str(i) for i in range(10)), False, (0.1307,), (0.3081,)))
IMAGE_LOADERS.register("fashion-mnist", _idx_loader(
    "fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
     "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
     "Ankle boot"), True, (0.2861,), (0.3530,)))


@IMAGE_LOADERS.register("digits")
def load_digits(data_dir=None, download=True) -> ImageArrays:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images): the embedded default.
    The test split is a fixed, stratified 30%."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    b = sk_digits()
    x = (b.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = b.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return ImageArrays(xtr, ytr, xte, yte, tuple(str(i) for i in range(10)), flip=False)


def _cifar_loader(name, url, md5, folder, train_files, test_files, label_key, meta_file,
                  names_key, mean, std):
    archive = url.rsplit("/", 1)[1]

    def load(data_dir=None, download=True) -> ImageArrays:
        d = None
        for cand in ([Path(data_dir).expanduser()] if data_dir else []) + \
                [cache_root() / name]:
            for sub in (cand / folder, cand / name / folder, cand):
                if all((sub / f).exists() for f in train_files + test_files):
                    d = sub
                    break
            if d is not None:
                break
        if d is None:
            root = fetch(name, {archive: (url, md5)}, data_dir, download,
                         how_to=f"download {url}, unpack it and pass --data-dir")
            with tarfile.open(root / archive) as t:
                t.extractall(root, filter="data")
            d = root / folder

        def read(files):
            xs, ys = [], []
            for f in files:
                with open(d / f, "rb") as fh:
                    b = pickle.load(fh, encoding="latin1")
                xs.append(np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(b[label_key], dtype=np.int64))
            return np.concatenate(xs).astype(np.float32) / 255, np.concatenate(ys)

        xtr, ytr = read(train_files)
        xte, yte = read(test_files)
        names = ()
        if (d / meta_file).exists():
            with open(d / meta_file, "rb") as fh:
                names = tuple(pickle.load(fh, encoding="latin1")[names_key])
        return ImageArrays(xtr, ytr, xte, yte, names, True, mean, std)
    return load


IMAGE_LOADERS.register("cifar10", _cifar_loader(
    "cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
    [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", "batches.meta",
    "label_names", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)))
IMAGE_LOADERS.register("cifar100", _cifar_loader(
    "cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", ["train"], ["test"],
    "fine_labels", "meta", "fine_label_names",
    (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)))


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataFormatError(f"{what} must be [N,H,W], [N,H,W,C] or [N,C,H,W]; got shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataFormatError(f"{what} contains NaN or inf")
    if x.max(initial=0) > 1.0:  # 0..255 images
        x = x / 255.0
    return x


def load_npz(path, **_) -> ImageArrays:
    """Bring your own: an ``.npz`` with ``x_train, y_train, x_test, y_test``."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"no such file: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several kinds
        raise DataFormatError(f"{path} is not a readable .npz file ({e})") from e
    need = ["x_train", "y_train", "x_test", "y_test"]
    missing = [k for k in need if k not in z.files]
    if missing:
        raise DataFormatError(f"{path} lacks keys {missing}; it has {sorted(z.files)}, needs {need}")
    xtr, xte = _to_nchw(z["x_train"], "x_train"), _to_nchw(z["x_test"], "x_test")
    ytr, yte = z["y_train"], z["y_test"]
    for k, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if y.ndim != 1 or len(y) != len(x):
            raise DataFormatError(f"y_{k} must be 1-D with one label per x_{k} row; "
                                  f"got y_{k} {y.shape} for x_{k} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.min(initial=0) < 0:
            raise DataFormatError(f"y_{k} must hold non-negative integer class indices")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataFormatError(f"x_train examples {xtr.shape[1:]} and x_test {xte.shape[1:]} differ")
    return ImageArrays(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), flip=True)


_IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _read_folder(root: Path):
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataFormatError(f"{root} has no class subfolders (expected one folder per class)")
    xs, ys, size, mode = [], [], None, None
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in _IMG_EXT)
        if not files:
            raise DataFormatError(f"class folder {root / name} holds no images")
        for f in files:
            im = Image.open(f)
            if mode is None:
                mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
                size = im.size
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size)
            a = np.asarray(im, dtype=np.float32) / 255
            xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            ys.append(c)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), tuple(classes)


def load_folder(path, test_fraction: float = 0.2, **_) -> ImageArrays:
    """Bring your own: a folder with one subfolder per class, or ``train/`` and ``test/``
    folders of that form. Without ``test/``, a fixed stratified ``test_fraction`` is held out;
    images are resized to the first image's size."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetNotFoundError(f"no such folder: {root}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        xtr, ytr, names = _read_folder(root / "train")
        xte, yte, names_te = _read_folder(root / "test")
        if names_te != names:
            raise DataFormatError(f"train classes {names} and test classes {names_te} differ")
        return ImageArrays(xtr, ytr, xte, yte, names)
    from sklearn.model_selection import train_test_split

    x, y, names = _read_folder(root)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=0, stratify=y)
    return ImageArrays(xtr, ytr, xte, yte, names)


def build(name: str, raw: ImageArrays, *, val_fraction: float = 0.1, split_seed: int = 0,
          zca: bool = False, zca_reg: float = 0.1, zca_mode: str = "kornia") -> RealData:
    """Normalize, carve the validation split from train (fixed seed), optionally ZCA-whiten
    (fitted on the training split; ``zca_mode``: ``"kornia"``, MTT/TESLA's whitening of the raw
    [0, 1] pixels with absolute ``zca_reg``, or ``"kip"``, KIP-style ``zca_reg`` x the mean
    eigenvalue on the normalized pixels; see ``data/zca.py``)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if zca and zca_mode not in ZCA_MODES:
        raise ValueError(f"unknown zca_mode {zca_mode!r}; known: {', '.join(ZCA_MODES)}")
    ytr = raw.y_train
    k = int(max(ytr.max(initial=-1), raw.y_test.max(initial=-1)) + 1)
    if k < 2:
        raise DataFormatError(f"{name}: need at least 2 classes, found {k}")
    present = np.bincount(ytr, minlength=k)
    if (present == 0).any():
        raise DataFormatError(f"{name}: classes {np.flatnonzero(present == 0).tolist()} have no "
                              "training examples (labels must be 0..K-1)")
    xtr = torch.from_numpy(np.ascontiguousarray(raw.x_train))
    xte = torch.from_numpy(np.ascontiguousarray(raw.x_test))
    if raw.mean is not None:
        mean, std = tuple(raw.mean), tuple(raw.std)
    else:
        mean = tuple(float(v) for v in xtr.mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in xtr.std(dim=(0, 2, 3)).clamp_min(1e-6))
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    xtr, xte = (xtr - m) / s, (xte - m) / s
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(raw.y_test)
    # validation: a fixed, stratified fraction of train, independent of the user's seed
    g = torch.Generator().manual_seed(split_seed)
    val_idx = []
    for c in range(k):
        idx = torch.nonzero(ytr_t == c).flatten()
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[torch.randperm(len(idx), generator=g)[:n_val]])
    val_idx = torch.cat(val_idx).sort().values
    keep = torch.ones(len(ytr_t), dtype=torch.bool)
    keep[val_idx] = False
    train = Split(xtr[keep].contiguous(), ytr_t[keep].contiguous())
    val = Split(xtr[val_idx].contiguous(), ytr_t[val_idx].contiguous())
    test = Split(xte.contiguous(), yte_t.contiguous())
    z = None
    if zca:
        # "kornia": the covariance of the raw pixels (x * std), as the authors' kornia fit
        z = ZCA.fit(train.x, zca_reg, mode=zca_mode,
                    pixel_std=std if zca_mode == "kornia" else None)
        train, val, test = (Split(z(s.x), s.y) for s in (train, val, test))
    names = raw.class_names if len(raw.class_names) == k else tuple(str(i) for i in range(k))
    info = DataInfo(name=name, modality="image", num_classes=k, shape=tuple(train.x.shape[1:]),
                    mean=mean, std=std, class_names=names, flip=raw.flip, zca=zca,
                    extra={"zca_reg": zca_reg, "zca_mode": zca_mode} if zca else {})
    return RealData(info, train, val, test, zca=z)


def _register_image(name: str) -> None:
    def load(data_dir=None, download: bool = True, **build_kw) -> RealData:
        return build(name, IMAGE_LOADERS.get(name)(data_dir=data_dir, download=download), **build_kw)
    load.__doc__ = f"Image dataset {name!r}: " + (IMAGE_LOADERS.get(name).__doc__ or "").strip()
    DATASETS.register(name, load)


for _name in IMAGE_LOADERS.names():
    _register_image(_name)


def load_image_path(path: Path, **build_kw) -> RealData:
    """A path to an ``.npz`` file or an image folder."""
    if path.suffix == ".npz":
        return build(path.stem, load_npz(path), **build_kw)
    if path.is_dir():
        return build(path.name, load_folder(path), **build_kw)
    raise DatasetNotFoundError(f"no such .npz file or image folder: {path}")
