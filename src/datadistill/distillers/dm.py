"""DM — Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV'23.

    min_S  sum_c || E_{x~T_c} phi_theta(A_w(x)) - E_{s~S_c} phi_theta(A_w(s)) ||^2,
    theta ~ P_theta (a fresh randomly initialised ConvNet every iteration), A_w siamese DSA.

Published defaults: 20,000 iterations, SGD on pixels lr 1 (momentum 0.5), batch_real 256 per
class, real initialisation, DSA ``color_crop_cutout_flip_scale_rotate`` (one siamese draw per
class). Presets ``cpu-200`` / ``cpu-1000`` only shorten the run. Speed is ``RunOptions``: the
fused kernels (auto on CPU), ``chunk``; ``precision="bf16"`` with ``channels_last`` and
``compile`` is the fastest path on CPU but changes numerics, so it is opt-in.

The synthetic images of all classes go through one forward. Without batch norm (instance
norm, no norm) each example's embedding depends on that example alone, so the no-grad real
forward runs in chunks of ``RunOptions.chunk`` images (default ``batch_real``: one class per
forward), which bounds memory and changes nothing but summation order. With batch norm the
embedding depends on the batch: as in the reference (``main_DM.py``'s ``ConvNetBN`` branch) the
real images of all classes go through one forward and the synthetic images of all classes
through another, so the batch statistics span the classes; ``chunk`` is then ignored (a chunk
would change the function). One network module is built in ``setup`` and re-initialised in
place from the generator every iteration (the same draws as building a fresh one), so a compiled
forward is reused.

Parity: ``tests/test_parity_dc_dm.py`` (``test_dm_matches_reference``,
``test_dm_batchnorm_matches_reference``) compares two iterations with VICO-UoE/DatasetCondensation's
``main_DM.py`` in float64 (instance norm and batch norm): loss, gradient w.r.t. the summary and
the updated summary.
"""
from __future__ import annotations

import dataclasses

import torch

from .. import dist
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
        # with batch norm the real forward is one batch (its statistics span the classes)
        self.chunk_ = None if has_batchnorm(net) else (run.chunk or self.batch_real)
        self.embed_ = torch.compile(net.embed) if run.compile else net.embed

    def step(self, real, syn):
        """One iteration. Under a process group (``dist.py``) the real side is split across
        ranks: every rank draws the same real batches and DSA parameters from the shared
        generator, embeds only its slice of each class's batch, and the per-class embedding sums
        are all-reduced (the counts are the global batch sizes every rank knows); the class
        means, the synthetic side and the update are then the same on every rank. On one process
        the slice is the whole batch. With batch norm the real forward is one batch over all
        classes (its statistics span them), run whole on every rank."""
        k, dev = real.info.num_classes, self.device_
        split = self.chunk_ is not None  # (not under batch norm)
        init_parameters(self.net_, self.gen_)  # a fresh random network: theta ~ P_theta
        self.net_.train()
        x_syn, _ = syn.materialize()
        ids = syn.class_ids
        xr, xs, real_ids, syn_ids = [], [], [], []
        counts = torch.zeros(k, dtype=torch.float32, device=dev)
        for c in range(k):  # one siamese augmentation per class, as in the reference
            p = self.sample_augment(real)
            batch = real.sample_class(c, self.batch_real, self.gen_)
            counts[c] = batch.shape[0]
            mine = batch[dist.shard(batch.shape[0])] if split else batch
            if mine.shape[0]:
                xr.append(self.augment(mine.to(dev), p))
                real_ids.append(torch.full((mine.shape[0],), c, device=dev))
            sel = torch.nonzero(ids == c).flatten()
            xs.append(self.augment(x_syn[sel], p))
            syn_ids.append(ids[sel])
        fmt = torch.channels_last if self.run_.channels_last else torch.contiguous_format
        embed = lambda x: self.embed_(x.contiguous(memory_format=fmt)).float()  # noqa: E731
        with autocast(dev, self.run_.precision):
            with torch.no_grad():
                sums = torch.zeros(k, self.net_.feature_dim, dtype=torch.float32, device=dev)
                if xr:
                    xr_all = torch.cat(xr)
                    chunk = self.chunk_ or xr_all.shape[0]  # batch norm: one forward
                    emb = torch.cat([embed(xr_all[i:i + chunk])
                                     for i in range(0, xr_all.shape[0], chunk)])
                    sums.index_add_(0, torch.cat(real_ids), emb)
                if split:
                    dist.all_reduce_sum(sums)
                mr = sums / counts.clamp_min(1)[:, None]
            ms = class_means(embed(torch.cat(xs)), torch.cat(syn_ids), k)
        loss = mean_embedding_distance(mr, ms)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        return {"loss": float(loss.detach())}
