"""The learning-rate factor per optimizer step: the official warm-up and
the opt-in cosine decay (conf.lr_decay), values worked out by hand."""
import math

import pytest
import torch

import templates
from experiment import LitModel, LRSchedule, WarmupLR


def test_no_decay_is_the_official_warmup_then_constant():
    s, official = LRSchedule(10), WarmupLR(10)
    for step in (0, 1, 5, 10, 11, 1000):
        assert s(step) == official(step)
    assert s(5) == 0.5
    assert s(1000) == 1.0


def test_cosine_halves_at_mid_run_and_ends_at_zero():
    s = LRSchedule(0, 'cosine', total=100)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(0.5)
    # cos(pi / 4) = 1 / sqrt(2)
    assert s(25) == pytest.approx(0.5 * (1 + 1 / math.sqrt(2)))
    assert s(100) == pytest.approx(0.0)
    assert s(150) == pytest.approx(0.0)


def test_cosine_after_warmup_and_to_a_floor():
    s = LRSchedule(10, 'cosine', total=110, final=0.1)
    assert s(5) == 0.5
    assert s(10) == 1.0
    # half-way through the 100 decay steps: 0.1 + 0.9 * 0.5
    assert s(60) == pytest.approx(0.55)
    assert s(110) == pytest.approx(0.1)
    assert s(500) == pytest.approx(0.1)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="lr_decay must be 'none' or "
                       "'cosine', got 'step'"):
        LRSchedule(0, 'step', total=10)
    with pytest.raises(ValueError, match='beyond the warm-up'):
        LRSchedule(100, 'cosine', total=50)


def test_litmodel_decays_over_total_samples():
    conf = templates.shapes32_autoenc()
    conf.lr, conf.lr_decay = 1e-3, 'cosine'
    conf.total_samples = conf.batch_size * 40
    opt = LitModel(conf).configure_optimizers()
    optim, sched = opt['optimizer'], opt['lr_scheduler']['scheduler']
    assert opt['lr_scheduler']['interval'] == 'step'
    lrs = []
    for _ in range(40):
        lrs.append(optim.param_groups[0]['lr'])
        optim.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[20] == pytest.approx(0.5e-3)
    assert optim.param_groups[0]['lr'] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_official_templates_keep_a_constant_lr():
    for name in templates.TEMPLATES:
        conf = getattr(templates, name)()
        assert conf.lr_decay == 'none', name
    conf = templates.ffhq128_autoenc_130M()
    assert 'lr_scheduler' not in LitModel.configure_optimizers(
        _Stub(conf))


class _Stub:
    """Only what configure_optimizers reads (no 130M-parameter model)."""

    def __init__(self, conf):
        self.conf = conf
        self.model = torch.nn.Linear(2, 2)
