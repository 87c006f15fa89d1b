"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", Algorithm 2): the
multistep second-order solver of the probability-flow ODE in data (x_0)
prediction, on the discrete steps of a (spaced) process.

With alpha = sqrt(abar), sigma = sqrt(1 - abar) and lambda = log(alpha /
sigma), one step from the point s to t, with the x_0 predictions m_s (at s)
and m_r (at the point r before s):

    h = lambda_t - lambda_s,    r = (lambda_s - lambda_r) / h
    D = (1 + 1 / (2 r)) m_s - 1 / (2 r) m_r
    x_t = (sigma_t / sigma_s) x_s + (alpha_t - alpha_s sigma_t / sigma_s) D

(the last factor is -alpha_t expm1(-h), written so that it stays finite at
sigma_t = 0 and at alpha_t = 0). With D = m_s the step is exactly DDIM
(eta = 0): the first step (no m_r yet) and a step to an end of the
process (h infinite) are taken so. The same formula runs either way along
the ODE: towards x_0 (sampling) or towards x_T (inversion).

Pure functions: the coefficients (numpy float64, computed once per
process) and the loop, which calls the model once per step and does no
host sync (the coefficients are Python floats).
"""
from typing import Callable, List, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm


class Coefficients(NamedTuple):
    """Per step k, in the order the steps run: x_{k+1} = c_x[k] x_k +
    c_d[k] D_k with D_k = (1 + w[k]) m_k - w[k] m_{k-1} (w[k] = 0: first
    order)."""
    c_x: List[float]
    c_d: List[float]
    w: List[float]


def dpmpp_2m_coefficients(abar_from, abar_to) -> Coefficients:
    """The coefficients of the steps from the points of cumulative alpha
    ``abar_from[k]`` to ``abar_to[k]`` (``abar_from[k + 1]`` is the point
    after step k; ``abar_to`` may end at 1, x_0, or at 0, pure noise)."""
    a_s = np.asarray(abar_from, dtype=np.float64)
    a_t = np.asarray(abar_to, dtype=np.float64)
    if a_s.shape != a_t.shape or a_s.ndim != 1:
        raise ValueError('abar_from and abar_to must be 1-D, same length')
    alpha_s, sigma_s = np.sqrt(a_s), np.sqrt(1 - a_s)
    alpha_t, sigma_t = np.sqrt(a_t), np.sqrt(1 - a_t)
    c_x = sigma_t / sigma_s
    c_d = alpha_t - alpha_s * c_x
    lam_s = np.log(alpha_s) - np.log(sigma_s)
    with np.errstate(divide='ignore'):
        lam_t = np.log(alpha_t) - np.log(sigma_t)  # +-inf at the ends
    h = lam_t - lam_s
    w = np.zeros_like(h)
    second = np.isfinite(h)
    second[0] = False
    h_prev = np.diff(lam_s, prepend=np.nan)
    w[second] = h[second] / (2 * h_prev[second])
    return Coefficients(c_x.tolist(), c_d.tolist(), w.tolist())


def sample_dpmpp_2m(denoise: Callable, x: torch.Tensor, coefs: Coefficients,
                    callback: Callable = None, progress: bool = False,
                    desc: str = 'DPM-Solver++(2M)') -> torch.Tensor:
    """Run the steps of ``coefs`` from ``x``; ``denoise(x, k)`` is the
    model's x_0 prediction at the point of step k (one call per step).
    ``callback({'k', 'sample', 'pred_xstart'})`` sees every step."""
    steps = range(len(coefs.c_x))
    if progress:
        steps = tqdm(steps, desc=desc, leave=False)
    prev = None
    for k in steps:
        m = denoise(x, k)
        w = coefs.w[k]
        # (1 + w) m - w prev, without a temporary per term
        d = m if w == 0 else torch.lerp(prev, m, 1 + w)
        x = coefs.c_x[k] * x + coefs.c_d[k] * d
        if callback is not None:
            callback({'k': k, 'sample': x, 'pred_xstart': m})
        prev = m
    return x
