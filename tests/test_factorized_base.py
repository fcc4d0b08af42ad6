"""The shared factorized-summary base: decoder-major layout, labels, bytes, gradients."""
import pytest
import torch
from torch import nn

from datadistill.data.base import DataInfo
from datadistill.synsets.factorized import FactorizedSet

INFO = DataInfo(name="toy", modality="image", num_classes=3, shape=(1, 2, 2), mean=(0.0,), std=(1.0,))


class Linear(FactorizedSet):
    """Two linear decoders from 4-d codes to 2x2 images (a test double)."""

    def build_decoders(self):
        self.decoders = nn.ModuleList([nn.Linear(4, 4, bias=False) for _ in range(2)])

    def decode(self, j, codes):
        return self.decoders[j](codes).reshape(-1, *self.info.shape)


def test_layout_labels_and_bytes():
    s = Linear(INFO, ipc=2, code_shape=(4,))
    x, y = s.materialize()
    assert x.shape == (12, 1, 2, 2)
    # decoder-major: the first 6 examples come from decoder 0, in code order
    assert torch.equal(y, torch.tensor([0, 0, 1, 1, 2, 2] * 2))
    assert torch.equal(s.class_ids, y)
    assert s.ipc == 4  # materialized examples per class
    torch.testing.assert_close(x[6:], s.decoders[1](s.codes).reshape(-1, 1, 2, 2))
    # codes (6x4 floats) + two 4x4 decoders + labels (one byte each: the smallest integer type)
    assert s.stored_bytes() == 6 * 4 * 4 + 2 * 16 * 4 + 6 * 1


def test_soft_labels_repeat_and_gradients_reach_codes_and_decoders():
    s = Linear(INFO, ipc=1, code_shape=(4,), label_format="soft")
    with torch.no_grad():
        s.codes.normal_()
    x, y = s.materialize()
    assert y.shape == (6, 3) and torch.equal(y[:3], y[3:])
    (x.square().sum() + y.sum()).backward()
    assert s.codes.grad is not None and s.codes.grad.abs().sum() > 0
    assert all(p.grad is not None for p in s.decoder_parameters())
    assert s.y.grad is not None
    assert set(map(id, s.code_parameters())) == {id(s.codes), id(s.y)}


def test_bad_budget_and_regression_labels_are_refused():
    with pytest.raises(ValueError, match="ipc"):
        Linear(INFO, ipc=0, code_shape=(4,))
    with pytest.raises(ValueError, match="hard or soft"):
        Linear(INFO, ipc=1, code_shape=(4,), label_format="regression")
