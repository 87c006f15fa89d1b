"""Schedules and samplers of DiffAE."""
from typing import Union

from .base import GaussianDiffusionBeatGans, GaussianDiffusionBeatGansConfig
from .diffusion import SpacedDiffusionBeatGans, SpacedDiffusionBeatGansConfig
from .resample import PowerSampler, UniformSampler
from .schedules import get_named_beta_schedule, space_timesteps

Sampler = Union[SpacedDiffusionBeatGans]
SamplerConfig = Union[SpacedDiffusionBeatGansConfig]

__all__ = [
    'GaussianDiffusionBeatGans', 'GaussianDiffusionBeatGansConfig',
    'PowerSampler', 'Sampler',
    'SamplerConfig', 'SpacedDiffusionBeatGans',
    'SpacedDiffusionBeatGansConfig', 'UniformSampler',
    'get_named_beta_schedule', 'space_timesteps'
]
