"""DD-Ranking's label-robust and augmentation-robust scores (Li et al., "DD-Ranking: Rethinking
the Evaluation of Dataset Distillation", arXiv:2505.13300, 2025; code github.com/NUS-HPC-AI-Lab/
DD-Ranking at commit b8b09664b86e, ``ddranking/metrics/hard_label.py``, ``soft_label.py``,
``aug_robust.py``; formulas in its README.md and ``doc/introduction.md``).

Per evaluation round r (a fresh model per round, a fresh random subset per round)::

    HLR_r = Acc(full data, hard labels)        - Acc(summary, hard labels)      hard-label recovery
    IOR_r = Acc(summary, its own evaluation)   - Acc(random subset, same)        improvement over random
    alpha = w * IOR_r - (1 - w) * HLR_r                                          (w = 0.5)
    LRS_r = 100 * (exp(alpha) - exp(-1)) / (e - exp(-1))                         label-robust score

    beta  = g * (Acc(summary, aug) - Acc(random, aug))
          + (1 - g) * (Acc(summary, no aug) - Acc(random, no aug))               (g = 0.5)
    ARS_r = 100 * (exp(beta) - exp(-1)) / (e - exp(-1))                          augmentation-robust score

and each score is reported as mean ± std (population, as ``np.std``) over the rounds. The
accuracies enter alpha and beta as fractions in [0, 1], so alpha, beta ∈ [-1, 1] and the scores
∈ [0, 100] % as the paper and README state ("LRS is normalized to [0, 1]"). (The reference code
applies the exponential to differences of percentages, which leaves that range; we follow the
stated definition and keep HLR, IOR and the gaps in percentage points in the output.)

How the accuracies are obtained is this library's protocol, not DD-Ranking's training recipe:

- "the summary's own evaluation" is ``evaluate`` as usual: its soft labels and learned step size
  if it has them, the protocol's DSA; "hard labels" replaces the labels by the class of each
  example (as DD-Ranking's ``hard_labels`` default) and keeps everything else;
- the random subset is ``select_coreset(real, ipc, "random")`` with as many real examples per
  class as the summary's storage holds (its IPC for pixel summaries), a new one each round, with
  the same protocol and hard labels (DD-Ranking gives random data a teacher's soft labels for
  soft-label methods; this library has no teacher: recorded as ``random.labels``);
- "without augmentation" is the same protocol with ``dsa=False``;
- the full-data accuracy is one number per architecture: the published figure where the library
  has one (DD-Ranking's ``REAL_DATA_ACC_CACHE``, used when ``eval_full_data`` is off) or the
  cached full-data reference (``evaluation.reference``), as ``full_reference`` says;
- DD-Ranking picks the best learning rate and the best epoch *on the test set*; this library
  never chooses on the test split (the fixed protocol, final model), so its accuracies are the
  protocol's and may be lower than DD-Ranking's for the same data.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime import RunOptions, derive_seed
from ..synsets.base import SyntheticSet
from .base import PUBLISHED_FULL, EvalReport, Protocol, get_protocol

SOURCE = ("DD-Ranking (Li et al., arXiv:2505.13300, 2025); github.com/NUS-HPC-AI-Lab/DD-Ranking "
          "@ b8b09664b86e: ddranking/metrics/hard_label.py, soft_label.py, aug_robust.py")
#: sub-seed keys (``derive_seed``) of the random subsets and of their models
_RANDOM_SUBSET, _RANDOM_MODEL = 7919, 7927


def normalized_score(x: float) -> float:
    """DD-Ranking's normalization of a weighted accuracy difference x ∈ [-1, 1] to [0, 100] %."""
    return 100.0 * (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def label_robust_score(full: float, syn_hard: float, syn_any: float, rdm_any: float,
                       weight: float = 0.5) -> dict[str, float]:
    """One round's HLR, IOR (percentage points) and LRS (%) from accuracies in %."""
    hlr, ior = full - syn_hard, syn_any - rdm_any
    alpha = weight * ior / 100.0 - (1.0 - weight) * hlr / 100.0
    return {"hlr": hlr, "ior": ior, "alpha": alpha, "lrs": normalized_score(alpha)}


def augmentation_robust_score(syn_aug: float, rdm_aug: float, syn_naug: float, rdm_naug: float,
                              weight: float = 0.5) -> dict[str, float]:
    """One round's gaps to random with / without augmentation (pp) and ARS (%), from %."""
    with_aug, without_aug = syn_aug - rdm_aug, syn_naug - rdm_naug
    beta = weight * with_aug / 100.0 + (1.0 - weight) * without_aug / 100.0
    return {"aug_gap": with_aug, "noaug_gap": without_aug, "beta": beta,
            "ars": normalized_score(beta)}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = [float(x) for x in values]
    return {"mean": statistics.fmean(v), "std": float(np.std(v)), "values": v}


class HardLabelView(SyntheticSet):
    """The summary's materialized examples with hard labels (each example's class) and its
    learned step size: "the summary under hard labels". Not registered, never saved."""

    kind = "hard-label-view"

    def __init__(self, syn: SyntheticSet):
        super().__init__(syn.info, label_format="hard",
                         lr=None if syn.lr is None else float(syn.lr.detach()))
        with torch.no_grad():
            x, _ = syn.materialize()
        self.register_buffer("x", x.detach().clone())
        self.register_buffer("labels", syn.class_ids.detach().clone())
        self.preprocess = dict(syn.preprocess)
        self.meta = {**syn.meta, "labels": "hard (the class of each example)"}

    def materialize(self):
        return self.x, self.labels

    @property
    def class_ids(self):
        return self.labels

    def config(self):
        return {}


def random_ipc(syn: SyntheticSet) -> int:
    """Real examples per class that fill the summary's storage (float32 pixels): its IPC for
    pixel summaries, the stored budget for factorized ones (DD-Ranking: "the same compression
    ratio")."""
    per_image = 4 * int(np.prod(syn.info.shape))
    return max(1, int(round(syn.stored_bytes() / per_image / syn.info.num_classes)))


def full_accuracy(real, model: str, syn: SyntheticSet, full_reference: str | dict, *,
                  device=None, fused: bool = False) -> tuple[float, dict[str, Any]]:
    """The full-data accuracy (%) for HLR and where it came from. ``full_reference``: ``auto``
    (the published figure if the library has one, else ``converged``), ``published``, or a
    preset / settings of ``evaluation.reference`` (trained once, cached)."""
    key = (syn.info.name, model)
    if full_reference in ("auto", "published"):
        if key in PUBLISHED_FULL:
            return PUBLISHED_FULL[key], {"kind": "published", "description":
                                         f"published full-data accuracy of {model} on "
                                         f"{syn.info.name} (evaluation.base.PUBLISHED_FULL)"}
        if full_reference == "published":
            raise ConfigError(f"no published full-data accuracy for {model} on {syn.info.name}; "
                              f"known: {sorted(PUBLISHED_FULL)}; use a reference preset "
                              f"(converged, converged-dsa, quick)")
        full_reference = "converged"
    from .reference import full_data_accuracy
    rec = full_data_accuracy(real, model, device=device, fused=fused, settings=full_reference)
    return float(rec["accuracy"]), {"kind": (rec["settings"] or {}).get("preset", "custom"),
                                    "description": (rec["settings"] or {}).get("description")}


def robust_scores(syn: SyntheticSet, real, *, models: Sequence[str] | None = None,
                  protocol: str | Protocol = "fast", num_models: int | None = None, seed: int = 0,
                  full_reference: str | dict = "auto", lrs_weight: float = 0.5,
                  ars_weight: float = 0.5, report: EvalReport | None = None,
                  on_model: Callable[[dict[str, Any]], None] | None = None,
                  run: RunOptions | None = None) -> dict[str, Any]:
    """DD-Ranking's LRS and ARS of an image summary (see the module docstring), per
    architecture, over ``num_models`` paired rounds (default: the protocol's count).

    ``report``: the summary's plain evaluation under the same protocol and seed (reused as
    "the summary's own evaluation, with augmentation"); computed here when None. ``on_model`` is
    called after every trained model with ``{"stage", "model", "index", "accuracy"}``.
    """
    from ..baselines.images import select_coreset
    from . import evaluate

    if syn.info.modality != "image":
        raise ConfigError(f"robust scores are defined for image classification summaries "
                          f"(DD-Ranking), not {syn.info.modality!r}")
    for name, w in (("lrs_weight", lrs_weight), ("ars_weight", ars_weight)):
        if not 0.0 <= w <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {w}")
    proto = get_protocol(protocol)
    if num_models is not None:
        proto = dataclasses.replace(proto, num_models=num_models)
    if not proto.dsa:
        raise ConfigError("the augmentation-robust score compares evaluation with and without "
                          "augmentation: use a protocol with DSA")
    rounds = proto.num_models
    noaug = dataclasses.replace(proto, dsa=False, cutmix_p=0.0)  # no augmentation, no mixing
    models = ("convnet",) if models is None else tuple(models)

    def stage(name):
        if on_model is None:
            return None
        return lambda ev: on_model({"stage": name, **ev})

    def accs(rep: EvalReport, m: str) -> list[float]:
        return [float(a) for a in rep.results[m]["accs"]]

    if report is None or any(m not in report.results for m in models) \
            or report.protocol.get("name") != proto.name \
            or any(len(report.results[m]["accs"]) != rounds for m in models):
        report = evaluate(syn, real, models=models, protocol=proto, seed=seed,
                          on_model=stage("summary"), run=run)
    syn_naug = evaluate(syn, real, models=models, protocol=noaug, seed=seed,
                        on_model=stage("summary, no augmentation"), run=run)
    hard_report = None
    if syn.label_format != "hard":
        hard_report = evaluate(HardLabelView(syn), real, models=models, protocol=proto, seed=seed,
                               on_model=stage("summary, hard labels"), run=run)
    ipc = random_ipc(syn)
    rdm_aug: dict[str, list[float]] = {m: [] for m in models}
    rdm_naug: dict[str, list[float]] = {m: [] for m in models}
    for r in range(rounds):
        rnd = select_coreset(real, ipc, "random", seed=derive_seed(seed, _RANDOM_SUBSET, r))
        mseed = derive_seed(seed, _RANDOM_MODEL, r)
        for p, store, tag in ((proto, rdm_aug, "random subset"),
                              (noaug, rdm_naug, "random subset, no augmentation")):
            rep = evaluate(rnd, real, models=models, protocol=dataclasses.replace(p, num_models=1),
                           seed=mseed, on_model=stage(f"{tag} {r + 1}/{rounds}"), run=run)
            for m in models:
                store[m].append(accs(rep, m)[0])
    dev = (report.run or {}).get("device")
    out_models: dict[str, Any] = {}
    full_src: dict[str, Any] = {}
    for m in models:
        full, full_src = full_accuracy(real, m, syn, full_reference, device=dev)
        syn_any = accs(report, m)
        syn_hard = accs(hard_report, m) if hard_report is not None else syn_any
        lrs = [label_robust_score(full, h, a, ra, lrs_weight)
               for h, a, ra in zip(syn_hard, syn_any, rdm_aug[m])]
        ars = [augmentation_robust_score(a, ra, n, rn, ars_weight)
               for a, ra, n, rn in zip(syn_any, rdm_aug[m], accs(syn_naug, m), rdm_naug[m])]
        out_models[m] = {
            "full_acc": full,
            "accuracies": {"summary": syn_any, "summary_hard_labels": syn_hard,
                           "random": rdm_aug[m], "summary_no_aug": accs(syn_naug, m),
                           "random_no_aug": rdm_naug[m]},
            **{k: _stats([s[k] for s in lrs]) for k in ("hlr", "ior", "lrs")},
            **{k: _stats([s[k] for s in ars]) for k in ("aug_gap", "noaug_gap", "ars")},
        }
    return {
        "definition": "DD-Ranking label-robust score (LRS) and augmentation-robust score (ARS)",
        "source": SOURCE,
        "weights": {"lrs": lrs_weight, "ars": ars_weight},
        "rounds": rounds,
        "units": "hlr, ior, aug_gap, noaug_gap: percentage points; lrs, ars: % (0-100); "
                 "alpha and beta use accuracies as fractions",
        "full_reference": full_src,
        "random": {"selection": "random real subset per round (select_coreset 'random')",
                   "ipc": ipc, "labels": "hard", "lr": f"protocol ({proto.lr:g})"},
        "summary_labels": syn.label_format,
        "protocol": dataclasses.asdict(proto),
        "models": out_models,
    }


def attach(report: EvalReport, robust: dict[str, Any]) -> dict[str, Any]:
    """The evaluation JSON with the robust scores under ``"robust"``."""
    return {**report.to_dict(), "robust": robust}
