"""Expert trajectories for the trajectory-matching family (MTT, TESLA, later HaBa).

An *expert* is a network trained on the real data with plain SGD; its *trajectory* is its flat
parameter vector after every epoch (epoch 0 = the initialisation), a ``[train_epochs + 1, P]``
float32 tensor. Published settings (Cazenavette et al., CVPR'22, ``buffer.py``): 100 experts x 50
epochs, SGD lr 0.01 without momentum or weight decay, batch 256, DSA, no lr decay.

Trajectories are cached under ``cache_root()/experts/<key>/`` where the key hashes the dataset
(name, shape, normalization, ZCA, train size and a fingerprint of its pixels), the model and every
training setting except ``num_experts``: expert ``i`` is trained from its own generator
(``seed``, ``i``), so asking for more experts later extends the same cache and every run that
asks for the same settings reuses it. Each finished expert is one safetensors file written
atomically (no pickle: a shared cache is safe to load); an interrupted expert keeps a partial
state (``checkpoint.save_state``) after every epoch and resumes from it (exactly, since plain SGD
without momentum has no optimizer state). ``workers > 1`` trains missing experts in parallel
worker processes; under a ``torch.distributed`` process group they are divided over the ranks
(``load_experts``); ``fused`` trains them with the fused CPU kernels (the same function). Training itself is ``train.train_model`` (the library's one routine);
trajectories are recorded through its ``on_epoch`` callback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import checkpoint as ckpt
from . import dist
from .augment import DEFAULT_STRATEGY, DSA
from .data.base import RealData
from .data.files import cache_root
from .errors import ConfigError, SummaryFormatError
from .models import create_model
from .runtime import check_precision, derive_seed, make_generator, resolve_device
from .train import train_model

EXPERTS_DIR = "experts"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExpertConfig:
    """How experts are trained (the reference ``buffer.py`` names and defaults)."""

    model: str = "convnet"
    num_experts: int = 100
    train_epochs: int = 50
    lr_teacher: float = 0.01
    mom: float = 0.0
    l2: float = 0.0
    batch_train: int = 256
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self):
        check_precision(self.precision)
        for k in ("num_experts", "train_epochs", "batch_train"):
            if getattr(self, k) < 1:
                raise ConfigError(f"expert setting {k} must be >= 1, got {getattr(self, k)}")
        if self.lr_teacher <= 0:
            raise ConfigError(f"lr_teacher must be > 0, got {self.lr_teacher}")

    def key_settings(self) -> dict[str, Any]:
        """Everything that changes a trajectory (``num_experts`` does not)."""
        d = dataclasses.asdict(self)
        d.pop("num_experts")
        return d


#: Named expert presets. ``cpu`` is the CPU budget (2 experts x 3 epochs instead of 100 x 50; an
#: epoch of Fashion-MNIST costs minutes on 2 cores); ``tiny`` is for tests on the digits data.
EXPERT_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"num_experts": 2, "train_epochs": 3},
    "tiny": {"num_experts": 2, "train_epochs": 3, "batch_train": 64},
}


def data_fingerprint(real: RealData) -> str:
    x = real.train.x
    step = max(1, x.shape[0] // 512)
    sample = x[::step].detach().double().cpu()
    blob = json.dumps([real.info.name, list(real.info.shape), real.info.num_classes,
                       len(real.train), list(real.info.mean), list(real.info.std), real.info.zca,
                       round(float(sample.sum()), 4), round(float((sample ** 2).sum()), 4),
                       int(real.train.y.sum())])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def expert_dir(real: RealData, cfg: ExpertConfig, root: str | os.PathLike | None = None) -> Path:
    blob = json.dumps({"data": data_fingerprint(real), **cfg.key_settings()}, sort_keys=True)
    key = f"{real.info.name}-{cfg.model}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"
    return Path(root) if root is not None else cache_root() / EXPERTS_DIR / key


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


def _expert_file(d: Path, i: int) -> Path:
    return d / f"expert_{i:04d}.safetensors"


def _atomic_save(trajectory: torch.Tensor, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({"trajectory": trajectory.contiguous()}, str(tmp))
    os.replace(tmp, path)


def train_expert(real: RealData, cfg: ExpertConfig, index: int, d: Path, *, device=None,
                 fused: bool = False,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train expert ``index`` (or finish it from its partial state); returns its file."""
    out = _expert_file(d, index)
    legacy = d / f"expert_{index:04d}.pt"  # caches written before safetensors
    if not out.exists() and legacy.exists():
        _atomic_save(torch.load(legacy, map_location="cpu", weights_only=True), out)
    if out.exists():
        return out
    dev = resolve_device(device)
    partial = f"expert_{index:04d}.partial"
    gen = make_generator(derive_seed(cfg.seed, index))
    net = create_model(cfg.model, real.info, generator=gen, fused=fused)
    snaps = [flat_parameters(net)]
    if ckpt.exists(d, partial) and cfg.mom == 0:  # SGD without momentum: resuming is exact
        st = ckpt.load_state(d, partial)
        net.load_state_dict(st["model"])
        gen.set_state(st["generator"])
        snaps = list(st["trajectory"])
    net = net.to(dev)
    done = len(snaps) - 1
    dsa = DSA.for_data(real.info, cfg.dsa_strategy) if cfg.dsa else None
    tr = real.train.to(dev)

    def record(ep: int, loss: float) -> None:
        snaps.append(flat_parameters(net))
        if len(snaps) - 1 < cfg.train_epochs:
            ckpt.save_state({"model": {k: v.cpu() for k, v in net.state_dict().items()},
                             "generator": gen.get_state(), "trajectory": torch.stack(snaps)},
                            d, partial)
        if on_epoch is not None:
            on_epoch({"expert": index, "epoch": len(snaps) - 1, "loss": loss})

    if done < cfg.train_epochs:
        train_model(net, tr.x, tr.y, epochs=cfg.train_epochs - done, generator=gen,
                    lr=cfg.lr_teacher, momentum=cfg.mom, weight_decay=cfg.l2,
                    batch_size=cfg.batch_train, decay_at=None, dsa=dsa,
                    precision=cfg.precision, on_epoch=record)
    _atomic_save(torch.stack(snaps), out)
    for f in d.glob(f"{partial}*"):
        f.unlink(missing_ok=True)
    return out


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _worker_train(real: RealData, cfg: ExpertConfig, index: int, d: str, device, fused) -> str:
    return str(train_expert(real, cfg, index, Path(d), device=device, fused=fused))


class ExpertTrajectories:
    """The cached trajectories of one (dataset, model, settings): ``len()`` experts, each loaded
    lazily (memory-mapped) as a ``[train_epochs + 1, P]`` tensor."""

    def __init__(self, directory: Path, cfg: ExpertConfig, num_params: int):
        self.directory, self.cfg, self.num_params = directory, cfg, num_params

    def __len__(self) -> int:
        return self.cfg.num_experts

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(f"expert {i} out of range (0..{len(self) - 1})")
        with safe_open(str(_expert_file(self.directory, i)), "pt") as f:
            t = f.get_tensor("trajectory")
        self._check(i, t.shape)
        return t

    def _check(self, i: int, shape) -> None:
        if tuple(shape) != (self.cfg.train_epochs + 1, self.num_params):
            raise SummaryFormatError(f"{_expert_file(self.directory, i)} holds {tuple(shape)}, "
                                     f"expected {(self.cfg.train_epochs + 1, self.num_params)}; "
                                     f"delete it to retrain")

    def params_at(self, i: int, epoch: int) -> torch.Tensor:
        """Expert ``i``'s parameters after ``epoch`` epochs (reads that row only)."""
        if not 0 <= i < len(self):
            raise IndexError(f"expert {i} out of range (0..{len(self) - 1})")
        with safe_open(str(_expert_file(self.directory, i)), "pt") as f:
            sl = f.get_slice("trajectory")
            self._check(i, sl.get_shape())
            return sl[epoch:epoch + 1][0].clone()


def load_experts(real: RealData, cfg: ExpertConfig, *, device=None, workers: int = 1,
                 fused: bool = False, root: str | os.PathLike | None = None, train: bool = True,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> ExpertTrajectories:
    """The experts for ``(real, cfg)``: cached ones are reused, missing ones trained (unless
    ``train=False``, which raises instead), in ``workers`` parallel processes when > 1.

    Under an initialized process group (torchrun) the missing experts are divided over the
    ranks (expert ``missing[j]`` on rank ``j % world_size``); each rank writes its own expert
    files (one file per expert, written atomically: ranks never write the same file), waits for
    the others, and a file a rank still lacks afterwards (ranks without a shared filesystem) is
    sent to it by a rank that has it. Every rank then holds the full set; an expert's file is the
    same whichever rank trained it (its own generator, ``derive_seed(seed, i)``)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    d = expert_dir(real, cfg, root)
    d.mkdir(parents=True, exist_ok=True)
    meta = d / "experts.json"
    if not meta.exists():  # (atomic: several ranks may write it at once)
        tmp = d / f"experts.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"dataset": real.info.name, "data": data_fingerprint(real),
                                   **cfg.key_settings()}, indent=2))
        os.replace(tmp, meta)
    missing = [i for i in range(cfg.num_experts) if not _expert_file(d, i).exists()]
    if dist.is_distributed():  # the union over ranks: every rank divides the same list
        missing = sorted({i for m in dist.all_gather_objects(missing) for i in m})
        mine = missing[dist.rank()::dist.world_size()]
    else:
        mine = missing
    if missing and not train:
        raise FileNotFoundError(f"{len(missing)} of {cfg.num_experts} experts missing in {d}")
    if workers > 1 and len(mine) > 1:
        import multiprocessing as mp
        threads = max(1, torch.get_num_threads() // workers)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as ex:
            futs = [ex.submit(_worker_train, real, cfg, i, str(d), device, fused) for i in mine]
            for f in futs:
                f.result()
                if on_epoch is not None:
                    on_epoch({"expert_done": True})
    else:
        for i in mine:
            train_expert(real, cfg, i, d, device=device, fused=fused, on_epoch=on_epoch)
    if dist.is_distributed() and missing:
        _share_experts(d, missing)
    num_params = sum(p.numel() for p in create_model(cfg.model, real.info).parameters())
    return ExpertTrajectories(d, cfg, num_params)


def _share_experts(d: Path, indices: list[int]) -> None:
    """After every rank trained its share: each expert in ``indices`` that some rank lacks (no
    shared filesystem) is broadcast from the first rank that has it, and written there."""
    import torch.distributed as tdist

    dist.barrier()  # every rank's files are written (on a shared filesystem: all present now)
    have = dist.all_gather_objects([i for i in indices if _expert_file(d, i).exists()])
    for i in indices:
        holders = [r for r, h in enumerate(have) if i in h]
        if len(holders) == len(have):
            continue
        if not holders:
            raise SummaryFormatError(f"expert {i} was trained by no rank ({d})")
        box = [None]
        if dist.rank() == holders[0]:
            with safe_open(str(_expert_file(d, i)), "pt") as f:
                box[0] = f.get_tensor("trajectory")
        tdist.broadcast_object_list(box, src=holders[0])
        if not _expert_file(d, i).exists():
            _atomic_save(box[0], _expert_file(d, i))
