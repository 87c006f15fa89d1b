"""Per-timestep weights of the training loss (opt-in; the official recipe is
'none': the plain MSE of the network's target).

Both named weightings are defined, as in their papers, on the eps-space
loss ``|eps - eps_hat|^2``, with SNR(t) = abar_t / (1 - abar_t):

- ``'p2'`` (Choi et al., CVPR 2022, "Perception Prioritized Training"):
  ``1 / (k + SNR)^gamma``;
- ``'min_snr'`` (Hang et al., ICCV 2023): ``min(SNR, gamma) / SNR``.

Both lower the weight of the low-noise steps (large SNR), where the image
is all but visible and z_sem is of no use, relative to the high-noise steps
where the coarse content is decided.

For a network that predicts x_0 or v instead of eps, the weight is
converted so that the objective stays the named one: given x_t, the eps,
x_0 and v errors are proportional,
``|eps err|^2 = SNR |x0 err|^2 = SNR / (1 + SNR) |v err|^2``.

The opt-in perceptual term (``perceptual_weights``) has its own weight over
t, see its docstring and docs/perceptual_loss.md.
"""
from typing import Optional, Sequence

import numpy as np

from choices import ModelMeanType

LOSS_WEIGHTINGS = ('none', 'p2', 'min_snr')


def snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Signal-to-noise ratio abar / (1 - abar) of every timestep."""
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    return a / (1.0 - a)


def eps_space_weights(name: str, snr_t: np.ndarray, gamma: float,
                      k: float) -> np.ndarray:
    """Weight of the eps-space loss at each timestep of SNR ``snr_t``."""
    if name == 'p2':
        return 1.0 / (k + snr_t)**gamma
    if name == 'min_snr':
        return np.minimum(snr_t, gamma) / snr_t
    if name == 'none':
        return np.ones_like(snr_t)
    raise ValueError(f"loss_weighting '{name}': use one of "
                     f'{", ".join(map(repr, LOSS_WEIGHTINGS))}')


def target_to_eps_factor(mean_type: ModelMeanType,
                         snr_t: np.ndarray) -> np.ndarray:
    """eps-space loss / target-space loss for the same prediction."""
    if mean_type == ModelMeanType.eps:
        return np.ones_like(snr_t)
    if mean_type == ModelMeanType.start_x:
        return snr_t
    if mean_type == ModelMeanType.v:
        return snr_t / (1.0 + snr_t)
    raise NotImplementedError(mean_type)


def loss_weights(name: str, alphas_cumprod: np.ndarray,
                 mean_type: ModelMeanType, gamma: Optional[float] = None,
                 k: float = 1.0) -> Optional[np.ndarray]:
    """Weight of the network's target-space MSE at every timestep, or None
    for 'none' (the plain loss, bit for bit the official one).

    ``gamma`` defaults to 1 for 'p2' and 5 for 'min_snr' (the papers'
    recommendations); ``k`` is P2's offset.
    """
    if name == 'none':
        return None
    if gamma is None:
        gamma = {'p2': 1.0, 'min_snr': 5.0}.get(name)
    s = snr(alphas_cumprod)
    return (eps_space_weights(name, s, gamma, k)
            * target_to_eps_factor(mean_type, s))


def perceptual_weights(weight: float, timestep_map: Sequence[int],
                       t_max: Optional[int]) -> Optional[np.ndarray]:
    """Weight of the LPIPS term at each step of a process whose step ``i``
    is the original timestep ``timestep_map[i]``: ``weight`` where that
    timestep is below ``t_max`` (every step for None), else 0; None for
    ``weight == 0`` (no term: the official loss, bit for bit).

    Only the low-noise steps count because the x_0 estimate at high noise
    is the blurry posterior mean, which a perceptual distance would push
    away from the MSE optimum. The same cut is made by diffusers'
    implementation of Berrada et al. (ICLR 2025, "Boosting latent diffusion
    with perceptual objectives"): ``--lpl_t_threshold``, default 200 of
    1000 timesteps (docs/perceptual_loss.md says what was read).
    """
    if weight == 0:
        return None
    steps = np.asarray(timestep_map)
    if t_max is None:
        return np.full(len(steps), float(weight))
    return np.where(steps < t_max, float(weight), 0.0)
