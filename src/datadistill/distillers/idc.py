"""IDC — Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization", ICML'22.

Survey eq. (9): gradient matching on a multi-formation summary, with the network trained on
the *real* data between matching steps (instead of on the summary as in DC):

    min_S  E_{theta_0} sum_t sum_c D( grad l(A_w(T_c); theta_t), grad l(A_w(f(S)_c); theta_t) ),
    theta_{t+1} = theta_t - eta * grad l(T; theta_t)

``f`` is multi-formation (``synsets/multiformation.py``): each stored image decodes into
``factor**2`` upsampled cells. One outer iteration (``step``) = a fresh network and
``inner_loop`` rounds of: for every class, a real batch (``batch_real``) and at most
``batch_syn_max`` decoded synthetic examples, one siamese augmentation of both in IDC's mode
(``DSA(mode="idc")``: color, then one transform picked from the rest of ``dsa_strategy`` — crop
for ``color_crop_cutout`` —, then cutout, on every call, parameters shared by the two batches),
``D`` over the convolution weights only (bias, norm and fc gradients skipped, as the reference's
defaults) and one summary step *per class*; then the network trains one epoch on ``n_data``
random real examples (SGD lr 0.01, momentum 0.9, wd 5e-4, batch ``batch_real``, per-example
``color_crop`` augmentation in the same mode: color and crop on every call, then CutMix). The
summary is clamped to [0, 1] pixels at the start of each outer iteration.

The network update mixes as the reference (``--mixup_net cut``, ``condense.py`` l. 545-554 ->
``train.py`` ``train_epoch`` l. 200-212, box ``misc/utils.py`` ``rand_bbox`` l. 170-186):
``net_mixup="cut"``, CutMix on each mini-batch after DSA with probability ``mixup_p`` 0.5 (the
reference's ``mix_p``, set to 0.5 for CIFAR/SVHN/MNIST/Fashion-MNIST in ``argument.py`` l. 266-295;
its argparse default 1.0 stays only for ImageNet), lam ~ Beta(``mixup_beta`` 1.0, 1.0), a random
permutation of the batch, the loss ``lam' CE(y) + (1 - lam') CE(y[perm])`` with lam' corrected to
the pasted box's area (``cutmix.py``; all draws from the distiller's generator). Because it
CutMixes, the network's augmentation is ``dsa_strategy`` without cutout (``net_strategy=None``;
the reference's ``diffaug()``, ``condense.py`` l. 365-366); ``net_mixup="none"`` trains it with
DSA only (and then with cutout, as the reference's 'vanilla').

The reference stores the summary in [0, 1] pixels and normalizes inside its augmentation, so its
published lr_img is a step in pixel space. The library stores normalized pixels
``x = (p - mean) / std``; with ``pixel_space=True`` (default) the summary's gradient is divided by
``std**2`` per channel before the SGD step, which makes SGD with momentum in ``x`` exactly the
reference's SGD in ``p`` (``pixel_space=False``: the step in normalized space, the library's
behaviour before the parity fix — a std**2 larger effective step, ~8x on Fashion-MNIST).

Published settings (reference ``argument.py --reproduce`` / ``misc/reproduce.py``): factor 2,
2000 outer iterations x inner_loop 100, batch_real 64, batch_syn_max 128, summary SGD momentum
0.5 with lr_img scaled by ipc/10 x (size/imsize_base)**2 (``tune_lr_img``: (28/32)**2 for
Fashion-MNIST, whose base is 32; 1 for MNIST and 32x32 data; ``LR_SIZE_FACTOR``); MNIST-like data
(1 channel): lr_img 1e-4 with the ``l1`` metric, CIFAR-like: 5e-3 with ``mse`` (``lr_data`` /
``metric`` None pick these by the data's channels); ``n_data`` 2000 on CIFAR, 500 otherwise
(None: by dataset). The summary starts from real images (``mix``: factor**2 downsampled real
images tiled per stored image); the multi-formation padding is 0.5 in pixels.
Preset ``idc-i``: factor 1 (IDC-I, no multi-formation). Summary kinds (``synset``): IDC's
clamp and pixel-space step act on stored images, so it takes ``multiformation`` (its own, with
``factor``) or ``pixels`` and refuses other kinds; any ``storage`` works (the matched batches are
decoded from the stored values). Left out: for MNIST with factor > 1 the reference's
``--reproduce`` (``misc/reproduce.py`` l. 25-30) matches with ``color_crop`` (no cutout) and
trains the network without CutMix — set ``dsa_strategy="color_crop"`` and ``net_mixup="none"``
there (documented in docs/gradient-matching.md). IDC's published accuracies are evaluated with
CutMix too: the evaluation protocol ``idc`` (or ``paper-cutmix``, ``evaluation/base.py``).
"""
from __future__ import annotations

import dataclasses

import torch

from ..augment import DSA as Augment
from ..cutmix import CutMix
from ..objectives import gradient_distance
from ..synsets.multiformation import decode_zoom
from ..train import train_model
from ..errors import ConfigError
from .base import DISTILLERS
from .dc import DC

#: channels -> (lr_img, metric) as published (MNIST/Fashion-MNIST vs CIFAR/SVHN).
PUBLISHED_LR_METRIC = {1: (1e-4, "l1"), 3: (5e-3, "mse")}
#: dataset -> the image-size factor of the reference's ``tune_lr_img``, (size / imsize_base)**2:
#: size 28 for both MNIST-likes but imsize_base 28 for 'mnist' only (32 for 'fashion').
LR_SIZE_FACTOR = {"fashion-mnist": (28 / 32) ** 2}
#: dataset prefix -> n_data (real examples per network update) of ``misc/reproduce.py``.
PUBLISHED_N_DATA = {"cifar": 2000}
DEFAULT_N_DATA = 500
#: the network update's mixing (reference ``--mixup_net``; its 'vanilla' is "none")
NET_MIXUPS = ("cut", "none")


def published_n_data(name: str) -> int:
    return next((v for k, v in PUBLISHED_N_DATA.items() if name.startswith(k)), DEFAULT_N_DATA)


@DISTILLERS.register("idc")
@dataclasses.dataclass(kw_only=True)
class IDC(DC):
    """Efficient synthetic-data parameterization (Kim et al., ICML'22), survey eq. (9): gradient
    matching of a multi-formation summary on networks trained on the real data."""

    name = "idc"
    synset_kind = "multiformation"
    synset_kinds = ("multiformation", "pixels")  # the clamp and the pixel-space step need images
    presets = {
        "tiny": {"iterations": 2, "inner_loop": 2, "batch_real": 16, "n_data": 32},
        "idc-i": {"factor": 1},
        "cpu-20": {"iterations": 20, "inner_loop": 100},
    }

    iterations: int = 2000
    inner_loop: int | None = 100
    lr_data: float | None = None  # None: by channels (PUBLISHED_LR_METRIC), scaled by ipc/10
    metric: str | None = None  # None: by channels
    factor: int = 2
    batch_real: int = 64
    batch_syn_max: int = 128
    n_data: int | None = None  # None: by dataset (2000 on CIFAR, else 500; PUBLISHED_N_DATA)
    lr_net: float = 0.01
    momentum_net: float = 0.9
    weight_decay_net: float = 5e-4
    init: str = "real"
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout"
    #: the network update's per-example DSA; None: ``dsa_strategy`` without cutout when
    #: ``net_mixup="cut"`` (so ``color_crop``), else ``dsa_strategy`` (reference ``diffaug()``)
    net_strategy: str | None = None
    #: the network update's mixing, as the reference's ``--mixup_net``: "cut" (CutMix with
    #: probability ``mixup_p``, lam ~ Beta(``mixup_beta``, ``mixup_beta``)) or "none"
    net_mixup: str = "cut"
    mixup_p: float = 0.5  # reference mix_p: 0.5 on CIFAR / SVHN / MNIST / Fashion-MNIST
    mixup_beta: float = 1.0
    pixel_space: bool = True  # summary SGD in [0, 1] pixels as the reference (False: normalized)

    def __post_init__(self):
        if self.factor < 1:
            raise ConfigError(f"factor must be >= 1, got {self.factor}")
        given = (self.synset_args or {}).get("factor", self.factor)
        if given != self.factor:
            raise ConfigError(f"IDC's multi-formation factor is its own parameter: use "
                              f"factor={given} instead of synset_args={{'factor': {given}}}")
        if (self.n_data is not None and self.n_data < 0) or self.batch_syn_max < 1:
            raise ConfigError("n_data must be >= 0 and batch_syn_max >= 1")
        if self.net_mixup not in NET_MIXUPS:
            raise ConfigError(f"net_mixup must be one of {', '.join(NET_MIXUPS)}, "
                              f"got {self.net_mixup!r}")
        CutMix(self.mixup_p, self.mixup_beta)  # validates the probability and beta
        super().__post_init__()

    @classmethod
    def metrics(cls):
        return super().metrics() + (None,)

    def _published(self, info):
        return PUBLISHED_LR_METRIC[1 if info.channels == 1 else 3]

    def default_synset_args(self, kind):
        return {"factor": self.factor} if kind == "multiformation" else {}

    def make_optimizer(self, syn):
        lr = self.lr_data if self.lr_data is not None else self._published(syn.info)[0]
        stored_ipc = syn.config().get("ipc", syn.ipc)
        # reference tune_lr_img: lr_img * ipc/10 * (size/imsize_base)^2
        size = LR_SIZE_FACTOR.get(syn.info.name, 1.0)
        return torch.optim.SGD(syn.data_parameters(), lr=lr * stored_ipc / 10 * size, momentum=0.5)

    def setup(self, real, syn):
        super().setup(real, syn)
        self.metric_ = self.metric if self.metric is not None else self._published(real.info)[1]
        self.outer_, self.inner_ = 1, self.inner_loop if self.inner_loop is not None else 100
        self.n_data_ = self.n_data if self.n_data is not None else published_n_data(real.info.name)
        # IDC's DiffAug: color, one of the rest, cutout on every call (not one op per call)
        self.dsa_ = Augment.for_data(real.info, self.dsa_strategy, mode="idc") if self.dsa else None
        net_strategy = self.net_strategy
        if net_strategy is None:  # reference diffaug(): cutout removed when the network CutMixes
            ops = self.dsa_strategy.split("_")
            net_strategy = "_".join(o for o in ops if o != "cutout" or self.net_mixup != "cut")
        self.train_dsa_ = (Augment.for_data(real.info, net_strategy, mode="idc")
                           if net_strategy else None)
        self.net_cutmix_ = (CutMix(self.mixup_p, self.mixup_beta) if self.net_mixup == "cut"
                            else None)
        mean = torch.tensor(real.info.mean or (0.0,) * real.info.channels).view(1, -1, 1, 1)
        std = torch.tensor(real.info.std or (1.0,) * real.info.channels).view(1, -1, 1, 1)
        self.pixel_range_ = ((0 - mean) / std, (1 - mean) / std)
        # the published lr_img is a step in [0, 1] pixels (the reference normalizes inside its
        # augmentation): in normalized space that is the gradient divided by std^2 per channel
        self.grad_scale_ = (1 / std ** 2).to(self.device_) if self.pixel_space else None

    def extra_meta(self):
        return {**super().extra_meta(), "n_data": self.n_data_}

    def train_network_on_real(self, net, opt, real) -> None:
        if self.n_data_ == 0:
            return
        idx = torch.randperm(len(real.train), generator=self.gen_)[:self.n_data_]
        x, y = real.train.x[idx.to(real.train.x.device)], real.train.y[idx.to(real.train.y.device)]
        train_model(net, x.to(self.device_), y.to(self.device_), epochs=1, generator=self.gen_,
                    batch_size=self.batch_real, decay_at=None, dsa=self.train_dsa_,
                    precision=self.run_.precision, optimizer=opt, cutmix=self.net_cutmix_)
        net.train()

    def step(self, real, syn):
        net = self.fresh_network(real)
        opt = torch.optim.SGD(net.parameters(), lr=self.lr_net, momentum=self.momentum_net,
                              weight_decay=self.weight_decay_net)
        lo, hi = (t.to(self.device_) for t in self.pixel_range_)
        with torch.no_grad():
            syn.x.copy_(torch.maximum(torch.minimum(syn.x, hi), lo))
        params = [p for p in net.parameters() if p.requires_grad and p.dim() > 2]  # conv only
        total, n = 0.0, 0
        for _ in range(self.inner_):
            # one summary step per class, as the reference (batches re-decoded each class)
            for c in range(real.info.num_classes):
                xr, yr, xs, ys = self._one_class(real, syn, c)
                g_real = self.loss_gradient(net, params, xr, yr)
                g_syn = self.loss_gradient(net, params, xs, ys, syn.label_format, create_graph=True)
                loss = gradient_distance(g_real, g_syn, self.metric_)
                self.optimizer_.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_scale_ is not None:
                    syn.x.grad.mul_(self.grad_scale_.to(syn.x.grad.dtype))
                self.optimizer_.step()
                total, n = total + float(loss.detach()), n + 1
            self.train_network_on_real(net, opt, real)
        return {"loss": total / max(1, n)}

    def _one_class(self, real, syn, c):
        dev = self.device_
        xr = real.sample_class(c, self.batch_real, self.gen_).to(dev)
        yr = torch.full((xr.shape[0],), c, device=dev, dtype=torch.long)
        sl = syn.class_slice(c)
        factor = getattr(syn, "factor", 1)  # plain pixel summaries work too (factor 1)
        with syn.as_stored():  # the stored values (a no-op at float32 storage)
            xs = decode_zoom(syn.x[sl], factor, getattr(syn, "pad_value", None))
            ys = (syn.labels if syn.y is None else syn.y)[sl].repeat_interleave(factor ** 2, dim=0)
        if xs.shape[0] > self.batch_syn_max:
            keep = torch.randperm(xs.shape[0], generator=self.gen_)[:self.batch_syn_max].to(dev)
            xs, ys = xs[keep], ys[keep]
        p = self.sample_augment(real)
        return self.augment(xr, p), yr, self.augment(xs, p), ys
