"""Membership inference against models trained on real data, on a summary and on a DP summary.

The claim tested: Dong, Sun & Xie, "Privacy for Free: How does Dataset Condensation Help
Privacy?" (ICML 2022) — models trained on a distilled summary leak much less membership than
models trained on the real data, at comparable utility (attack AUC near 0.5). Carlini et al.
("No Free Lunch in 'Privacy for Free'", 2022) answered that the examples a summary was
*initialised* from leak strongly and that the average hides them; we report both.

Protocol: the training split is cut (seeded) into members (the target's data), non-members
(held out, same size) and a shadow pool. A target is trained on the members by one pipeline:
``real`` (a network on the members themselves), a baseline subset (``random``, ``herding``,
``kcenter``) or any method's summary of the members (``dm``, ``dc``, ...), or a DP summary
(``dp-dm``, ``dp-dc`` at ``epsilon``); summaries are trained on by the evaluation protocol.
Attacks score every member and non-member:

- **loss threshold** (Yeom et al. 2018): score = -loss of the target on the example;
- **shadow models** (Shokri et al. 2017): ``shadows`` copies of the same pipeline trained on
  random halves of the shadow pool; a logistic regression on (-loss, true-class probability,
  entropy, logit margin) learns in/out from them and scores the target's outputs.

Reported per target: test accuracy (utility), attack AUC and TPR at 1 % FPR for both attacks,
and the loss attack's AUC on the members a summary was initialised from (exact copies).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.base import RealData
from ..errors import ConfigError
from ..runtime import RunOptions, derive_seed, make_generator
from . import _common as C


def split_membership(n: int, members: int | None = None, *, seed: int = 0) -> dict[str, Tensor]:
    """Disjoint index sets of the training split: ``members``, ``non_members`` (same size) and
    ``shadow`` (the rest)."""
    m = n // 4 if members is None else int(members)
    if m < 2 or 2 * m >= n - 3:
        raise ConfigError(f"members must be >= 2 and leave a shadow pool: {n} training examples "
                          f"allow at most {(n - 4) // 2}, got {m}")
    perm = torch.randperm(n, generator=make_generator(derive_seed(seed, 11)))
    return {"members": perm[:m].sort().values, "non_members": perm[m:2 * m].sort().values,
            "shadow": perm[2 * m:].sort().values}


def parse_targets(spec: str | Sequence[str]) -> list[str]:
    from ..distillers import DISTILLERS
    items = [t.strip().lower() for t in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [t for t in items if t]
    for t in items:
        if t != "real" and not C.is_baseline(t):
            DISTILLERS.get(t)  # unknown -> the error lists the known names
    if not items:
        raise ConfigError("no target given")
    return items


def train_target(kind: str, data: RealData, *, ipc: int, seed: int, model: str = "convnet",
                 protocol: str = "fast", epochs: int | None = None, real_epochs: int = 50,
                 iterations: int | None = None, preset: str | None = None,
                 params: dict[str, Any] | None = None, epsilon: float | None = None,
                 run: RunOptions | None = None) -> dict[str, Any]:
    """The network a pipeline trains from ``data.train`` (the members) and what it kept."""
    from ..evaluation import get_protocol
    from ..train import train_model
    import dataclasses

    proto = get_protocol(protocol)
    if epochs is not None:
        proto = dataclasses.replace(proto, epochs=epochs)
    x_init = None
    rec: dict[str, Any] = {"kind": kind}
    with C.Timer() as t:
        if kind == "real":
            from .. import perf
            from ..models import create_model
            r = perf.resolve(run)
            gen = make_generator(seed)
            net = create_model(model, data.info, generator=gen, device=r.device, fused=r.fused)
            with perf.activate(r):
                train_model(net, data.train.x.to(r.device), data.train.y.to(r.device),
                            epochs=real_epochs, generator=gen, batch_size=256, decay_at=0.5,
                            precision=r.precision)
            rec.update(stored_bytes=None, epochs=real_epochs)
        else:
            if C.is_baseline(kind):
                syn = C.make_summary(data, kind, ipc, seed=seed, run=run)
                x_init = C.summary_tensors(syn)[0]
            else:
                from ..distillers import create_distiller
                kw = dict(params or {}, seed=seed)
                if iterations is not None:
                    kw["iterations"] = iterations
                if kind.startswith("dp-") and epsilon is not None:
                    kw["epsilon"] = epsilon
                d = create_distiller(kind, preset, **kw)
                syn = d.init_synset(data, ipc=ipc)
                x_init = C.summary_tensors(syn)[0].clone() if d.init == "real" else None
                d.distill(data, syn, run=run)
            x, y = C.summary_tensors(syn)
            lr = float(syn.lr.detach()) if syn.lr is not None and proto.use_learned_lr else None
            net = C.train_on(x, y, data.info, model=model, protocol=proto, seed=seed,
                             label_format=syn.label_format, lr=lr, run=run)
            rec.update(stored_bytes=syn.stored_bytes(), privacy=syn.meta.get("privacy"),
                       epochs=proto.epochs)
    rec.update(net=net, x_init=x_init, cpu_s=t.cpu)
    return rec


@torch.no_grad()
def attack_features(net, x: Tensor, y: Tensor, batch: int = 500) -> np.ndarray:
    """Per example: (-loss, true-class probability, -entropy, logit margin)."""
    net.eval()
    dev = next(net.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch):
        logits = net(x[i:i + batch].to(dev)).float().cpu()
        yy = y[i:i + batch].cpu()
        logp = F.log_softmax(logits, 1)
        lp_y = logp.gather(1, yy[:, None])[:, 0]
        ent = -(logp.exp() * logp).sum(1)
        other = logits.clone()
        other.scatter_(1, yy[:, None], -math.inf)
        margin = logits.gather(1, yy[:, None])[:, 0] - other.max(1).values
        out.append(torch.stack([lp_y, lp_y.exp(), -ent, margin], 1))
    return torch.cat(out).double().numpy()


def roc_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Attack AUC and TPR at 1 % FPR (members = 1, higher score = 'member')."""
    from sklearn.metrics import roc_auc_score, roc_curve
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-1e30, neginf=-1e30, posinf=1e30)
    fpr, tpr, _ = roc_curve(labels, scores)
    return {"auc": float(roc_auc_score(labels, scores)),
            "tpr_at_1fpr": float(tpr[fpr <= 0.01].max()) if (fpr <= 0.01).any() else 0.0,
            "fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _init_members(x_init: Tensor | None, members_x: Tensor) -> Tensor:
    """Indices (into the members) of exact copies of the summary's initial examples."""
    if x_init is None:
        return torch.zeros(0, dtype=torch.long)
    a, b = x_init.flatten(1).cpu().float(), members_x.flatten(1).cpu().float()
    hits = []
    for i in range(0, a.shape[0], 256):
        d = torch.cdist(a[i:i + 256], b, compute_mode="donot_use_mm_for_euclid_dist")
        v, j = d.min(1)
        hits.append(j[v <= 1e-6])
    return torch.unique(torch.cat(hits))


def run_attack(real: RealData, *, targets: Sequence[str] = ("real", "dm", "dp-dm"),
               ipc: int = 10, members: int | None = None, shadows: int = 2,
               epsilon: float = 10.0, model: str = "convnet", protocol: str = "fast",
               epochs: int | None = None, real_epochs: int = 50, iterations: int | None = None,
               preset: str | None = None, params: dict[str, Any] | None = None, seed: int = 0,
               run: RunOptions | None = None,
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Both attacks on every target; the results record."""
    from ..train import accuracy
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if real.info.modality != "image":
        raise ConfigError(f"the attack runs on image data; {real.info.name} is {real.info.modality}")
    if shadows < 1:
        raise ConfigError(f"need at least one shadow model, got {shadows}")
    targets = parse_targets(targets)
    sp = split_membership(len(real.train), members, seed=seed)
    mem, non = sp["members"], sp["non_members"]
    cand_x = torch.cat([real.train.x[mem], real.train.x[non]])
    cand_y = torch.cat([real.train.y[mem], real.train.y[non]])
    labels = np.r_[np.ones(len(mem)), np.zeros(len(non))]
    kw = dict(ipc=ipc, model=model, protocol=protocol, epochs=epochs, real_epochs=real_epochs,
              iterations=iterations, preset=preset, params=params, epsilon=epsilon, run=run)
    out: dict[str, Any] = {}
    for ti, kind in enumerate(targets):
        log(f"target {kind}: training on {len(mem)} members")
        tgt = train_target(kind, C.train_subset(real, mem), seed=derive_seed(seed, 1, ti), **kw)
        net = tgt.pop("net")
        dev = next(net.parameters()).device
        util = 100.0 * accuracy(net, real.test.x.to(dev), real.test.y.to(dev))
        feats = attack_features(net, cand_x, cand_y)
        loss_att = roc_metrics(feats[:, 0], labels)
        init = _init_members(tgt.pop("x_init"), real.train.x[mem])
        init_auc = None
        if len(init):
            sel = np.r_[init.numpy(), np.arange(len(mem), len(labels))]
            init_auc = roc_metrics(feats[sel, 0], labels[sel])["auc"]
        # shadow models: the same pipeline on random halves of the shadow pool
        fx, fy = [], []
        for s in range(shadows):
            perm = sp["shadow"][torch.randperm(len(sp["shadow"]),
                                               generator=make_generator(derive_seed(seed, 2, s)))]
            half = len(perm) // 2
            s_in, s_out = perm[:half], perm[half:2 * half]
            log(f"target {kind}: shadow {s + 1}/{shadows}")
            sh = train_target(kind, C.train_subset(real, s_in), seed=derive_seed(seed, 3, ti, s),
                              **kw)
            idx = torch.cat([s_in, s_out])
            fx.append(attack_features(sh["net"], real.train.x[idx], real.train.y[idx]))
            fy.append(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))])
            tgt["cpu_s"] += sh["cpu_s"]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        clf.fit(np.nan_to_num(np.concatenate(fx), neginf=-1e6), np.concatenate(fy))
        shadow_att = roc_metrics(clf.predict_proba(np.nan_to_num(feats, neginf=-1e6))[:, 1], labels)
        out[kind] = {**tgt, "utility": util, "loss_attack": loss_att, "shadow_attack": shadow_att,
                     "init_members": int(len(init)), "init_auc": init_auc}
        log(f"target {kind}: utility {util:.2f} %, loss AUC {loss_att['auc']:.3f}, shadow AUC "
            f"{shadow_att['auc']:.3f}")
    settings = {"dataset": real.info.name, "members": len(mem), "non_members": len(non),
                "shadow_pool": len(sp["shadow"]), "shadows": shadows, "ipc": ipc,
                "epsilon": epsilon, "model": model, "protocol": protocol, "epochs": epochs,
                "real_epochs": real_epochs, "iterations": iterations, "preset": preset,
                "params": params or {}, "seed": seed,
                "real_training": f"{real_epochs} epochs SGD lr 0.01 momentum 0.9, no augmentation"}
    return {"settings": settings, "targets": out}


def results_table(res: dict[str, Any]) -> str:
    heads = ["target", "utility %", "stored bytes", "epsilon", "loss AUC", "loss TPR@1%FPR",
             "shadow AUC", "shadow TPR@1%FPR", "init-copies AUC (n)"]
    rows = []
    for k, r in res["targets"].items():
        eps = (r.get("privacy") or {}).get("epsilon")
        rows.append([k, f"{r['utility']:.2f}", r.get("stored_bytes") or "-",
                     "-" if eps is None else f"{eps:.2f}", f"{r['loss_attack']['auc']:.3f}",
                     f"{100 * r['loss_attack']['tpr_at_1fpr']:.1f} %",
                     f"{r['shadow_attack']['auc']:.3f}",
                     f"{100 * r['shadow_attack']['tpr_at_1fpr']:.1f} %",
                     "-" if r["init_auc"] is None else f"{r['init_auc']:.3f} ({r['init_members']})"])
    return C.text_table(heads, rows)


def plot(res: dict[str, Any], path):
    fig, (ax_roc, ax_u) = C.figure(2)
    for i, (k, r) in enumerate(res["targets"].items()):
        a = r["loss_attack"]
        ax_roc.plot(np.maximum(a["fpr"], 1e-4), np.maximum(a["tpr"], 1e-4), color=f"C{i}",
                    label=f"{k} (AUC {a['auc']:.3f})")
        ax_u.scatter([r["utility"]], [a["auc"]], color=f"C{i}", marker="o", label=f"{k} loss")
        ax_u.scatter([r["utility"]], [r["shadow_attack"]["auc"]], color=f"C{i}", marker="^",
                     label=f"{k} shadow")
    ax_roc.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax_roc.set_xscale("log")
    ax_roc.set_yscale("log")
    ax_roc.set_xlabel("false positive rate")
    ax_roc.set_ylabel("true positive rate")
    ax_roc.set_title("loss-threshold attack (log-log ROC)", fontsize=9)
    ax_u.axhline(0.5, color="k", ls=":", lw=0.8)
    ax_u.set_xlabel("utility: test accuracy %")
    ax_u.set_ylabel("attack AUC")
    for ax in (ax_roc, ax_u):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    st = res["settings"]
    fig.suptitle(f"membership inference on {st['dataset']}: {st['members']} members, IPC "
                 f"{st['ipc']}", fontsize=10)
    return C.save_figure(fig, path)


def bench_rows(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    st, rows = res["settings"], {}
    for k, r in res["targets"].items():
        eps = (r.get("privacy") or {}).get("epsilon")
        rows[f"mia-{k}"] = {
            "label": f"target trained on {k}" + (f" (epsilon {eps:.2f})" if eps else ""),
            "method": k, "dataset": st["dataset"],
            "budget": {} if k == "real" else {"ipc": st["ipc"]},
            "accuracy": {"mean": r["utility"], "std": None, "n": 1},
            "protocol": {"name": "real training" if k == "real" else st["protocol"],
                         "epochs": r.get("epochs")},
            "stored_bytes": r.get("stored_bytes"),
            "iterations_run": None if k == "real" or C.is_baseline(k) else st["iterations"],
            "cpu_s": {"distill": r["cpu_s"], "evaluate": None},
            "attack": {"loss_auc": r["loss_attack"]["auc"],
                       "loss_tpr_at_1fpr": r["loss_attack"]["tpr_at_1fpr"],
                       "shadow_auc": r["shadow_attack"]["auc"],
                       "shadow_tpr_at_1fpr": r["shadow_attack"]["tpr_at_1fpr"],
                       "init_auc": r["init_auc"]},
            "notes": f"utility = accuracy; loss attack AUC {r['loss_attack']['auc']:.3f} "
                     f"(TPR@1%FPR {100 * r['loss_attack']['tpr_at_1fpr']:.1f} %), shadow AUC "
                     f"{r['shadow_attack']['auc']:.3f} (TPR@1%FPR "
                     f"{100 * r['shadow_attack']['tpr_at_1fpr']:.1f} %)"
                     + ("" if r["init_auc"] is None else
                        f"; init copies AUC {r['init_auc']:.3f} (n={r['init_members']})")}
    return rows
