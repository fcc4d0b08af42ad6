import os
from pathlib import Path

# OpenMP threads sleep instead of spinning while waiting: on a shared, oversubscribed 2-core box
# spinning made small ops ~100x slower (must be set before torch loads OpenMP)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# the fused CPU kernel is built once per machine, not once per test's isolated cache
os.environ.setdefault("DATADISTILL_KERNELS", os.path.expanduser("~/.cache/datadistill/kernels"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DATADISTILL_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline copies of public datasets (../shared/data); tests needing them skip without."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set DATADISTILL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    from datadistill.data import load_dataset
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Full-data references and downloads go to a per-test folder, never ~/.cache."""
    monkeypatch.setenv("DATADISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DATADISTILL_DATA", raising=False)
