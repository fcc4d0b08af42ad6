import pytest
import torch

from datadistill.distillers import ConfigError, NonFiniteLossError, create_distiller
from datadistill.models import create_model
from datadistill.objectives import class_means, mean_embedding_distance
from datadistill.synsets import load_summary


def _dm(**kw):
    return create_distiller("dm", **{"iterations": 6, "batch_real": 32, **kw})


def test_dm_reduces_the_matching_objective(digits):
    d = _dm(iterations=40, dsa=False)
    syn = d.init_synset(digits, ipc=2)

    def objective():  # on a fixed set of random networks, never seen in training
        tot = 0.0
        for s in range(5):
            net = create_model("convnet", digits.info, generator=torch.Generator().manual_seed(100 + s))
            with torch.no_grad():
                mr = class_means(net.embed(digits.train.x), digits.train.y, 10)
                ms = class_means(net.embed(syn.x), syn.class_ids, 10)
            tot += float(mean_embedding_distance(mr, ms))
        return tot
    before = objective()
    d.distill(digits, syn)
    assert objective() < 0.7 * before


def test_resume_matches_uninterrupted_run(digits, tmp_path):
    full = _dm()
    s_full = full.init_synset(digits, ipc=2)
    full.distill(digits, s_full)

    d1 = _dm()
    s1 = d1.init_synset(digits, ipc=2)

    def stop_at_3(ev):
        if ev["iteration"] == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d1.distill(digits, s1, [stop_at_3], workdir=tmp_path)
    kept = load_summary(tmp_path / "summary")
    assert kept.meta["iterations"] == 3 and (tmp_path / "checkpoint.json").exists()
    assert not torch.equal(kept.x, s_full.x)

    d2 = _dm()
    s2 = d2.init_synset(digits, ipc=2)
    d2.distill(digits, s2, workdir=tmp_path, resume=True)
    assert torch.equal(s2.x, s_full.x)
    assert load_summary(tmp_path / "summary").meta["iterations"] == 6

    with pytest.raises(ConfigError, match="different parameters"):
        _dm(lr_data=0.5).distill(digits, s2, workdir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        _dm().distill(digits, s2, workdir=tmp_path / "none", resume=True)


def test_crash_keeps_last_completed_iteration(digits, tmp_path):
    d = _dm()
    syn = d.init_synset(digits, ipc=2)
    calls = {"n": 0}
    real_step = d.step

    def flaky(real, s):
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                s.x.add_(1.0)  # half-done work...
            raise RuntimeError("boom")  # ...then a crash
        return real_step(real, s)
    d.step = flaky
    with pytest.raises(RuntimeError, match="boom"):
        d.distill(digits, syn, workdir=tmp_path)
    kept = load_summary(tmp_path / "summary")
    assert kept.meta["iterations"] == 3
    assert torch.equal(kept.x, syn.x)  # rolled back to the end of iteration 3


def test_nan_loss_stops_and_keeps_last_good(digits, tmp_path):
    d = _dm(lr_data=1e30)  # diverges: the summary overflows to inf/NaN within a few steps
    syn = d.init_synset(digits, ipc=2)
    from datadistill.runtime import RunOptions
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        # (plain PyTorch: its float32 instance norm overflows on ~1e30 inputs; the fused
        # kernel's normalisation stays finite a few steps longer)
        d.distill(digits, syn, workdir=tmp_path, run=RunOptions(fused=False))
    assert syn.check_finite()
    kept = load_summary(tmp_path / "summary")
    assert torch.isfinite(kept.x).all() and torch.equal(kept.x, syn.x)


def test_config_checks():
    with pytest.raises(ConfigError, match="has no parameter"):
        create_distiller("dm", lr_img=1.0)
    with pytest.raises(ConfigError, match="unknown preset"):
        create_distiller("dm", "gpu-xl")
    with pytest.raises(ConfigError, match="has no parameter.*precision"):
        create_distiller("dm", precision="bf16")  # a run option, not a method parameter
    from datadistill.runtime import RunOptions
    with pytest.raises(ConfigError, match="unknown precision"):
        RunOptions(precision="fp8")
    with pytest.raises(ConfigError, match="must be true, false or 'auto'"):
        RunOptions(fused="yes")
    d = create_distiller("dm", "cpu-200", seed=3)
    assert d.iterations == 200 and d.seed == 3 and d.lr_data == 1.0
    assert create_distiller("dm").iterations == 20000  # the published default


def test_summary_saved_from_a_callback_records_its_iteration(digits, tmp_path):
    """Benchmarks snapshot the summary from the per-iteration event: the saved metadata must
    say that iteration, not the one of the last checkpoint (checkpoints are time-based)."""
    d = create_distiller("dm", iterations=5, batch_real=16, seed=0)
    syn = d.init_synset(digits, ipc=1)
    seen = []

    def snap(ev):
        syn.save(tmp_path / f"it{ev['iteration']}")
        seen.append(ev["iteration"])

    d.distill(digits, syn, [snap], workdir=tmp_path / "run", checkpoint_every_s=1e9)
    assert seen == [1, 2, 3, 4, 5]
    for it in seen:
        assert load_summary(tmp_path / f"it{it}").meta["iterations"] == it
