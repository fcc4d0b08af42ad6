"""DM — Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV'23.

    min_S  sum_c || E_{x~T_c} phi_theta(A_w(x)) - E_{s~S_c} phi_theta(A_w(s)) ||^2,
    theta ~ P_theta (a fresh randomly initialised ConvNet every iteration), A_w siamese DSA.

Published defaults: 20,000 iterations, SGD on pixels lr 1 (momentum 0.5), batch_real 256 per
class, real initialisation, DSA ``color_crop_cutout_flip_scale_rotate``. Presets ``cpu-200`` /
``cpu-1000`` only shorten the run. With instance norm (or no norm) all classes share one batched
forward, which is exact; with batch norm each class is embedded separately as in the reference.
"""
from __future__ import annotations

import dataclasses

import torch

from ..models import create_model, has_batchnorm
from ..objectives import class_means, mean_embedding_distance
from ..runtime import autocast
from .base import DISTILLERS, Distiller


@DISTILLERS.register("dm")
@dataclasses.dataclass(kw_only=True)
class DM(Distiller):
    name = "dm"
    presets = {"cpu-200": {"iterations": 200}, "cpu-1000": {"iterations": 1000},
               "tiny": {"iterations": 3, "batch_real": 16}}

    iterations: int = 20000
    lr_data: float = 1.0

    def step(self, real, syn):
        k, dev = real.info.num_classes, self.device_
        net = create_model(self.model, real.info, generator=self.gen_, device=dev)
        net.train().requires_grad_(False)
        x_syn, _ = syn.materialize()
        ids = syn.class_ids
        xr, xs, real_ids, syn_ids = [], [], [], []
        for c in range(k):  # one siamese augmentation per class, as in the reference
            p = self.sample_augment(real)
            xr.append(self.augment(real.sample_class(c, self.batch_real, self.gen_).to(dev), p))
            sel = torch.nonzero(ids == c).flatten()
            xs.append(self.augment(x_syn[sel], p))
            real_ids.append(torch.full((xr[-1].shape[0],), c, device=dev))
            syn_ids.append(ids[sel])
        with autocast(dev, self.precision):
            if has_batchnorm(net):
                with torch.no_grad():
                    mr = torch.stack([net.embed(x).float().mean(0) for x in xr])
                ms = torch.stack([net.embed(x).float().mean(0) for x in xs])
            else:
                with torch.no_grad():
                    mr = class_means(net.embed(torch.cat(xr)).float(), torch.cat(real_ids), k)
                ms = class_means(net.embed(torch.cat(xs)).float(), torch.cat(syn_ids), k)
        loss = mean_embedding_distance(mr, ms)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        return {"loss": float(loss.detach())}
