"""Beta schedules and timestep spacing (pure functions, numpy float64)."""
import math

import numpy as np


def get_named_beta_schedule(schedule_name: str,
                            num_diffusion_timesteps: int) -> np.ndarray:
    """Betas of a named schedule: 'linear', 'cosine' or 'const<beta>'
    (e.g. 'const0.008'); linear and const scale with 1000/T so that they
    keep their meaning for any number of steps."""
    scale = 1000 / num_diffusion_timesteps
    if schedule_name == 'linear':
        return np.linspace(scale * 0.0001, scale * 0.02,
                           num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == 'cosine':
        return betas_for_alpha_bar(
            num_diffusion_timesteps,
            lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2)**2,
        )
    if schedule_name.startswith('const'):
        try:
            beta = float(schedule_name[len('const'):])
        except ValueError:
            beta = None
        if beta is not None:
            return np.array([scale * beta] * num_diffusion_timesteps,
                            dtype=np.float64)
    raise NotImplementedError(
        f"unknown beta schedule '{schedule_name}': use 'linear', 'cosine' "
        "or 'const<beta>' such as 'const0.008'")


def betas_for_alpha_bar(num_diffusion_timesteps, alpha_bar, max_beta=0.999):
    """Discretise a cumulative alpha_bar(t), t in [0, 1], into betas."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1 = i / num_diffusion_timesteps
        t2 = (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas)


def space_timesteps(num_timesteps: int, section_counts) -> set:
    """The original timesteps that a shorter sampler keeps.

    ``section_counts`` is a list of step counts for equal portions of the
    process (e.g. [10, 15, 20]), the same as a comma-separated string,
    'ddimN' for the DDIM paper's fixed integer stride, or 'quadN' for N
    steps quadratic in time (denser at low noise, see quadratic_timesteps).
    """
    if isinstance(section_counts, str) and section_counts.startswith('quad'):
        return set(quadratic_timesteps(num_timesteps,
                                       int(section_counts[len('quad'):])))
    if isinstance(section_counts, str):
        if section_counts.startswith('ddim'):
            desired_count = int(section_counts[len('ddim'):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired_count:
                    return set(range(0, num_timesteps, i))
            raise ValueError(
                f'cannot create exactly {desired_count} steps out of '
                f'{num_timesteps} with an integer stride')
        section_counts = [int(x) for x in section_counts.split(',')]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(
                f'cannot divide section of {size} steps into {section_count}')
        frac_stride = 1 if section_count <= 1 else (size - 1) / (
            section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


def quadratic_timesteps(num_timesteps: int, n: int) -> list:
    """``n`` distinct timesteps from 0 to ``num_timesteps - 1``, quadratic
    in time: round((k / (n - 1))^2 (num_timesteps - 1)), k = 0 .. n - 1,
    each at least one after the one before (DPM-Solver's 'time_quadratic'
    steps, Lu et al. 2022: a second-order solver converges at its order on
    them, where the uniform steps leave one large log-SNR jump into t = 0).
    """
    if not 2 <= n <= num_timesteps:
        raise ValueError(f'cannot take {n} quadratic steps out of '
                         f'{num_timesteps} (2 to {num_timesteps})')
    out = []
    for v in np.linspace(0, math.sqrt(num_timesteps - 1), n)**2:
        t = int(round(v))
        out.append(t if not out or t > out[-1] else out[-1] + 1)
    assert out[-1] == num_timesteps - 1, out
    return out
