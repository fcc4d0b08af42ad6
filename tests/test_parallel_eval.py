"""The K evaluation models in parallel (``evaluation.parallel.map_tasks``).

- ``RunOptions(workers=2)`` trains the models in 2 spawn worker processes and gives the same
  per-model accuracies, in the same order, as the sequential path (1 thread per process on both
  sides, so the arithmetic is the same); ``on_model`` still sees every model in order.
- an exception in a worker reaches the caller (a diverging network stops the evaluation).
- text/tabular share ``text.fit_networks``: same accuracies with 2 workers.
The split over the ranks of a process group is tested in ``tests/test_distributed.py``.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from datadistill.evaluation import Protocol, evaluate
from datadistill.evaluation.parallel import map_tasks
from datadistill.runtime import RunOptions
from datadistill.synsets import init_from

TINY = Protocol("tiny", epochs=6, num_models=3, dsa=True)
ONE_THREAD = RunOptions(device="cpu", threads=1, fused=False, compile=False)


def _square(ctx, t):
    return ctx * t * t


def test_map_tasks_order_and_context():
    seen = []
    assert map_tasks(_square, [1, 2, 3], context=2, on_result=lambda i, r: seen.append((i, r))) \
        == [2, 8, 18]
    assert seen == [(0, 2), (1, 8), (2, 18)]
    seen.clear()
    assert map_tasks(_square, [1, 2, 3], context=2, workers=2, threads=2,
                     on_result=lambda i, r: seen.append((i, r))) == [2, 8, 18]
    assert seen == [(0, 2), (1, 8), (2, 18)]


@pytest.mark.slow
def test_two_workers_give_the_sequential_accuracies(digits):
    syn = init_from(digits, 3, generator=torch.Generator().manual_seed(0))
    models = ("convnet", "mlp")
    seq_seen, par_seen = [], []
    seq = evaluate(syn, digits, models=models, protocol=TINY, seed=3, run=ONE_THREAD,
                   on_model=seq_seen.append)
    par = evaluate(syn, digits, models=models, protocol=TINY, seed=3,
                   run=ONE_THREAD.replace(workers=2, threads=2), on_model=par_seen.append)
    for m in models:
        assert len(seq.results[m]["accs"]) == TINY.num_models
        assert par.results[m]["accs"] == seq.results[m]["accs"]  # identical, model by model
        assert par.results[m]["train_loss_first_last"] == seq.results[m]["train_loss_first_last"]
    assert par_seen == seq_seen
    assert par.run["workers"] == 2


@pytest.mark.slow
def test_worker_errors_reach_the_caller(digits):
    syn = init_from(digits, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="diverged"):
        evaluate(syn, digits, models=("mlp",), protocol=dataclasses.replace(TINY, lr=1e12),
                 run=ONE_THREAD.replace(workers=2, threads=2))


@pytest.mark.slow
def test_tabular_networks_in_two_workers():
    from datadistill.data import load_dataset
    from datadistill.distillers import create_distiller

    toy = load_dataset("tabular-toy")
    syn = create_distiller("dm", "tiny", model="mlp", dsa=False).init_synset(toy, ipc=2)
    seq = evaluate(syn, toy, models=("mlp",), protocol="smoke", num_models=3, run=ONE_THREAD)
    par = evaluate(syn, toy, models=("mlp",), protocol="smoke", num_models=3,
                   run=ONE_THREAD.replace(workers=2, threads=2))
    for k in ("mlp", "mlp:balanced"):
        assert len(seq.results[k]["accs"]) == 3
        assert par.results[k]["accs"] == seq.results[k]["accs"]
