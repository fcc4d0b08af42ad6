"""Distillation on torch.distributed (``datadistill.dist``) and the CUDA paths.

- 2 gloo processes (torch.multiprocessing spawn, a ``file://`` rendezvous) give the same DM and
  DC summaries as 1 process, within ``RTOL``/``ATOL`` (the all-reduce reorders float32 sums;
  measured: DM <= 3e-7, DC <= 2e-5 absolute, see docs/distributed.md), and every rank holds
  the same summary.
- rank 0 alone writes the summary and checkpoint, which resume with a different number of
  processes (2 -> 1).
- ``dist.shard`` partitions exactly; one process is the identity.
- every method's ``tiny`` preset on ``cuda`` (skipped without a GPU); ``perf.resolve`` never picks
  the fused CPU kernels on CUDA (CUDA availability mocked).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from datadistill import dist
from datadistill.runtime import RunOptions

#: 1 process vs 2 processes: float32 sums reordered by the all-reduce
RTOL, ATOL = 1e-4, 1e-4
METHODS = ("dm", "dc")
RESUME_AT = 2  # the DM run with a workdir stops here; 1 process resumes it to the tiny preset's end


def _run(method: str, real, *, iterations=None, workdir=None, resume=False):
    from datadistill.distillers import DISTILLERS

    over = {"seed": 7}
    if iterations is not None:
        over["iterations"] = iterations
    d = DISTILLERS.get(method).from_config("tiny", **over)
    syn = d.init_synset(real, ipc=2)
    d.distill(real, syn, workdir=workdir, resume=resume,
              run=RunOptions(device="cpu", fused=False, compile=False))
    return {k: v.detach().clone() for k, v in syn.state_dict().items()}, syn.meta


def _worker(r: int, w: int, init: str, out: str) -> None:
    import torch.distributed as tdist

    from datadistill.data import load_dataset

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=init, rank=r, world_size=w)
    try:
        real = load_dataset("digits")
        res = {}
        for m in METHODS:
            res[m], meta = _run(m, real)
            res[m + ".world"] = torch.tensor(meta.get("world_size", 1))
        wd = Path(out) / "ck"
        res["dm.partial"], _ = _run("dm", real, iterations=RESUME_AT, workdir=wd)
        torch.save(res, Path(out) / f"rank{r}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist")
    init = f"file://{out / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_shard_partitions_exactly():
    for n in (0, 1, 5, 16, 17):
        for w in (1, 2, 3, 4):
            got = [i for r in range(w) for i in range(n)[dist.shard(n, r, w)]]
            assert got == list(range(n))
            sizes = [len(range(n)[dist.shard(n, r, w)]) for r in range(w)]
            assert max(sizes) - min(sizes) <= 1


def test_single_process_is_identity():
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    t = torch.arange(3.0)
    assert dist.all_reduce_sum(t) is t and torch.equal(t, torch.arange(3.0))
    assert dist.backend_for("cpu") == "gloo"
    assert not dist.init_from_env("cpu")  # no WORLD_SIZE > 1: nothing to initialize


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_gloo_ranks_match_one_process(two_ranks, digits, method):
    _, ranks = two_ranks
    one, meta = _run(method, digits)
    assert "world_size" not in meta
    for res in ranks:
        assert int(res[method + ".world"]) == 2
        for k, v in one.items():
            torch.testing.assert_close(res[method][k], v, rtol=RTOL, atol=ATOL)
    for k in one:  # the summary is replicated: both ranks hold the same one, bit for bit
        assert torch.equal(ranks[0][method][k], ranks[1][method][k])


@pytest.mark.slow
def test_rank0_checkpoint_resumes_with_another_world_size(two_ranks, digits):
    from datadistill import checkpoint as ckpt

    out, ranks = two_ranks
    wd = out / "ck"
    assert (wd / "summary").exists() and ckpt.exists(wd, "checkpoint")
    assert int(ckpt.load_state(wd, "checkpoint")["iteration"]) == RESUME_AT
    resumed, _ = _run("dm", digits, workdir=wd, resume=True)  # 2 processes -> 1 process
    straight, _ = _run("dm", digits)
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, rtol=RTOL, atol=ATOL)


# -- CUDA -----------------------------------------------------------------------------------------
def test_resolve_never_picks_fused_kernels_on_cuda(monkeypatch):
    from datadistill import perf

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for run in (RunOptions(device="cuda"), RunOptions(device="auto"), RunOptions()):
        assert perf.resolve(run).fused is False
    from datadistill.errors import ConfigError
    with pytest.raises(ConfigError):
        perf.resolve(RunOptions(device="cuda", fused=True))
    assert dist.backend_for("cuda") == ("nccl" if torch.distributed.is_nccl_available()
                                        else "gloo")


def _tiny_cases():
    from datadistill.distillers import DISTILLERS
    return sorted(DISTILLERS.names())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", _tiny_cases())
def test_tiny_preset_on_cuda(method, tmp_path_factory):
    from test_contract import load_test_dataset

    from datadistill.distillers import DISTILLERS

    cls = DISTILLERS.get(method)
    if "tiny" not in cls.presets:
        pytest.skip(f"{method} has no tiny preset")
    real = load_test_dataset(cls.test_dataset, tmp_path_factory)
    d = cls.from_config("tiny")
    syn = d.init_synset(real, **cls.test_budget)
    d.distill(real, syn, run=RunOptions(device="cuda"))
    assert d.run_.device.startswith("cuda") and d.run_.fused is False
    assert syn.check_finite()
