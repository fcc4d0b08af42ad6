"""Finding dataset files on disk, or downloading them with checksum verification."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .base import DatasetNotFoundError

#: Standard places searched after ``--data-dir`` (``{name}`` is the dataset name).
STANDARD_DIRS = (
    "$DATADISTILL_DATA/{name}",
    "$DATADISTILL_CACHE/{name}",
    "~/.cache/datadistill/{name}",
    "/usr/share/datasets/{name}",  # Debian: apt-get install dataset-fashion-mnist
)


def cache_root() -> Path:
    """Where downloads and cached references go: ``$DATADISTILL_CACHE`` or ~/.cache/datadistill."""
    return Path(os.environ.get("DATADISTILL_CACHE", "~/.cache/datadistill")).expanduser()


def candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    out: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        out += [d, d / name]
    for pat in STANDARD_DIRS:
        var = pat.split("/")[0][1:] if pat.startswith("$") else None
        if var and not os.environ.get(var):
            continue
        out.append(Path(os.path.expandvars(pat.format(name=name))).expanduser())
    return out


def find_files(name: str, filenames: list[str], data_dir) -> Path | None:
    """The first candidate directory holding every file (plain or ``.gz``), else None."""
    for d in candidate_dirs(name, data_dir):
        if all((d / f).exists() or (d / (f + ".gz")).exists() for f in filenames):
            return d
    return None


def resolve(d: Path, filename: str) -> Path:
    p = d / filename
    return p if p.exists() else d / (filename + ".gz")


def file_hash(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return file_hash(path, "md5")


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its MD5 (upstream publishes MD5s)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, out)
        got = md5sum(Path(tmp))
        if got != md5:
            raise IOError(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def fetch(name: str, files: dict[str, tuple[str, str]], data_dir, download_ok: bool,
          how_to: str) -> Path:
    """Locate ``files`` ({filename: (url, md5)}) or download them into the cache directory.

    Raises DatasetNotFoundError with ``how_to`` (how to get the files by hand) when they are
    missing and cannot be downloaded.
    """
    found = find_files(name, list(files), data_dir)
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
    if not download_ok:
        raise DatasetNotFoundError(f"{name}: files {sorted(files)} not found (looked in {looked}); {how_to}")
    target = Path(data_dir).expanduser() if data_dir else cache_root() / name
    try:
        for fname, (url, md5) in files.items():
            if not (target / fname).exists():
                download(url, target / fname, md5)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DatasetNotFoundError(
            f"{name}: files not found (looked in {looked}) and the download failed ({e}); {how_to}"
        ) from e
    return target
