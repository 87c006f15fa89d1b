"""A diffusion process that keeps only some of the original timesteps
(DDIM with T_eval steps, e.g. 'ddim20')."""
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .base import GaussianDiffusionBeatGans, GaussianDiffusionBeatGansConfig
from .schedules import space_timesteps  # noqa: F401 (re-export)


@dataclass
class SpacedDiffusionBeatGansConfig(GaussianDiffusionBeatGansConfig):
    # the original timesteps to keep (see space_timesteps)
    use_timesteps: Tuple[int] = None

    def make_sampler(self):
        return SpacedDiffusionBeatGans(self)


class SpacedDiffusionBeatGans(GaussianDiffusionBeatGans):
    """The process restricted to ``conf.use_timesteps``: new betas are
    derived from the original cumulative alphas, and the model is called
    with the original timestep (``timestep_map``)."""

    def __init__(self, conf: SpacedDiffusionBeatGansConfig):
        self.use_timesteps = set(conf.use_timesteps)
        full = GaussianDiffusionBeatGans(conf)
        self.original_betas = full.betas
        last_alpha_cumprod = 1.0
        new_betas, timestep_map = [], []
        for i, alpha_cumprod in enumerate(full.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                timestep_map.append(i)
        # the config stays untouched; the spaced betas live in a copy
        spaced = conf.clone()
        spaced.betas = np.array(new_betas)
        super().__init__(spaced, timestep_map=timestep_map)
        self.original_num_steps = len(full.betas)
