"""The text layer: the existing objectives on text data, as registered variants.

Text is distilled in the encoder's continuous space (``data/text.py``): embedding sequences
``[max_len, embed_dim]`` or sentence embeddings ``[384]``. The image methods work there
unchanged once the network is a text network and DSA (an image augmentation) is off; these
registrations bind exactly that, plus ``model="auto"`` = ``textcnn`` on sequences and ``mlp`` on
sentence embeddings (``default_model``). The same runs are available from the image names,
e.g. ``--method dm --set model=textcnn --set dsa=false``.

- ``dm-text``: DM (Zhao & Bilen, WACV'23), random text networks as the feature extractors.
- ``dc-text``: DC's per-class gradient matching (Zhao et al., ICLR'21).
- ``dd-text``: DD's unrolled meta-model matching with *learned soft labels* and learned step
  sizes: the soft-label dataset distillation of Sucholutsky & Schonlau (IJCNN 2021), whose text
  experiments distill embedding sequences this way.
"""
from __future__ import annotations

import dataclasses

from .base import DISTILLERS
from .dc import DC
from .dd import DD
from .dm import DM


def own_presets(presets: dict, **extra) -> dict:
    """The parent's presets without the keys this layer binds (network, augmentation) and
    without presets that only choose an image network; plus ``extra``."""
    out = {k: {p: v for p, v in d.items() if p not in ("model", "dsa", "dsa_strategy")}
           for k, d in presets.items()}
    return {**{k: d for k, d in out.items() if d}, **extra}


def default_model(info) -> str:
    """``textcnn`` for embedding sequences, ``mlp`` for sentence embeddings / table rows."""
    return "textcnn" if len(info.shape) == 2 else "mlp"


class AutoModel:
    """Resolves ``model="auto"`` from the data's shape when a network is built."""

    def make_model(self, name, info, **kw):
        return super().make_model(default_model(info) if name == "auto" else name, info, **kw)


@DISTILLERS.register("dm-text")
@dataclasses.dataclass(kw_only=True)
class DMText(AutoModel, DM):
    """DM on text (Zhao & Bilen, WACV'23): min_S sum_c || mean phi(T_c) - mean phi(S_c) ||^2 in
    the encoder's embedding space, phi a freshly initialised TextCNN (or MLP on sentence
    embeddings) every iteration, no augmentation."""

    name = "dm-text"
    test_dataset = "text-toy"
    presets = own_presets(DM.presets, tiny={"iterations": 3, "batch_real": 16})
    run_defaults = {"fused": False}  # (the fused kernels are the ConvNet's)
    model: str = "auto"
    dsa: bool = False


@DISTILLERS.register("dc-text")
@dataclasses.dataclass(kw_only=True)
class DCText(AutoModel, DC):
    """DC on text (Zhao et al., ICLR'21): per-class gradient matching sum_c D(grad l(T_c),
    grad l(S_c)) on a text network trained on the summary between matching steps, in the
    encoder's embedding space, no augmentation."""

    name = "dc-text"
    test_dataset = "text-toy"
    presets = own_presets(DC.presets, tiny={"iterations": 2, "batch_real": 16, "outer_loop": 2,
                                            "inner_loop": 2})
    run_defaults = {"fused": False}  # (the fused kernels are the ConvNet's)
    model: str = "auto"
    dsa: bool = False


@DISTILLERS.register("dd-text")
@dataclasses.dataclass(kw_only=True)
class DDText(AutoModel, DD):
    """Soft-label dataset distillation on text (Sucholutsky & Schonlau, IJCNN'21; DD of Wang et
    al. 2018): unroll SGD on the summary, back-propagate the real loss to the embedding
    sequences, their soft labels and the step sizes."""

    name = "dd-text"
    test_dataset = "text-toy"
    label_format = "soft"
    presets = own_presets(DD.presets, tiny={"iterations": 3, "batch_real": 32, "unroll": 4,
                                            "checkpoint_every": 2},
                          **{"cpu-200": {"iterations": 200, "batch_real": 256}})
    run_defaults = {"fused": False}  # (the fused kernels are the ConvNet's)
    model: str = "auto"
    dsa: bool = False
