"""DM — Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV'23.

    min_S  sum_c || E_{x~T_c} phi_theta(A_w(x)) - E_{s~S_c} phi_theta(A_w(s)) ||^2,
    theta ~ P_theta (a fresh randomly initialised ConvNet every iteration), A_w siamese DSA.

Published defaults: 20,000 iterations, SGD on pixels lr 1 (momentum 0.5), batch_real 256 per
class, real initialisation, DSA ``color_crop_cutout_flip_scale_rotate`` (one siamese draw per
class). Presets ``cpu-200`` / ``cpu-1000`` only shorten the run; ``fast-bf16`` adds bf16
autocast, channels-last and ``torch.compile`` (same objective, lower precision).

With instance norm (or no norm) all classes share one batched forward, which is exact; with
batch norm each class is embedded separately as in the reference. The no-grad real forward runs
in chunks of ``RunOptions.chunk`` images (default ``batch_real``: one class per forward, as the
reference), which bounds memory and changes nothing but summation order. One network module is built
in ``setup`` and re-initialised in place from the generator every iteration (the same draws as
building a fresh one), so a compiled forward is reused.
"""
from __future__ import annotations

import dataclasses

import torch

from ..models import has_batchnorm, init_parameters
from ..objectives import class_means, mean_embedding_distance
from ..runtime import autocast
from .base import DISTILLERS
from .image import ImageDistiller


@DISTILLERS.register("dm")
@dataclasses.dataclass(kw_only=True)
class DM(ImageDistiller):
    """Distribution Matching (Zhao & Bilen, WACV'23): min_S sum_c || mean phi(A_w(T_c)) -
    mean phi(A_w(S_c)) ||^2 with phi the embedding of a freshly initialised random network every
    iteration and A_w one siamese DSA draw per class."""

    name = "dm"
    presets = {"cpu-200": {"iterations": 200}, "cpu-1000": {"iterations": 1000},
               "tiny": {"iterations": 3, "batch_real": 16}}

    iterations: int = 20000
    lr_data: float = 1.0

    def setup(self, real, syn):
        super().setup(real, syn)
        run = self.run_
        net = self.make_model(self.model, real.info).requires_grad_(False)
        if run.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net_ = net
        self.per_class_ = has_batchnorm(net)
        self.embed_ = torch.compile(net.embed) if run.compile else net.embed
        self.chunk_ = run.chunk or self.batch_real

    def step(self, real, syn):
        k, dev = real.info.num_classes, self.device_
        init_parameters(self.net_, self.gen_)  # a fresh random network: theta ~ P_theta
        self.net_.train()
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
        fmt = torch.channels_last if self.run_.channels_last else torch.contiguous_format
        embed = lambda x: self.embed_(x.contiguous(memory_format=fmt)).float()  # noqa: E731
        with autocast(dev, self.run_.precision):
            if self.per_class_:
                with torch.no_grad():
                    mr = torch.stack([embed(x).mean(0) for x in xr])
                ms = torch.stack([embed(x).mean(0) for x in xs])
            else:
                with torch.no_grad():
                    xr_all, ids_all = torch.cat(xr), torch.cat(real_ids)
                    emb = torch.cat([embed(xr_all[i:i + self.chunk_])
                                     for i in range(0, xr_all.shape[0], self.chunk_)])
                    mr = class_means(emb, ids_all, k)
                ms = class_means(embed(torch.cat(xs)), torch.cat(syn_ids), k)
        loss = mean_embedding_distance(mr, ms)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        return {"loss": float(loss.detach())}
