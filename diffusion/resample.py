"""Samplers of training timesteps."""
from abc import ABC, abstractmethod

import torch


class ScheduleSampler(ABC):
    """A distribution over timesteps; ``sample`` returns importance weights
    that keep the loss unbiased."""

    @abstractmethod
    def weights(self) -> torch.Tensor:
        """Unnormalised, positive weight of each timestep."""

    def sample(self, batch_size, device, generator=None):
        w = self.weights().to(device=device, dtype=torch.float64)
        p = w / w.sum()
        indices = torch.multinomial(p, batch_size, replacement=True,
                                    generator=generator)
        weights = (1 / (len(p) * p[indices])).float()
        return indices, weights


class UniformSampler(ScheduleSampler):
    def __init__(self, num_timesteps):
        self.num_timesteps = num_timesteps
        self._weights = torch.ones(num_timesteps, dtype=torch.float64)

    def weights(self):
        return self._weights

    def sample(self, batch_size, device, generator=None):
        # drawn on the target device with torch's RNG: no host copy per step
        t = torch.randint(0, self.num_timesteps, (batch_size, ),
                          device=device, generator=generator)
        return t, torch.ones(batch_size, device=device)


class PowerSampler(ScheduleSampler):
    """Timesteps skewed towards high noise: t = floor(T * u^(1 / power)),
    u uniform, so t / T has density power * s^(power - 1) (power 1 is
    uniform, 2 a linear ramp). Returned weights are 1: the skew changes the
    objective on purpose (more of the training at the noise levels where
    the coarse content is decided), as the official code also ignores
    them."""

    def __init__(self, num_timesteps, power: float = 2.0):
        if power <= 0:
            raise ValueError(f'T_sampler_power must be > 0, got {power}')
        self.num_timesteps = num_timesteps
        self.power = float(power)

    def weights(self):
        edges = torch.linspace(0, 1, self.num_timesteps + 1,
                               dtype=torch.float64)**self.power
        return edges[1:] - edges[:-1]

    def sample(self, batch_size, device, generator=None):
        u = torch.rand(batch_size, device=device, generator=generator,
                       dtype=torch.float64)
        t = (u**(1 / self.power) * self.num_timesteps).long().clamp_(
            max=self.num_timesteps - 1)
        return t, torch.ones(batch_size, device=device)
