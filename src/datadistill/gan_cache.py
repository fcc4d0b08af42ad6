"""The GAN behind IT-GAN: trained once on the real data, cached, reused (like ``experts.py``).

IT-GAN (Zhao & Bilen, 2022) starts from a pre-trained class-conditional GAN (the authors:
BigGAN trained on CIFAR-10/100 with its own recipe). Here the GAN is ``models/gan.py``'s small
DCGAN-style pair trained with the non-saturating loss (D: softplus(-D(x)) + softplus(D(G(z)));
G: softplus(-D(G(z)))), Adam(lr, betas (0.5, 0.999)) for both, one D step per G step, batches
of ``batch`` real images drawn as shuffled epochs, fake images conditioned on the real batch's
labels. Real images are mapped from the dataset's normalized space to the GAN's [-1, 1].

Everything is drawn from one ``torch.Generator`` seeded with ``seed`` (initialisations, batches,
latents), so a configuration trains the same GAN every time. The cache lives under
``cache_root()/gans/<dataset>-<hash>/`` where the hash covers the data fingerprint (as for
experts) and every ``GANConfig`` field: ``generator.safetensors`` (the generator's state dict,
the only thing IT-GAN needs) and ``gan.json`` (settings, losses, CPU and wall seconds). An
interrupted training keeps a partial state (``checkpoint.save_state``: both networks, both
optimizers, the generator state, the step) every ``save_every`` steps and resumes from it exactly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import checkpoint as ckpt
from .data.base import RealData
from .data.files import cache_root
from .errors import ConfigError
from .experts import data_fingerprint
from .models.gan import Discriminator, Generator, init_gan, to_gan_space
from .runtime import derive_seed, make_generator, resolve_device

GANS_DIR = "gans"
GENERATOR_FILE, META_FILE, PARTIAL = "generator.safetensors", "gan.json", "partial"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GANConfig:
    """How the GAN is built and trained (every field is part of the cache key)."""

    dim_z: int = 128
    width: int = 32
    steps: int = 5000
    batch: int = 64
    lr: float = 2e-4
    seed: int = 0

    def __post_init__(self):
        for k in ("dim_z", "width", "steps", "batch"):
            if getattr(self, k) < 1:
                raise ConfigError(f"GAN setting {k} must be >= 1, got {getattr(self, k)}")
        if self.lr <= 0:
            raise ConfigError(f"GAN lr must be > 0, got {self.lr}")

    def key_settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gan_dir(real: RealData, cfg: GANConfig, root: str | os.PathLike | None = None) -> Path:
    blob = json.dumps({"data": data_fingerprint(real), **cfg.key_settings()}, sort_keys=True)
    key = f"{real.info.name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"
    return Path(root) if root is not None else cache_root() / GANS_DIR / key


def build_generator(info, cfg: GANConfig) -> Generator:
    return Generator(info, dim_z=cfg.dim_z, width=cfg.width)


def _check_data(real: RealData) -> None:
    if real.info.modality != "image" or len(real.info.shape) != 3:
        raise ConfigError(f"IT-GAN's GAN needs image data, got {real.info.modality} "
                          f"{tuple(real.info.shape)}")
    if real.zca is not None:
        raise ConfigError("IT-GAN's GAN generates pixels; ZCA-whitened data is not supported "
                          "(load the dataset without ZCA)")


def train_gan(real: RealData, cfg: GANConfig, d: Path, *, device=None,
              save_every: int = 500,
              on_step: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train (or finish from its partial state) the GAN of ``cfg``; returns the generator file."""
    _check_data(real)
    out = d / GENERATOR_FILE
    if out.exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    gen = make_generator(derive_seed(cfg.seed, 7))  # 7: the GAN's stream
    G = init_gan(build_generator(real.info, cfg), gen)
    D = init_gan(Discriminator(real.info, width=cfg.width), gen)
    G, D = G.to(dev).train(), D.to(dev).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    x_all = to_gan_space(real.train.x, real.info).to(dev)
    y_all = real.train.y.to(dev)
    n = x_all.shape[0]
    bs = min(cfg.batch, n)
    state = {"step": 0, "perm": torch.randperm(n, generator=gen), "pos": 0,
             "loss_d": float("nan"), "loss_g": float("nan"), "cpu_s": 0.0, "wall_s": 0.0}
    if ckpt.exists(d, PARTIAL):
        st = ckpt.load_state(d, PARTIAL)
        G.load_state_dict(st["G"])
        D.load_state_dict(st["D"])
        opt_g.load_state_dict(st["opt_g"])
        opt_d.load_state_dict(st["opt_d"])
        gen.set_state(st["generator"])
        state.update(st["state"])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    cpu_prev, wall_prev = state["cpu_s"], state["wall_s"]

    def save_partial() -> None:
        state["cpu_s"] = cpu_prev + time.process_time() - cpu0
        state["wall_s"] = wall_prev + time.perf_counter() - wall0
        ckpt.save_state({"G": {k: v.cpu() for k, v in G.state_dict().items()},
                         "D": {k: v.cpu() for k, v in D.state_dict().items()},
                         "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                         "generator": gen.get_state(), "state": state}, d, PARTIAL)

    while state["step"] < cfg.steps:
        if state["pos"] + bs > n:  # next epoch
            state["perm"], state["pos"] = torch.randperm(n, generator=gen), 0
        idx = state["perm"][state["pos"]:state["pos"] + bs].to(dev)
        state["pos"] += bs
        x, y = x_all[idx], y_all[idx]
        z = torch.randn(bs, cfg.dim_z, generator=gen).to(dev)
        fake = G(z, y)
        loss_d = F.softplus(-D(x, y)).mean() + F.softplus(D(fake.detach(), y)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(fake, y)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        state["step"] += 1
        state["loss_d"], state["loss_g"] = float(loss_d.detach()), float(loss_g.detach())
        if on_step is not None:
            on_step({"gan_step": state["step"], "gan_steps": cfg.steps,
                     "loss_d": state["loss_d"], "loss_g": state["loss_g"]})
        if state["step"] % save_every == 0 and state["step"] < cfg.steps:
            save_partial()
    cpu_s = cpu_prev + time.process_time() - cpu0
    wall_s = wall_prev + time.perf_counter() - wall0
    tmp = out.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}, str(tmp))
    os.replace(tmp, out)
    (d / META_FILE).write_text(json.dumps({
        "dataset": real.info.name, "data": data_fingerprint(real), **cfg.key_settings(),
        "final_loss_d": state["loss_d"], "final_loss_g": state["loss_g"],
        "cpu_s": round(cpu_s, 3), "wall_s": round(wall_s, 3)}, indent=2))
    for f in d.glob(f"{PARTIAL}*"):
        f.unlink(missing_ok=True)
    return out


def load_generator(real: RealData, cfg: GANConfig, *, device=None, train: bool = True,
                   root: str | os.PathLike | None = None,
                   on_step: Callable[[dict[str, Any]], None] | None = None) -> Generator:
    """The trained generator of ``(real, cfg)`` (eval mode, parameters frozen): loaded from the
    cache, or trained first (unless ``train=False``, which raises ``FileNotFoundError``)."""
    d = gan_dir(real, cfg, root)
    f = d / GENERATOR_FILE
    if not f.exists():
        if not train:
            raise FileNotFoundError(f"no trained GAN in {d}")
        train_gan(real, cfg, d, device=device, on_step=on_step)
    G = build_generator(real.info, cfg)
    G.load_state_dict(load_file(str(f)), strict=True)
    G.eval().requires_grad_(False)
    return G.to(resolve_device(device)) if device is not None else G
