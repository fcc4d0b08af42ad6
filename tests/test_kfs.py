"""KFS: the ``kfs`` summary (codes + shared tiny decoders) and the ``kfs`` method (DM on it)."""
import math

import pytest
import torch
import torch.nn.functional as F

from datadistill.distillers import ConfigError, create_distiller
from datadistill.runtime import make_generator
from datadistill.synsets import SYNSETS, init_from, load_summary
from datadistill.synsets.kfs import budget_codes


def _kfs(**kw):
    return create_distiller("kfs", **{"iterations": 4, "batch_real": 16, **kw})


def _state(s):
    return {k: v.detach().clone() for k, v in s.state_dict().items()}


def test_layout_and_stored_bytes_by_hand(digits):
    s = init_from(digits, 3, kind="kfs", init="real", generator=make_generator(0))
    assert s.codes.shape == (30, 1, 4, 4)  # 8x8 digits, 2x down-sampled, the data's channels
    x, y = s.materialize()
    assert x.shape == (120, 1, 8, 8) and s.ipc == 12  # 3 codes x 4 decoders per class
    # decoder-major: examples 30..59 are decoder 1 on every code, in code order
    torch.testing.assert_close(x[30:60], s.decoders[1](s.codes))
    assert torch.equal(y, torch.arange(10).repeat_interleave(3).repeat(4))
    assert torch.equal(s.class_ids, y)
    # codes float32 + 4 decoders (1x1 skip 1+1, conv 1->8 72+8, conv 8->1 72+1) + uint8 labels
    assert s.stored_bytes() == 30 * 16 * 4 + 4 * (2 + 80 + 73) * 4 + 30 * 1


def test_real_init_decodes_to_the_upsampled_real_image(digits):
    s = init_from(digits, 2, kind="kfs", init="real", generator=make_generator(0))
    pooled = F.adaptive_avg_pool2d(digits.train.x, (4, 4))
    for c in range(10):  # every code is a pooled real image of its own class
        for z in s.codes.detach()[s.class_slice(c)]:
            d = (pooled - z).flatten(1).abs().amax(1)
            assert float(d.min()) < 1e-6 and int(digits.train.y[d.argmin()]) == c
    with torch.no_grad():
        for dec in s.decoders:  # without the residual branch a decoder is the up-sampling
            dec.weight2.zero_()
    up = F.interpolate(s.codes, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(s.materialize()[0][:20], up.detach())
    # the decoders start different (their residual branches), so they do not stay identical
    s2 = init_from(digits, 2, kind="kfs", init="real", generator=make_generator(0))
    x = s2.materialize()[0].detach()
    assert not torch.allclose(x[:20], x[20:40])


def test_init_is_deterministic_and_leaves_the_global_rng_alone(digits):
    before = torch.get_rng_state()
    a = init_from(digits, 2, kind="kfs", init="real", generator=make_generator(3))
    b = init_from(digits, 2, kind="kfs", init="noise", generator=make_generator(3))
    assert torch.equal(torch.get_rng_state(), before)
    c = init_from(digits, 2, kind="kfs", init="real", generator=make_generator(3))
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.codes, b.codes)


def test_ipc_is_a_storage_budget_with_decoders_included(digits):
    pixels = SYNSETS.get("pixels")(digits.info, ipc=2).stored_bytes()
    s = _kfs().init_synset(digits, ipc=2)
    n = s.codes_per_class
    assert n == budget_codes(digits.info, 2) == 4  # (5140 B - 4 decoders 2480 B) // (10 x 65 B)
    assert s.stored_bytes() <= pixels
    bigger = SYNSETS.get("kfs")(digits.info, ipc=n + 1)
    assert bigger.stored_bytes() > pixels  # one more code per class would not fit
    # decoders cost bytes: wider decoders leave fewer codes
    assert budget_codes(digits.info, 2, hidden=4) > n > budget_codes(digits.info, 2, hidden=12)
    # at uint8 storage the same bytes hold about 4x the codes
    q = _kfs(storage="uint8").init_synset(digits, ipc=2)
    assert q.codes_per_class > 3 * n and q.stored_bytes() <= pixels
    # explicit codes_per_class overrides the budget
    assert _kfs(codes_per_class=2).init_synset(digits, ipc=2).codes_per_class == 2


def test_bad_parameters_are_refused(digits):
    for kw in ({"num_decoders": 0}, {"hidden": 0}, {"downsample": 0}, {"latent_channels": 0},
               {"codes_per_class": 0}, {"batch_syn": 0}, {"lr_decoder": -1.0},
               {"synset_args": {"num_decoders": 8}}):
        with pytest.raises(ConfigError):
            _kfs(**kw)
    with pytest.raises(ConfigError, match="does not fit"):
        _kfs(hidden=256).init_synset(digits, ipc=1)
    with pytest.raises(ConfigError, match="ipc"):
        _kfs().init_synset(digits)
    with pytest.raises(ValueError, match="images"):
        from datadistill.data.base import DataInfo
        SYNSETS.get("kfs")(DataInfo(name="t", modality="tabular", num_classes=2, shape=(5,),
                                    mean=(), std=()), ipc=1)


def test_distill_changes_codes_and_decoders_saves_and_loads(digits, tmp_path):
    d = _kfs(latent_channels=2, hidden=4)
    s = d.init_synset(digits, ipc=2)
    before = _state(s)
    seen = []
    d.distill(digits, s, [seen.append])
    assert len(seen) == 4 and all(math.isfinite(e["loss"]) for e in seen)
    for k in ("codes", "decoders.0.weight1", "decoders.3.skip_weight"):
        assert not torch.equal(before[k], s.state_dict()[k]), k
    s.save(tmp_path / "s")
    back = load_summary(tmp_path / "s")
    assert back.config() == s.config() == {"ipc": s.codes_per_class, "latent_channels": 2,
                                           "downsample": 2, "num_decoders": 4, "hidden": 4}
    torch.testing.assert_close(back.materialize()[0], s.materialize()[0], rtol=0, atol=0)
    assert back.stored_bytes() == s.stored_bytes()


def test_resume_matches_uninterrupted_run(digits, tmp_path):
    full = _kfs()
    s_full = full.init_synset(digits, ipc=2)
    full.distill(digits, s_full)

    d1 = _kfs()
    s1 = d1.init_synset(digits, ipc=2)

    def stop_at_2(ev):
        if ev["iteration"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        d1.distill(digits, s1, [stop_at_2], workdir=tmp_path)
    d2 = _kfs()
    s2 = d2.init_synset(digits, ipc=2)
    d2.distill(digits, s2, workdir=tmp_path, resume=True)  # Adam + SGD state restored
    for k, v in s_full.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k]), k


def test_batch_syn_matches_a_subset_of_the_decoded_examples(digits):
    d = _kfs(batch_syn=1, codes_per_class=4)
    s = d.init_synset(digits)
    before = s.codes.detach().clone()
    d.setup(digits, s)
    d.step(digits, s)
    moved = (s.codes.detach() - before).flatten(1).abs().amax(1) > 0
    assert int(moved.sum()) == 10  # one decoded example per class: one code per class moved
    assert torch.equal(s.labels[moved], torch.arange(10))


def test_dm_steps_a_kfs_summary(digits):
    """The pairing: DM's objective and optimizer on a kfs summary (ipc = codes per class)."""
    g = make_generator(0)
    s = init_from(digits, 2, kind="kfs", init="real", generator=g)
    assert s.codes_per_class == 2 and s.num_examples == 80
    d = create_distiller("dm", iterations=3, batch_real=16)
    before = _state(s)
    seen = []
    d.distill(digits, s, [seen.append])
    assert all(math.isfinite(e["loss"]) for e in seen) and s.check_finite()
    assert not torch.equal(before["codes"], s.codes)
    assert not torch.equal(before["decoders.0.weight2"], s.decoders[0].weight2)
    # and through DM's own summary option
    d2 = create_distiller("dm", "tiny", synset="kfs")
    s2 = d2.init_synset(digits, ipc=2)
    assert s2.kind == "kfs" and s2.codes_per_class == 2
    d2.distill(digits, s2)
    assert s2.check_finite()
