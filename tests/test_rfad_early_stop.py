"""RFAD's early stopping on the validation split (the reference's rule; parity with its numbers in
``test_parity_kernel.py::test_rfad_early_stopping_matches_reference``): validation every
``val_every`` iterations from iteration 0, the best (lowest validation loss) summary kept, a stop at
the first check more than ``patience`` iterations after the best, and all of it through a resume."""
import pytest
import torch

from datadistill.distillers import create_distiller
from datadistill.errors import CheckpointError, ConfigError
from datadistill.data.base import RealData, Split


def scripted(d, best_at: int):
    """Validation losses |iteration - best_at| + 1: improving until ``best_at``, then worse."""
    d.validation_loss = lambda syn: (abs(d.steps_ - best_at) + 1.0, 0.5)


def state(d, syn):
    return (syn.x.detach().clone(), syn.y.detach().clone(), d.log_tau_.detach().clone(),
            d.raw_x_.detach().clone(), d.transform_.detach().clone())


def assert_same(a, b):
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_rfad_stops_after_patience_and_keeps_the_best_summary(digits):
    d = create_distiller("rfad", "tiny", iterations=50, val_every=2, patience=4)
    syn = d.init_synset(digits, ipc=1)
    scripted(d, best_at=6)
    seen, at = [], {}
    d.distill(digits, syn, [seen.append, lambda e: at.__setitem__(e["iteration"], state(d, syn))])
    # checks at 0, 2, ..., the best at 6; the first check past 6 + 4 is 12: the run ends there
    # (the check of the initial summary, iteration 0, is reported with the first step's metrics)
    assert [(e["iteration"], e["val_iteration"]) for e in seen if "val_loss" in e] == \
        [(1, 0), (2, 2), (4, 4), (6, 6), (8, 8), (10, 10), (12, 12)]
    assert d.stopped_ and len(seen) == 12 and syn.meta["iterations"] == 12
    assert syn.meta["best_iteration"] == 6 and syn.meta["stopped_early"] is True
    assert [h[0] for h in syn.meta["validation"]] == [0, 2, 4, 6, 8, 10, 12]
    assert not torch.equal(at[11][0], at[6][0])  # training moved on after the best ...
    assert_same(state(d, syn), at[6])             # ... and the run ends with the best summary


def test_rfad_without_a_stop_ends_with_the_best_validated_summary(digits):
    d = create_distiller("rfad", "tiny", iterations=7, val_every=3, patience=None)
    syn = d.init_synset(digits, ipc=1)
    scripted(d, best_at=3)
    at = {}
    d.distill(digits, syn, [lambda e: at.__setitem__(e["iteration"], state(d, syn))])
    # checks at 0, 3, 6 and the last iteration (7, no multiple of 3); the best (3) is kept
    assert [h[0] for h in d.early_.history] == [0, 3, 6, 7] and not d.stopped_
    assert syn.meta["iterations"] == 7 and syn.meta["best_iteration"] == 3
    assert_same(state(d, syn), at[3])
    # val_every=0: no validation, the last summary (the deviation kept as an option)
    off = create_distiller("rfad", "tiny", iterations=3, val_every=0)
    syn_off = off.init_synset(digits, ipc=1)
    off.distill(digits, syn_off)
    assert off.val_ is None and "best_iteration" not in syn_off.meta


@pytest.mark.parametrize("interrupt_at", [3, 9])
def test_rfad_early_stopping_survives_a_resume(digits, tmp_path, interrupt_at):
    """Interrupted before the best (3) or between the best and the stop (9): the resumed run
    stops where the uninterrupted one does, with the same kept summary and validation history."""
    def make():
        d = create_distiller("rfad", "tiny", iterations=40, val_every=2, patience=4)
        scripted(d, best_at=6)
        return d, d.init_synset(digits, ipc=1)
    d, syn = make()
    d.distill(digits, syn)
    d1, syn1 = make()

    def interrupt(e):
        if e["iteration"] == interrupt_at:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d1.distill(digits, syn1, [interrupt], workdir=tmp_path)
    d2, syn2 = make()
    rest = []
    d2.distill(digits, syn2, [rest.append], workdir=tmp_path, resume=True)
    assert rest[0]["iteration"] == interrupt_at + 1 and rest[-1]["iteration"] == 12
    assert d2.stopped_ and d2.early_.history == d.early_.history
    assert syn2.meta["best_iteration"] == 6 and syn2.meta["iterations"] == 12
    assert_same(state(d2, syn2), state(d, syn))
    # resuming a run that stopped early does not step again
    d3, syn3 = make()
    more = []
    d3.distill(digits, syn3, [more.append], workdir=tmp_path, resume=True)
    assert more == [] and syn3.meta["iterations"] == 12


def test_rfad_real_validation_resumes_exactly(digits, tmp_path):
    """With the real validation (the split ``real.val``, fixed networks): the same losses and the
    same kept summary after a resume, and the training trajectory is the one without validation."""
    kw = dict(iterations=6, val_every=2, patience=None)
    d = create_distiller("rfad", "tiny", **kw)
    syn = d.init_synset(digits, ipc=1)
    seen = []
    d.distill(digits, syn, [seen.append])
    assert all(0 < h[1] < 10 and 0 <= h[2] <= 1 for h in d.early_.history)
    d1 = create_distiller("rfad", "tiny", **kw)
    syn1 = d1.init_synset(digits, ipc=1)

    def interrupt(e):
        if e["iteration"] == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d1.distill(digits, syn1, [interrupt], workdir=tmp_path)
    d2 = create_distiller("rfad", "tiny", **kw)
    syn2 = d2.init_synset(digits, ipc=1)
    d2.distill(digits, syn2, workdir=tmp_path, resume=True)
    assert d2.early_.history == d.early_.history
    assert_same(state(d2, syn2), state(d, syn))
    # validation draws from its own generator: the training losses are those of a run without it
    off = create_distiller("rfad", "tiny", iterations=6, val_every=0)
    syn_off = off.init_synset(digits, ipc=1)
    plain = []
    off.distill(digits, syn_off, [plain.append])
    assert [e["loss"] for e in plain] == [e["loss"] for e in seen]


def test_rfad_early_stopping_needs_a_validation_split(digits):
    empty = RealData(digits.info, digits.train, Split(digits.val.x[:0], digits.val.y[:0]), digits.test)
    d = create_distiller("rfad", "tiny")
    with pytest.raises(ConfigError, match="validation split"):
        d.distill(empty, d.init_synset(empty, ipc=1))
    with pytest.raises(ConfigError, match="val_every"):
        create_distiller("rfad", val_every=-1)
    # a checkpoint written before the early stopping existed has no validation state to resume
    syn = d.init_synset(digits, ipc=1)
    d.setup(digits, syn)
    old = {k: v for k, v in d.extra_state().items() if k not in ("steps", "stopped", "early_stopping")}
    with pytest.raises(CheckpointError, match="predates"):
        d.load_extra_state(old)
