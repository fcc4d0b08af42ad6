"""The applications train their models exactly as the evaluation protocol they are given says:
its DSA (with its mode) and its CutMix too, never silently a plainer training."""
from __future__ import annotations

import pytest
import torch

from datadistill.apps import _common as C
from datadistill.data import load_dataset


@pytest.mark.parametrize("protocol,cutmix,mode", [("paper", False, "single"),
                                                  ("paper-cutmix", True, "single"),
                                                  ("idc", True, "idc")])
def test_train_on_passes_the_protocols_augmentation_and_cutmix(monkeypatch, protocol, cutmix, mode):
    seen = {}

    def fake_train_model(net, x, y, **kw):
        seen.update(kw)
        return net

    monkeypatch.setattr("datadistill.train.train_model", fake_train_model)
    real = load_dataset("digits")
    x, y = real.train.x[:20], real.train.y[:20]
    C.train_on(x, y, real.info, protocol=protocol)
    assert (seen["cutmix"] is not None) == cutmix
    assert seen["dsa"] is not None and seen["dsa"].mode == mode
    if cutmix:
        assert seen["cutmix"].p == pytest.approx(0.5)


def test_a_cutmix_protocol_changes_what_the_app_trains():
    real = load_dataset("digits")
    x, y = real.train.x[:40], real.train.y[:40]
    from datadistill.evaluation import get_protocol
    import dataclasses
    plain = dataclasses.replace(get_protocol("paper"), epochs=3)
    mixed = dataclasses.replace(get_protocol("paper-cutmix"), epochs=3)
    a = C.train_on(x, y, real.info, protocol=plain, model="mlp")
    b = C.train_on(x, y, real.info, protocol=mixed, model="mlp")
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
