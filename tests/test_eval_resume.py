"""An interrupted image evaluation continues (``evaluate(..., state_dir=...)``): each model's
training state is kept, a second call with the same folder resumes the interrupted model after
its last saved pass and skips the finished ones, and the accuracies are the uninterrupted
evaluation's, bit for bit (same run options). A state of another evaluation (other summary,
protocol or seed) is not used."""
from __future__ import annotations

import pytest
import torch

from datadistill.errors import ConfigError
from datadistill.evaluation import Protocol, evaluate
from datadistill.evaluation import images as ev_images
from datadistill.runtime import RunOptions
from datadistill.synsets import init_from

TINY = Protocol("tiny", epochs=6, num_models=3, dsa=True)  # reference schedule: 7 passes
ONE_THREAD = RunOptions(device="cpu", threads=1, fused=False, compile=False)


class Stop(Exception):
    pass


def _counting(monkeypatch, stop_at=None):
    """Count the training passes run (all models); raise ``Stop`` at pass ``stop_at``."""
    seen, stopped = [], []
    real = ev_images.check_loss

    def check(losses, epoch, loss, model, lr):
        seen.append(epoch)
        if stop_at is not None and len(seen) == stop_at and not stopped:
            stopped.append(epoch)
            raise Stop
        real(losses, epoch, loss, model, lr)

    monkeypatch.setattr(ev_images, "check_loss", check)
    return seen


@pytest.fixture(scope="module")
def syn(digits):
    return init_from(digits, 2, generator=torch.Generator().manual_seed(0))


def test_an_interrupted_evaluation_continues_with_the_same_accuracies(digits, syn, tmp_path,
                                                                      monkeypatch):
    whole = evaluate(syn, digits, models=["convnet"], protocol=TINY, seed=5, run=ONE_THREAD)
    monkeypatch.setattr(ev_images, "STATE_EVERY_S", 0.0)  # keep the state after every pass
    seen = _counting(monkeypatch, stop_at=7 + 3)  # model 0 done (7 passes), model 1 after 2
    with pytest.raises(Stop):
        evaluate(syn, digits, models=["convnet"], protocol=TINY, seed=5, run=ONE_THREAD,
                 state_dir=tmp_path)
    seen.clear()
    again = evaluate(syn, digits, models=["convnet"], protocol=TINY, seed=5, run=ONE_THREAD,
                     state_dir=tmp_path)
    # model 0 is not trained again; model 1 continues after its 2nd pass; model 2 in full
    assert seen == [2, 3, 4, 5, 6] + list(range(7))
    # the CPU the first call spent on model 0 and on model 1's two saved passes is reported
    assert again.summary["resumed_cpu_s"] > 0
    assert again.results["convnet"]["accs"] == whole.results["convnet"]["accs"]
    assert again.results["convnet"]["train_loss_first_last"] == \
        whole.results["convnet"]["train_loss_first_last"]
    seen.clear()  # everything finished: a third call trains nothing
    third = evaluate(syn, digits, models=["convnet"], protocol=TINY, seed=5, run=ONE_THREAD,
                     state_dir=tmp_path)
    assert seen == [] and third.results["convnet"]["accs"] == whole.results["convnet"]["accs"]
    assert third.summary["resumed_cpu_s"] > again.summary["resumed_cpu_s"]  # all three models


def test_the_state_of_another_evaluation_is_not_used(digits, syn, tmp_path, monkeypatch):
    evaluate(syn, digits, models=["convnet"], protocol=TINY, seed=5, run=ONE_THREAD,
             state_dir=tmp_path)
    seen = _counting(monkeypatch)
    other = init_from(digits, 2, generator=torch.Generator().manual_seed(1))
    for kw in ({"syn": other, "seed": 5}, {"syn": syn, "seed": 6}):
        seen.clear()
        evaluate(kw["syn"], digits, models=["convnet"], protocol=TINY, seed=kw["seed"],
                 run=ONE_THREAD, state_dir=tmp_path)
        assert len(seen) == 3 * 7  # every model trained afresh


def test_state_dir_is_for_image_summaries():
    from datadistill.data import DataInfo
    from datadistill.synsets.users import UserRowSet

    syn = UserRowSet(DataInfo("r", "recsys", 1, (30,)), users=2)
    with pytest.raises(ConfigError, match="state_dir"):
        evaluate(syn, None, state_dir="x")


def test_cli_evaluate_keeps_its_state(digits, syn, tmp_path, capsys):
    from datadistill.cli import main as cli_main

    syn.save(tmp_path / "s")
    args = ["evaluate", str(tmp_path / "s"), "--protocol", "smoke", "--threads", "1", "--json",
            "--state-dir", str(tmp_path / "state")]
    assert cli_main(args) == 0
    first = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["0-convnet-0"]
    assert (tmp_path / "state" / "0-convnet-0" / "result.json").exists()
    assert cli_main(args) == 0  # (the kept result: nothing trained, the same report)
    import json
    a, b = json.loads(first), json.loads(capsys.readouterr().out)
    assert a["results"]["convnet"]["accs"] == b["results"]["convnet"]["accs"]
