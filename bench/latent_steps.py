"""Which step set suits DPM-Solver++(2M) on the latent DPM? The latent
sample's error against its converged solution for DDIM and 2M on four
step sets of T steps: DDIM's uniform stride (ddimN, 0 .. 1000 - 1000/N),
uniform from 0 to 999, quadratic in time (quadN, what 2M uses) and
uniform in log-SNR (docs/solver.md).

    python bench/latent_steps.py --dataset shapes
    python bench/latent_steps.py --dataset scenes

The models are bench/solver_curves.py's (the demo's; the scenes ones of
bench/solver_models.py). Prints one JSON line per T: MSE of each
solver@steps, normalised z_sem space, 256 seeded noises.
"""
import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import solver_curves  # noqa: E402
from diffusion.schedules import quadratic_timesteps, space_timesteps  # noqa: E402,E501
from inference import DiffAE  # noqa: E402


def log_snr_steps(abar, n):
    """About ``n`` timesteps (fewer where two round to one) uniform in
    log-SNR from the last timestep to the first."""
    lam = 0.5 * np.log(abar / (1 - abar))
    targets = np.linspace(lam[-1], lam[0], n)
    return sorted({int(np.argmin(np.abs(lam - v))) for v in targets})


def step_sets(num_timesteps, abar, T):
    return {
        'ddim': sorted(space_timesteps(num_timesteps, f'ddim{T}')),
        'quad': quadratic_timesteps(num_timesteps, T),
        'uniform': sorted({int(round(v)) for v in
                           np.linspace(0, num_timesteps - 1, T)}),
        'logsnr': log_snr_steps(abar, T)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='shapes',
                   choices=['shapes', 'scenes'])
    p.add_argument('--base-dir', default='checkpoints')
    p.add_argument('--T', type=int, nargs='+', default=[5, 10, 20, 50])
    args = p.parse_args(argv)
    conf = solver_curves.latent_conf(args.dataset, args.base_dir)
    model = DiffAE.from_checkpoint(conf, precision=None)
    noise = torch.randn(256, conf.style_ch,
                        generator=torch.Generator().manual_seed(1))
    abar = conf.make_latent_diffusion_conf().make_sampler().alphas_cumprod

    def run(steps, solver):
        c = dataclasses.replace(
            conf.make_latent_diffusion_conf(len(steps), solver),
            use_timesteps=set(steps))
        return c.make_sampler().sample(
            model=model.ema_model.latent_net, noise=noise,
            clip_denoised=conf.latent_clip_sample)

    ref = run(list(range(conf.T)), 'ddim')
    print(json.dumps({'reference_check_2m_quad200': solver_curves.mse(
        run(quadratic_timesteps(conf.T, 200), 'dpmpp_2m'), ref)}))
    for T in args.T:
        row = {'T': T}
        for name, steps in step_sets(conf.T, abar, T).items():
            for solver in solver_curves.SOLVERS:
                row[f'{solver}@{name}'] = float('%.3g' % solver_curves.mse(
                    run(steps, solver), ref))
        print(json.dumps(row), flush=True)


if __name__ == '__main__':
    main()
