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
