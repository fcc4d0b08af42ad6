"""Validation-only diagnostics for Distill-CF on MovieTweetings (how the presets were chosen).

    python bench/recsys_trajectory.py USERS PRESET|none '{"key": value, ...}'   # val nDCG@10 trajectory
    python bench/recsys_trajectory.py full                                      # val reference rows
    python bench/recsys_trajectory.py estimators                                # Gumbel sum vs its mean

The first form prints each 10th step and every validation (steps 25, 40, 50, 75, 80, 100, ...:
val nDCG@10 of a fresh sample of Ω, λ chosen on validation); the second prints ∞-AE's validation
and test nDCG@10 on all real users and on random 500-user subsets (λ chosen on validation).
Nothing here selects on the test split; the test column of ``full`` is the protocol's one test.
"""
import json
import resource
import sys
import time
from pathlib import Path

from datadistill.data import load_dataset
from datadistill.distillers import create_distiller
from datadistill.recsys.evaluation import RECSYS_PROTOCOLS, select_and_test
from datadistill.recsys.subsets import select_users
from datadistill.runtime import tune_allocator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "recsys" / "movietweetings"


def estimators() -> None:
    """The soft sum of γ = 200 Gumbel-softmax draws vs the ``mean`` estimator, on 50 rows of
    2,414 items (random 0/1 rows as Ω, then with Ω moved by up to ±5 and ±20, as Adam can)."""
    import torch

    from datadistill.data import DataInfo
    from datadistill.synsets.users import GumbelUserSet
    info = DataInfo(name="x", modality="recsys", num_classes=1, shape=(2414,))
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 2414, generator=g) < 0.005).float()
    for tau in (10.0, 1.0, 0.3):
        for move in (0.0, 5.0, 20.0):
            syn = GumbelUserSet(info, users=50)
            with torch.no_grad():
                syn.logits.copy_(x + move * torch.randn(50, 2414, generator=g).clamp(-1, 1))
                s = syn.sample(g, samples=200, tau=tau, hard=False)
                m = syn.sample_mean(samples=200, tau=tau)
            print(f"tau {tau} move {move}: mean |gumbel - mean| / mean = {float(((s - m).abs() / m).mean()):.4f}, "
                  f"max abs diff {float((s - m).abs().max()):.4f}, mean entry {float(m.mean()):.4f}", flush=True)


def main() -> None:
    if sys.argv[1] == "estimators":
        return estimators()
    tune_allocator()
    data = load_dataset("movietweetings", data_dir=SHARED)
    if sys.argv[1] == "full":
        t = time.perf_counter()
        r = select_and_test("inf-ae", data.dense("train"), data, protocol=RECSYS_PROTOCOLS["fast"])
        print("full", r["hp"], "val", round(r["val"]["ndcg@10"], 3), "test", round(r["test"]["ndcg@10"], 3),
              round(time.perf_counter() - t), flush=True)
        for s in (0, 1):
            syn = select_users(data, 500, "random", seed=s)
            r = select_and_test("inf-ae", syn.rows, data, protocol=RECSYS_PROTOCOLS["fast"])
            print("random500 seed", s, r["hp"], "val", round(r["val"]["ndcg@10"], 3), "test",
                  round(r["test"]["ndcg@10"], 3), flush=True)
        return
    users, preset = int(sys.argv[1]), (None if sys.argv[2] == "none" else sys.argv[2])
    kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    d = create_distiller("distill-cf", preset, **kw)
    syn = d.init_synset(data, users=users)
    t0 = time.perf_counter()

    def show(e):
        if "val_ndcg@10" in e or e["iteration"] % 10 == 0:
            print(round(time.perf_counter() - t0), {k: (round(v, 4) if isinstance(v, float) else v)
                                                    for k, v in e.items()}, flush=True)
    d.distill(data, syn, [show])
    print("best", d.best_, "history", d.history_, "rss MB",
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)


if __name__ == "__main__":
    main()
