"""Beta schedules and timestep spacing equal the reference's."""
import numpy as np
import pytest
import torch

from conftest import GOLDEN, golden
from diffusion import get_named_beta_schedule, space_timesteps

SCHEDULES = torch.load(GOLDEN / 'schedules.pt') if (
    GOLDEN / 'schedules.pt').exists() else {}


def test_schedules_fixture_present():
    assert torch.load(golden('schedules.pt'))


@pytest.mark.parametrize(
    'name', [k[len('betas_'):] for k in SCHEDULES if k.startswith('betas_')])
def test_named_beta_schedule(name):
    want = SCHEDULES[f'betas_{name}']
    got = get_named_beta_schedule(name, len(want))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize('key', list(SCHEDULES.get('space_timesteps', {})))
def test_space_timesteps(key):
    T, counts = key.split('|')
    if counts.startswith('['):
        counts = [int(x) for x in counts.strip('[]').split(',')]
    assert sorted(space_timesteps(int(T), counts)) == \
        SCHEDULES['space_timesteps'][key]


def test_unknown_schedule_names_the_choices():
    with pytest.raises(NotImplementedError, match='const'):
        get_named_beta_schedule('cosin', 1000)


def test_ddim_stride_impossible():
    with pytest.raises(ValueError, match='integer stride'):
        space_timesteps(1000, 'ddim999')
