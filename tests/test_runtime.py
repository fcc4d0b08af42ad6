"""Run options (how fast, never what), seeds, checkpoints without pickle, and resuming runs with
other speed settings or more iterations."""
import json
import math

import pytest
import torch

from datadistill import checkpoint as ckpt
from datadistill import perf
from datadistill.distillers import create_distiller
from datadistill.errors import CheckpointError, ConfigError, DatadistillError
from datadistill.runtime import RunOptions, derive_seed
from datadistill.synsets import load_summary


def _dm(**kw):
    return create_distiller("dm", **{"iterations": 6, "batch_real": 32, "seed": 0, **kw})


def test_derive_seed_is_the_documented_formula():
    assert derive_seed(3) == 3 * 1_000_003
    assert derive_seed(3, 7) == 3 * 1_000_003 + 7
    assert derive_seed(2, 4, 5) == 2 * 1_000_003 + 4 * 1009 + 5
    seeds = {derive_seed(s, m, k) for s in range(3) for m in range(3) for k in range(20)}
    assert len(seeds) == 3 * 3 * 20  # distinct sub-seeds


def test_run_options_validate_and_round_trip():
    run = RunOptions(threads=1, fused=False, chunk=64)
    assert RunOptions.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    with pytest.raises(ConfigError, match="unknown run option"):
        RunOptions.from_dict({"fusd": True})
    for bad in (dict(threads=0), dict(chunk=0), dict(workers=0), dict(allocator="jemalloc"),
                dict(compile="sometimes"), dict(precision="fp16")):
        with pytest.raises(ConfigError):
            RunOptions(**bad)


def test_resolve_turns_auto_into_concrete_values(monkeypatch):
    r = perf.resolve(RunOptions(device="cpu", fused=False), {"chunk": 64, "release_memory": True})
    assert (r.device, r.fused, r.compile, r.chunk, r.release_memory) == ("cpu", False, False, 64,
                                                                         True)
    assert r.allocator == "tuned"
    assert perf.resolve(RunOptions(device="cpu", fused=False, chunk=8), {"chunk": 64}).chunk == 8
    # a method that measured that compiling pays gets it, where a compiler exists
    monkeypatch.setattr(perf, "compiler_available", lambda: True)
    assert perf.resolve(RunOptions(fused=False), {"compile": True}).compile is True
    # no compiler: the auto path falls back (the same function), says so once, never raises
    monkeypatch.setattr(perf, "compiler_available", lambda: False)
    monkeypatch.setattr(perf, "_warned", set())
    with pytest.warns(RuntimeWarning, match="compile is off"):
        assert perf.resolve(RunOptions(fused=False), {"compile": True}).compile is False
    with pytest.warns(RuntimeWarning, match="fused CPU kernels are off"):
        assert perf.resolve(RunOptions(device="cpu")).fused is False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the second time is silent
        assert perf.resolve(RunOptions(device="cpu")).fused is False
    with pytest.raises(ConfigError, match="resolved"):
        with perf.activate(RunOptions()):
            pass


def test_activate_sets_and_restores_threads():
    before = torch.get_num_threads()
    run = perf.resolve(RunOptions(device="cpu", fused=False, threads=1))
    with perf.activate(run):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_checkpoint_state_round_trips_without_pickle(tmp_path):
    state = {"iteration": 3, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)},
                                                     1: {"step": torch.tensor(4.0)}},
                                           "param_groups": [{"lr": 0.1, "betas": (0.5, 0.9),
                                                             "params": [0, 1], "foreach": None}]},
             "generator": torch.Generator().manual_seed(1).get_state(),
             "history": [(1, 0.5), (2, float("inf"))], "name": "dm", "nan": math.nan}
    ckpt.save_state(state, tmp_path, "ck")
    ckpt.save_state(state, tmp_path, "ck")  # rewriting keeps one tensor file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck-2.safetensors", "ck.json"]
    back = ckpt.load_state(tmp_path, "ck")
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2))
    assert torch.equal(back["generator"], state["generator"])
    assert back["history"] == [(1, 0.5), (2, float("inf"))] and math.isnan(back["nan"])
    with pytest.raises(TypeError, match="cannot store"):
        ckpt.save_state({"f": object()}, tmp_path, "bad")
    (tmp_path / "ck-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="unreadable or incomplete"):
        ckpt.load_state(tmp_path, "ck")


def test_run_folder_holds_no_pickle(digits, tmp_path):
    d = _dm(iterations=2)
    d.distill(digits, d.init_synset(digits, ipc=2), workdir=tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "checkpoint.json" in files and not any(f.endswith((".pt", ".pkl")) for f in files)


def _interrupted(digits, tmp_path, stop, run=None, **kw):
    d = _dm(**kw)
    s = d.init_synset(digits, ipc=2)

    def halt(ev):
        if ev["iteration"] == stop:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d.distill(digits, s, [halt], workdir=tmp_path, run=run)


def test_resume_with_other_speed_options_continues(digits, tmp_path):
    plain = RunOptions(fused=False, threads=2)
    full = _dm()
    s_full = full.init_synset(digits, ipc=2)
    full.distill(digits, s_full, run=plain)
    _interrupted(digits, tmp_path, 3, run=plain)
    # other threads and chunking: the same function, so the run continues (and here, where
    # every change only reorders nothing, ends on the same summary)
    d = _dm()
    s = d.init_synset(digits, ipc=2)
    d.distill(digits, s, workdir=tmp_path, resume=True,
              run=RunOptions(fused=False, threads=1, chunk=7))
    assert s.meta["iterations"] == 6 and s.meta["run"]["threads"] == 1
    assert s.meta["run"]["chunk"] == 7
    torch.testing.assert_close(s.x, s_full.x, rtol=1e-4, atol=1e-5)


def test_resume_with_more_iterations_extends_the_run(digits, tmp_path):
    plain = RunOptions(fused=False)
    ref = _dm(iterations=8)
    s_ref = ref.init_synset(digits, ipc=2)
    ref.distill(digits, s_ref, run=plain)
    # a finished 6-iteration run, extended to 8
    d = _dm()
    d.distill(digits, d.init_synset(digits, ipc=2), workdir=tmp_path / "a", run=plain)
    d8 = _dm(iterations=8)
    s8 = d8.init_synset(digits, ipc=2)
    d8.distill(digits, s8, workdir=tmp_path / "a", resume=True, run=plain)
    assert torch.equal(s8.x, s_ref.x) and s8.meta["iterations"] == 8
    # an interrupted one (stopped at 3 of 6), continued to 8
    _interrupted(digits, tmp_path / "b", 3, run=plain)
    d8 = _dm(iterations=8)
    s8 = d8.init_synset(digits, ipc=2)
    d8.distill(digits, s8, workdir=tmp_path / "b", resume=True, run=plain)
    assert torch.equal(s8.x, s_ref.x)
    # fewer iterations than done: refused, with what to do
    with pytest.raises(ConfigError, match="past iterations=4"):
        _dm(iterations=4).distill(digits, s8, workdir=tmp_path / "b", resume=True, run=plain)
    # any other parameter: refused, naming it
    with pytest.raises(ConfigError, match="lr_data: 1.0 -> 0.5"):
        _dm(iterations=8, lr_data=0.5).distill(digits, s8, workdir=tmp_path / "b", resume=True)


def test_cli_resume_extends_and_takes_new_speed_flags(tmp_path, capsys):
    from datadistill.cli import main
    run = tmp_path / "run"
    base = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "2", "--set",
            "batch_real=16", "--quiet", "--out", str(run), "--fused", "off"]
    assert main(base + ["--iterations", "3"]) == 0
    assert load_summary(run / "summary").meta["iterations"] == 3
    assert main(["distill", "--out", str(run), "--resume", "--iterations", "5", "--quiet",
                 "--threads", "1", "--fused", "off"]) == 0
    meta = load_summary(run / "summary").meta
    assert meta["iterations"] == 5 and meta["run"]["threads"] == 1
    # a changed method parameter is an error message, not a traceback
    assert main(["distill", "--out", str(run), "--resume", "--set", "lr_data=0.5",
                 "--quiet"]) == 2
    assert "lr_data" in capsys.readouterr().err


def test_every_library_error_is_one_class():
    from datadistill import errors
    from datadistill.registry import UnknownNameError
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not DatadistillError:
            assert issubclass(obj, DatadistillError), name
    assert issubclass(UnknownNameError, KeyError)  # still what a caller would catch
