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
- embarrassingly parallel work across 2 gloo ranks: the K evaluation models (the same per-model
  accuracies as 1 process; rank 0 reports) and MTT/TESLA's expert trajectories (the same files,
  byte for byte, with a shared cache folder and with one folder per rank).
- no host reads inside a step beyond its metrics: a CPU proxy and the CUDA check (skipped
  without a GPU): DM, MTT and DC.
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


# -- embarrassingly parallel work across ranks: evaluation models, expert trajectories -------------
EVAL_MODELS = ("convnet", "mlp")


def _eval_protocol():
    from datadistill.evaluation import Protocol
    return Protocol("tiny", epochs=6, num_models=3, dsa=True)


def _eval_summary(real):
    from datadistill.synsets import init_from
    return init_from(real, 3, generator=torch.Generator().manual_seed(0))


def _expert_config():
    from datadistill.experts import EXPERT_PRESETS, ExpertConfig
    return ExpertConfig(**EXPERT_PRESETS["tiny"], seed=5)


ONE_THREAD = RunOptions(device="cpu", threads=1, fused=False, compile=False)


def _parallel_worker(r: int, w: int, init: str, out: str) -> None:
    import torch.distributed as tdist

    from datadistill.data import load_dataset
    from datadistill.evaluation import evaluate
    from datadistill.experts import load_experts

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=init, rank=r, world_size=w)
    try:
        real = load_dataset("digits")
        seen = []
        rep = evaluate(_eval_summary(real), real, models=EVAL_MODELS, protocol=_eval_protocol(),
                       seed=3, run=ONE_THREAD, on_model=seen.append)
        res = {"accs": {m: rep.results[m]["accs"] for m in EVAL_MODELS}, "seen": seen}
        cfg = _expert_config()
        shared = load_experts(real, cfg, root=Path(out) / "experts-shared", fused=False)
        own = load_experts(real, cfg, root=Path(out) / f"experts-rank{r}", fused=False)
        res["experts"] = {"shared": [shared[i] for i in range(len(shared))],
                          "own": [own[i] for i in range(len(own))]}
        torch.save(res, Path(out) / f"parallel-rank{r}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks_parallel(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist-parallel")
    init = f"file://{out / 'rendezvous'}"
    mp.spawn(_parallel_worker, args=(2, init, str(out)), nprocs=2, join=True)
    return out, [torch.load(out / f"parallel-rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_evaluation_models_split_over_ranks_match_one_process(two_ranks_parallel, digits):
    from datadistill.evaluation import evaluate

    _, ranks = two_ranks_parallel
    seen = []
    one = evaluate(_eval_summary(digits), digits, models=EVAL_MODELS, protocol=_eval_protocol(),
                   seed=3, run=ONE_THREAD, on_model=seen.append)
    for res in ranks:  # every rank returns the full report (all-gathered), identical per model
        for m in EVAL_MODELS:
            assert res["accs"][m] == one.results[m]["accs"]
    # rank 0 reports every model (its own first, then rank 1's); rank 1 reports none
    key = lambda e: (e["model"], e["index"])  # noqa: E731
    assert sorted(ranks[0]["seen"], key=key) == sorted(seen, key=key)
    assert ranks[1]["seen"] == []


@pytest.mark.slow
def test_experts_split_over_ranks_match_one_process(two_ranks_parallel, digits, tmp_path):
    from datadistill.experts import _expert_file, load_experts

    out, ranks = two_ranks_parallel
    cfg = _expert_config()
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the same thread count, the same arithmetic
    try:
        one = load_experts(digits, cfg, root=tmp_path / "one", fused=False)
    finally:
        torch.set_num_threads(prev)
    # a shared cache folder (each rank wrote its own experts) and one folder per rank (no shared
    # filesystem: the missing expert was sent over): the same files as 1 process's, byte for byte
    folders = [out / "experts-shared", out / "experts-rank0", out / "experts-rank1"]
    for i in range(cfg.num_experts):
        ref = _expert_file(tmp_path / "one", i).read_bytes()
        for f in folders:
            assert _expert_file(f, i).read_bytes() == ref
        for res in ranks:
            for which in ("shared", "own"):
                assert torch.equal(res["experts"][which][i], one[i])


# -- host-device copies inside the inner loops -----------------------------------------------------
# The rule: one outer step reads back from the device only the metrics it returns (one value
# each). On CUDA a read of a device tensor (``float(t)``, ``t.item()``, ``if t:`` ...) is a
# copy to the host and a synchronization; inside a loop (DC's outer loop, the inner training's
# mini-batches, MTT's synthetic steps) it serializes the GPU once per iteration.
#
# On CPU there is no device to copy from, so the CPU test is a proxy: it counts the reads of
# floating-point and boolean tensors during one step (the integers drawn from the CPU generators,
# ``int(torch.randint(..., generator=...))``, are host-side draws and are not counted). The CUDA
# test counts what CUDA itself calls synchronizing (``torch.cuda.set_sync_debug_mode("warn")``).
# DC once read its loss per outer loop and ``train_model`` per mini-batch (fixed: summed on the
# device, read once; the inner training skips its per-call finiteness check, a NaN shows in the
# step's loss).
SYNC_METHODS = ("dm", "mtt", "dc")
_READS = ("item", "__float__", "__bool__", "tolist", "numpy")


class _CountReads:
    """Counts host reads of floating-point/bool tensors (``_READS``) while active."""

    def __init__(self, monkeypatch):
        self.n, self.where = 0, []
        for name in _READS:
            orig = getattr(torch.Tensor, name)

            def read(t, *a, _orig=orig, _name=name, **kw):
                if t.dtype.is_floating_point or t.dtype == torch.bool:
                    import traceback
                    self.n += 1
                    self.where.append(f"{_name} at {traceback.extract_stack()[-2].filename}:"
                                      f"{traceback.extract_stack()[-2].lineno}")
                return _orig(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, read)


def _one_step(method: str, real, device: str, count):
    from datadistill.distillers import DISTILLERS

    d = DISTILLERS.get(method).from_config("tiny", seed=1, iterations=1)
    syn = d.init_synset(real, ipc=2)
    d.distill(real, syn, run=RunOptions(device=device, fused=False, compile=False))
    with count() as c:  # one more outer step, set up as distill left it
        metrics = d.step(real, syn)
    return c, metrics


@pytest.mark.parametrize("method", SYNC_METHODS)
def test_a_step_reads_back_only_its_metrics_cpu_proxy(method, digits, monkeypatch):
    import contextlib

    @contextlib.contextmanager
    def count():
        with monkeypatch.context() as m:
            yield _CountReads(m)
    c, metrics = _one_step(method, digits, "cpu", count)
    assert c.n <= len(metrics), f"{c.n} host reads for {len(metrics)} metrics: {c.where}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", SYNC_METHODS)
def test_a_step_synchronizes_only_for_its_metrics_on_cuda(method, digits):
    import contextlib
    import warnings

    @contextlib.contextmanager
    def count():
        class C:
            n, where = 0, []
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                yield C
                torch.cuda.set_sync_debug_mode("default")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        C.where = [str(w.message) for w in rec if "synchroniz" in str(w.message)]
        C.n = len(C.where)
    c, metrics = _one_step(method, digits, "cuda", count)
    assert c.n <= len(metrics), f"{c.n} synchronizing calls for {len(metrics)} metrics: {c.where}"
