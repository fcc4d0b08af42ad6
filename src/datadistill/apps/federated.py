"""Federated learning with data summaries: send summaries, not models (the survey's §4).

N simulated clients hold disjoint parts of the training split: IID (a random equal split) or
non-IID by label (Dirichlet(alpha) class proportions per client, Hsu et al. 2019; alpha 0.1 is
very skewed, 1.0 mildly). Two ways to a server model:

- **one-shot summaries**: every client distills its own data with any registered method (DM
  by default) or picks a baseline subset (``random``, ``herding``, ``kcenter``), at ``ipc``
  examples per class *that it holds at least ``ipc`` of* (rarer classes stay home), and uploads
  the summary once; the server trains fresh networks on the union with the evaluation protocol
  (``fast``: 300 epochs, DSA), as "one-shot FL by dataset distillation" proposes (Zhou et al.
  2020 "Distilled One-Shot Federated Learning"; Song et al. 2023 "FedD3"). The clients'
  random networks (DM) are drawn locally from the seed: nothing is downloaded.
- **FedAvg** (McMahan et al. 2017): every round each client starts from the global model,
  trains ``local_epochs`` of SGD on its data, and the server averages the models weighted by
  the clients' example counts. ``backend="flwr"`` runs the same rounds through Flower's
  ``FedAvg`` strategy and ``NumPyClient`` API, in process (no Ray, no network); ``"plain"`` is
  a loop of ours, which computes the same average (checked against Flower in the tests). Both
  are in ``federated_fedavg.py``.

Communicated bytes: FedAvg sends the model down and up once per client per round (float32
parameters and buffers); one-shot sends each summary's stored bytes up once. Compared at equal
rounds (one round) and at equal bytes (FedAvg after as many rounds as the summaries' bytes buy).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.base import RealData
from ..errors import ConfigError
from ..runtime import RunOptions, derive_seed
from . import _common as C
# FedAvg, the baseline (its own module; these names are also importable from here)
from .federated_fedavg import (BACKENDS, _flwr_rounds, _Trainer, fedavg, have_flwr,  # noqa: F401
                               model_bytes, resolve_backend, weighted_average)


# -- splits ---------------------------------------------------------------------------------------
def parse_split(spec: str) -> float | None:
    """``"iid"`` -> None; ``"0.1"`` / ``"dir0.1"`` -> the Dirichlet alpha."""
    s = str(spec).strip().lower()
    if s == "iid":
        return None
    try:
        alpha = float(s[3:] if s.startswith("dir") else s)
    except ValueError:
        raise ConfigError(f"unknown split {spec!r}: use iid or a Dirichlet alpha (0.1, 1.0)") from None
    if not alpha > 0:
        raise ConfigError(f"the Dirichlet alpha must be > 0, got {alpha}")
    return alpha


def split_clients(y: Tensor, num_clients: int, alpha: float | None = None, *, seed: int = 0,
                  min_size: int = 1, max_tries: int = 100) -> list[Tensor]:
    """Indices of each client's examples. ``alpha=None``: IID (a random equal split); else per
    class, Dirichlet(alpha) proportions over the clients, redrawn (up to ``max_tries`` times, as
    is customary) until every client holds at least ``min_size`` examples."""
    y = torch.as_tensor(y).cpu()
    n = int(y.numel())
    if num_clients < 1:
        raise ConfigError(f"need at least one client, got {num_clients}")
    if n < num_clients * min_size:
        raise ConfigError(f"{n} training examples cannot give {num_clients} clients "
                          f"{min_size} example(s) each: use fewer clients")
    rng = np.random.default_rng(derive_seed(seed, 7))
    if alpha is None:
        perm = torch.from_numpy(rng.permutation(n))
        return [p.sort().values for p in torch.tensor_split(perm, num_clients)]
    classes = sorted(int(c) for c in torch.unique(y))
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = torch.nonzero(y == c).flatten().numpy()
            idx = idx[rng.permutation(len(idx))]
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        sizes = [len(p) for p in parts]
        if min(sizes) >= min_size:
            return [torch.tensor(sorted(p), dtype=torch.long) for p in parts]
    raise ConfigError(f"a Dirichlet({alpha:g}) split of {n} examples over {num_clients} clients left "
                      f"a client with fewer than {min_size} example(s) in {max_tries} draws (last "
                      f"sizes {sorted(sizes)}): use fewer clients or a larger alpha")


def describe_split(y: Tensor, parts: Sequence[Tensor], num_classes: int) -> list[list[int]]:
    """Per client, its example count of each class."""
    return [torch.bincount(y[p], minlength=num_classes).tolist() for p in parts]


# -- one-shot: clients send summaries ---------------------------------------------------------------
_globalize = C.globalize_labels  # a client's classes (0..m-1) -> labels over all k classes


def client_summary(real: RealData, idx: Tensor, method: str, ipc: int, *, seed: int,
                   iterations: int | None = None, preset: str | None = None,
                   params: dict[str, Any] | None = None,
                   run: RunOptions | None = None) -> dict[str, Any]:
    """One client's upload: a summary of the classes it holds at least ``ipc`` examples of
    (labels mapped back to the global classes), its stored bytes and CPU time. A client with
    no such class uploads nothing."""
    k = real.info.num_classes
    counts = torch.bincount(real.train.y[idx].cpu(), minlength=k)
    classes = [c for c in range(k) if counts[c] >= ipc]
    rec = {"classes": classes, "examples": int(len(idx)),
           "examples_left_home": int(counts.sum() - counts[classes].sum()) if classes else int(len(idx))}
    if not classes:
        return {**rec, "x": None, "y": None, "bytes": 0, "cpu_s": 0.0, "label_format": "hard",
                "lr": None}
    local = C.train_subset(real, idx, classes=classes)
    with C.Timer() as t:
        syn = C.summary_for(local, method, ipc, seed=seed, iterations=iterations, preset=preset,
                            params=params, run=run)
    x, y = C.summary_tensors(syn)
    return {**rec, "x": x.cpu(), "y": _globalize(y, syn.label_format, classes, k).cpu(),
            "bytes": int(syn.stored_bytes()), "cpu_s": t.cpu, "label_format": syn.label_format,
            "lr": None if syn.lr is None else float(syn.lr.detach())}


def one_shot(real: RealData, parts: Sequence[Tensor], *, method: str = "dm", ipc: int = 10,
             iterations: int | None = None, preset: str | None = None,
             params: dict[str, Any] | None = None, model: str = "convnet",
             protocol: str = "fast", epochs: int | None = None, num_models: int | None = None,
             seed: int = 0, run: RunOptions | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every client distills its part; the server evaluates the union of the summaries
    (``epochs`` overrides the protocol's, recorded in the result's protocol)."""
    import dataclasses

    from ..evaluation import evaluate, get_protocol

    proto = get_protocol(protocol)
    if epochs is not None:
        proto = dataclasses.replace(proto, epochs=epochs)

    uploads = []
    for i, p in enumerate(parts):
        log(f"one-shot {method}: client {i + 1}/{len(parts)} ({len(p)} examples)")
        uploads.append(client_summary(real, p, method, ipc, seed=derive_seed(seed, i),
                                      iterations=iterations, preset=preset, params=params, run=run))
    sent = [u for u in uploads if u["x"] is not None]
    if not sent:
        raise ConfigError(f"no client holds {ipc} examples of any class: lower --ipc")
    fmts = {u["label_format"] for u in sent}
    if len(fmts) > 1:
        raise ConfigError(f"the clients' summaries mix label formats {sorted(fmts)}")
    lrs = [u["lr"] for u in sent if u["lr"] is not None]
    union = C.TensorSet(real.info, torch.cat([u["x"] for u in sent]),
                        torch.cat([u["y"] for u in sent]), label_format=fmts.pop(),
                        lr=float(np.mean(lrs)) if lrs else None,
                        meta={"method": f"one-shot {method}"})
    log(f"one-shot {method}: server trains on the union ({union.num_examples} examples)")
    with C.Timer() as t:
        rep = evaluate(union, real, models=(model,), protocol=proto, num_models=num_models,
                       seed=seed, run=run)
    r = rep.results[model]
    covered = sorted({int(c) for c in union.class_ids.tolist()})
    return {"accuracy": r["mean"], "std": r["std"], "accs": r["accs"],
            "bytes": sum(u["bytes"] for u in uploads), "rounds": 1,
            "examples": union.num_examples, "classes_covered": covered,
            "examples_left_home": sum(u["examples_left_home"] for u in uploads),
            "client_cpu_s": sum(u["cpu_s"] for u in uploads), "server_cpu_s": t.cpu,
            "per_client": [{k: v for k, v in u.items() if k not in ("x", "y")} for u in uploads],
            "protocol": rep.protocol}


# -- the comparison ------------------------------------------------------------------------------
def compare(shot: dict[str, Any], curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """FedAvg at one round, at its last round, at the one-shot's bytes, and the rounds (bytes)
    it needs to reach the one-shot accuracy."""
    within = [c for c in curve if c["bytes"] <= shot["bytes"]]
    at_bytes = within[-1]
    reach = next((c for c in curve[1:] if c["accuracy"] >= shot["accuracy"]), None)
    return {"fedavg_round1": curve[1]["accuracy"] if len(curve) > 1 else math.nan,
            "fedavg_last": curve[-1]["accuracy"], "fedavg_rounds": curve[-1]["round"],
            "fedavg_at_equal_bytes": at_bytes["accuracy"],
            "fedavg_rounds_at_equal_bytes": at_bytes["round"],
            "fedavg_round_bytes": curve[1]["bytes"] if len(curve) > 1 else None,
            "rounds_to_match": None if reach is None else reach["round"],
            "bytes_to_match": None if reach is None else reach["bytes"]}


def run_federated(real: RealData, *, splits: Sequence[str] = ("iid", "1.0", "0.1"),
                  clients: int = 10, method: str = "dm", ipc: int = 10,
                  iterations: int | None = None, preset: str | None = None,
                  params: dict[str, Any] | None = None, rounds: int = 10, local_epochs: int = 1,
                  local_lr: float = 0.01, batch_size: int = 64, model: str = "convnet",
                  protocol: str = "fast", epochs: int | None = None,
                  num_models: int | None = None, seed: int = 0, backend: str = "auto",
                  run: RunOptions | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Both ways to a server model on every split; the results record."""
    if real.info.modality != "image":
        raise ConfigError(f"the federated app runs on image data; {real.info.name} is "
                          f"{real.info.modality}")
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}")
    backend = resolve_backend(backend)
    alphas = {s: parse_split(s) for s in splits}
    out: dict[str, Any] = {}
    for s, alpha in alphas.items():
        parts = split_clients(real.train.y, clients, alpha, seed=seed)
        log(f"split {s}: client sizes {[len(p) for p in parts]}")
        shot = one_shot(real, parts, method=method, ipc=ipc, iterations=iterations, preset=preset,
                        params=params, model=model, protocol=protocol, epochs=epochs,
                        num_models=num_models, seed=seed, run=run, log=log)
        fa = fedavg(real, parts, rounds=rounds, local_epochs=local_epochs, lr=local_lr,
                    batch_size=batch_size, model=model, seed=seed, run=run, backend=backend,
                    log=log)
        fa.pop("final_state")
        out[s] = {"alpha": alpha, "client_sizes": [len(p) for p in parts],
                  "client_classes": describe_split(real.train.y.cpu(), parts, real.info.num_classes),
                  "one_shot": shot, "fedavg": fa, "compare": compare(shot, fa["curve"])}
    settings = {"dataset": real.info.name, "train_examples": len(real.train), "clients": clients,
                "method": method, "ipc": ipc, "iterations": iterations, "preset": preset,
                "params": params or {}, "rounds": rounds, "local_epochs": local_epochs,
                "local_lr": local_lr, "batch_size": batch_size, "model": model,
                "protocol": protocol, "epochs": epochs, "num_models": num_models, "seed": seed,
                "backend": backend,
                "bytes": "FedAvg: model down + up per client per round (float32 parameters and "
                         "buffers); one-shot: the summaries' stored bytes, up once"}
    return {"settings": settings, "splits": out}


# -- output -----------------------------------------------------------------------------------------
def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:.2f}"


def results_table(res: dict[str, Any]) -> str:
    st = res["settings"]
    heads = ["split", f"one-shot {st['method']} %", "MB", "FedAvg 1 round %", "MB/round",
             f"FedAvg {st['rounds']} rounds %", "FedAvg at equal MB %", "rounds to match"]
    rows = []
    for s, r in res["splits"].items():
        o, c = r["one_shot"], r["compare"]
        rows.append([s, f"{o['accuracy']:.2f} ± {o['std']:.2f}", _mb(o["bytes"]),
                     f"{c['fedavg_round1']:.2f}", _mb(c["fedavg_round_bytes"]),
                     f"{c['fedavg_last']:.2f}",
                     f"{c['fedavg_at_equal_bytes']:.2f} ({c['fedavg_rounds_at_equal_bytes']} rounds)",
                     "-" if c["rounds_to_match"] is None else
                     f"{c['rounds_to_match']} ({_mb(c['bytes_to_match'])} MB)"])
    return C.text_table(heads, rows)


def plot(res: dict[str, Any], path) -> Any:
    fig, (ax_b, ax_r) = C.figure(2)
    for i, (s, r) in enumerate(res["splits"].items()):
        color = f"C{i}"
        curve = r["fedavg"]["curve"][1:]
        label = "IID" if r["alpha"] is None else f"Dir({r['alpha']:g})"
        ax_b.plot([c["bytes"] for c in curve], [c["accuracy"] for c in curve], "-o", ms=3,
                  color=color, label=f"FedAvg, {label}")
        o = r["one_shot"]
        ax_b.errorbar([o["bytes"]], [o["accuracy"]], yerr=[o["std"]], fmt="*", ms=12,
                      color=color, label=f"one-shot {res['settings']['method']}, {label}")
        ax_r.plot([c["round"] for c in curve], [c["accuracy"] for c in curve], "-o", ms=3,
                  color=color, label=f"FedAvg, {label}")
        ax_r.errorbar([1], [o["accuracy"]], yerr=[o["std"]], fmt="*", ms=12, color=color)
    ax_b.set_xscale("log")
    ax_b.set_xlabel("communicated bytes (down + up)")
    ax_r.set_xlabel("communication rounds (one-shot = 1)")
    for ax in (ax_b, ax_r):
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    ax_b.legend(fontsize=7)
    st = res["settings"]
    fig.suptitle(f"{st['dataset']}: {st['clients']} clients, IPC {st['ipc']}, {st['model']}",
                 fontsize=10)
    return C.save_figure(fig, path)


def bench_rows(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    st = res["settings"]
    rows = {}
    for s, r in res["splits"].items():
        o, c, fa = r["one_shot"], r["compare"], r["fedavg"]
        label = "IID" if r["alpha"] is None else f"Dirichlet {r['alpha']:g}"
        rows[f"one-shot-{st['method']}-{s}"] = {
            "label": f"one-shot {st['method']} summaries, {label}", "method": st["method"],
            "dataset": st["dataset"], "budget": {"ipc": st["ipc"]},
            "accuracy": {"mean": o["accuracy"], "std": o["std"], "n": len(o["accs"])},
            "protocol": o["protocol"], "stored_bytes": o["bytes"], "iterations_run": st["iterations"],
            "cpu_s": {"distill": o["client_cpu_s"], "evaluate": o["server_cpu_s"]},
            "notes": f"{st['clients']} clients; {o['bytes']} bytes up once; server trains on "
                     f"{o['examples']} examples"}
        rows[f"fedavg-{s}"] = {
            "label": f"FedAvg {c['fedavg_rounds']} rounds, {label}", "method": "fedavg",
            "dataset": st["dataset"], "budget": {},
            "accuracy": {"mean": c["fedavg_last"], "std": None, "n": 1},
            "iterations_run": c["fedavg_rounds"],
            "protocol": {"name": f"FedAvg ({fa['backend']})", "epochs": st["local_epochs"]},
            "cpu_s": {"distill": fa["cpu_s"], "evaluate": None},
            "notes": f"{st['clients']} clients, {st['local_epochs']} local epoch(s)/round, "
                     f"{fa['model_bytes'] * 2 * st['clients']} bytes/round; at the one-shot's "
                     f"bytes: {c['fedavg_at_equal_bytes']:.2f} % "
                     f"({c['fedavg_rounds_at_equal_bytes']} rounds); after 1 round "
                     f"{c['fedavg_round1']:.2f} %"}
    return rows
