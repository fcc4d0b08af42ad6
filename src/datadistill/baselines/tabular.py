"""Tabular baselines: random / herding / k-center / k-means subsets of real rows in the encoded
space (standardized numeric values, one-hot categories), and CTGAN (Xu et al., NeurIPS'19;
the ``ctgan`` package, optional) as the synthetic-data generator a tabular user would compare
with: trained on the training rows, then ``ipc`` rows sampled per class conditioned on the label.
Each returns a ``TabularSet`` (its categorical logits sharpened to the chosen row's category),
so it saves, decodes and evaluates like a distilled table."""
from __future__ import annotations

import time

import torch

from ..errors import ConfigError, DatasetNotFoundError
from ..synsets import check_ipc
from ..synsets.tabular import TabularSet
from .images import CORESETS
from .text import select_subset

#: CTGAN's epochs here (its published default is 300; a CPU budget, recorded in the metadata)
CTGAN_EPOCHS = 30


@CORESETS.register("ctgan")
def _ctgan_images(*a, **kw):
    raise ConfigError("ctgan generates table rows: it is a baseline for tabular data only")


def select_tabular(real, ipc: int, method: str = "random", *, seed: int = 0, log=None) -> TabularSet:
    if method == "ctgan":
        return ctgan_rows(real, ipc, seed=seed, log=log)
    return select_subset(real, ipc, method, seed=seed, features=lambda x: x.float(),
                         make_set=lambda: TabularSet(real.info, ipc=ipc))


def ctgan_rows(real, ipc: int, *, seed: int = 0, epochs: int = CTGAN_EPOCHS, log=None) -> TabularSet:
    """``ipc`` CTGAN rows per class (conditional sampling on the label column)."""
    try:
        import pandas as pd
        from ctgan import CTGAN
    except ImportError:
        raise DatasetNotFoundError("the ctgan baseline needs the ctgan package: pip install ctgan "
                                   "(it installs beside a CPU torch, no CUDA build)") from None
    check_ipc(real, ipc)
    t0 = time.perf_counter()
    schema = real.schema
    label = schema.label
    rows = schema.decode(real.train.x)  # the training rows, normalized to the schema's types
    for r, c in zip(rows, real.train.y.tolist()):
        r[label] = schema.classes[c]
    df = pd.DataFrame(rows)
    discrete = [c["name"] for c in schema.columns if c["kind"] == "categorical"] + [label]
    for c in schema.columns:  # CTGAN takes no nulls: categories get theirs, numbers an indicator
        if c["kind"] == "categorical":
            df[c["name"]] = df[c["name"]].fillna("<missing>")
        elif c["missing"]:
            ind = f"{c['name']}__missing"
            df[ind] = df[c["name"]].isna().map({True: "yes", False: "no"})
            df[c["name"]] = df[c["name"]].fillna(c["mean"])
            discrete.append(ind)
    # CTGAN draws from the global generators (its own API): seed them for the fit and the
    # sampling only, and give the caller's global RNG state back afterwards
    import numpy as np
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            model = CTGAN(epochs=epochs, cuda=False)
            if log:
                log(f"ctgan: training {epochs} epochs on {len(df)} rows")
            model.fit(df, discrete)
            samples = [model.sample(ipc, condition_column=label, condition_value=cls)
                       .to_dict("records") for cls in schema.classes]
        finally:
            np.random.set_state(np_state)
    syn = TabularSet(real.info, ipc=ipc)
    for k, s in enumerate(samples):
        for r in s:
            for c in schema.columns:
                if c["kind"] == "numeric" and c["missing"] and r.pop(f"{c['name']}__missing") == "yes":
                    r[c["name"]] = None
        syn.set_rows(syn.class_slice(k), schema.encode(s, "ctgan sample"), sharpness=8.0)
    syn.meta.update({"method": "ctgan", "params": {"coreset": "ctgan", "epochs": epochs, "seed": seed},
                     "seed": seed, "iterations": 0,
                     "wall_time_s": round(time.perf_counter() - t0, 3)})
    return syn
