"""The full-data reference (herding's and k-center's feature network, "% of full") keeps its
training's state after every pass: an interrupted training continues from it and ends with the
model an uninterrupted one trains, bit for bit; the partial state goes once the model is cached;
the cache key of already-cached networks is unchanged."""
from __future__ import annotations

import pytest
import torch

from datadistill.evaluation import reference as ref
from datadistill.train import train_model


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# ``quick`` (the herding default: lr x0.1 in place from pass 2 of 4) and the ``reference``
# schedule (7 passes, a new SGD from pass 5 of them): interrupted before and after the lr drop
@pytest.mark.parametrize("settings,stop_after", [
    ({"epochs": 4}, 1), ({"epochs": 4}, 3),
    ({"preset": "converged", "epochs": 6}, 2), ({"preset": "converged", "epochs": 6}, 6),
])
def test_an_interrupted_full_training_resumes_bit_identically(digits, monkeypatch, settings,
                                                              stop_after):
    net, rec = ref.full_data_model(digits, "convnet", settings=settings)
    want = _weights(net)
    key = ref._key(digits, "convnet", ref.resolve_settings(settings)[1])
    entry, partial = ref.cache_dir() / f"{key}.safetensors", ref.cache_dir() / f"{key}.partial"
    assert entry.exists() and not partial.exists()  # (an uninterrupted run leaves no partial)
    for p in ref.cache_dir().iterdir():  # the same training again, from nothing
        p.unlink()

    calls = []

    def interrupted(*a, on_state, resume=None, **kw):
        calls.append(None if resume is None else resume["epoch"])

        def save_then_stop(state):
            on_state(state)
            if state["epoch"] == stop_after:
                raise KeyboardInterrupt("stopped after a pass")
        return train_model(*a, on_state=save_then_stop, resume=resume, **kw)

    monkeypatch.setattr(ref, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ref.full_data_model(digits, "convnet", settings=settings)
    assert not entry.exists() and (partial / f"{ref.PARTIAL}.json").exists()

    def spy(*a, resume=None, **kw):
        calls.append(None if resume is None else resume["epoch"])
        return train_model(*a, resume=resume, **kw)

    monkeypatch.setattr(ref, "train_model", spy)
    net2, rec2 = ref.full_data_model(digits, "convnet", settings=settings)
    assert calls == [None, stop_after]  # the second call continued after pass ``stop_after``
    got = _weights(net2)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert rec2["accuracy"] == rec["accuracy"] and rec2["val_accuracy"] == rec["val_accuracy"]
    assert entry.exists() and not partial.exists()  # cached: the partial state removed


def test_a_stale_or_broken_partial_state_is_not_resumed(digits):
    """A partial state of another training (other key) or an unreadable one: trained afresh."""
    settings = {"epochs": 1}
    key = ref._key(digits, "convnet", ref.resolve_settings(settings)[1])
    partial = ref.cache_dir() / f"{key}.partial"
    partial.mkdir(parents=True)
    (partial / f"{ref.PARTIAL}.json").write_text("{not json")
    assert ref._partial(partial, key) is None
    ref.full_data_model(digits, "convnet", settings=settings)
    assert not partial.exists()
    from datadistill import checkpoint as ckpt

    ckpt.save_state({"key": "another", "epoch": 1}, partial, ref.PARTIAL)
    assert ref._partial(partial, key) is None


def test_the_cache_key_of_cached_networks_is_unchanged(digits):
    """The key of a cached full-data network (its file name) is what it was: a benchmark reads
    the ~88 CPU-minute Fashion-MNIST one (fashion-mnist-convnet-f0a8bea61b) by it."""
    assert ref._key(digits, "convnet", ref.resolve_settings(None)[1]) == "digits-convnet-355adc74e3"
    assert ref._key(digits, "convnet", ref.resolve_settings("converged")[1]) \
        == "digits-convnet-fb07741240"


def test_train_model_refuses_a_state_past_its_passes(digits):
    net = torch.nn.Linear(64, 10)
    x, y = digits.train.x[:32].flatten(1), digits.train.y[:32]
    states = []
    train_model(net, x, y, epochs=1, generator=torch.Generator().manual_seed(0),
                on_state=lambda s: states.append(s["epoch"]))
    assert states == [1]
    with pytest.raises(ValueError, match="resume after pass 5"):
        train_model(net, x, y, epochs=1, generator=torch.Generator().manual_seed(0),
                    resume={"epoch": 5, "model": {}, "optimizer": {}, "generator": None})
