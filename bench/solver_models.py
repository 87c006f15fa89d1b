"""The trained models of the solver study (bench/solver_curves.py): the
demo's (run_shapes.py trains it) and the same recipe on the second
built-in dataset, the landscape scenes, which has no demo runner.

    python bench/solver_models.py --steps 800

trains in ``--base-dir`` (default checkpoints): the scenes autoencoder
(``scenes32_autoenc``), its inferred z_sem (``latent.pkl``) and a latent
DPM on it (the demo's latent recipe, ``scenes32_autoenc_latent``). Every
stage resumes from its checkpoint.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from config import PretrainConfig  # noqa: E402
from experiment import train  # noqa: E402
from templates import scenes32_autoenc  # noqa: E402
from templates_latent import shapes32_autoenc_latent  # noqa: E402


def scenes_confs(steps: int, base_dir: str = 'checkpoints'):
    """(autoencoder, latent DPM) templates of the scenes models; the
    autoencoder trains ``steps`` steps."""
    ae = scenes32_autoenc()
    ae.base_dir = base_dir
    ae.total_samples = ae.batch_size * steps
    ae.sample_every_samples = 0
    lat = shapes32_autoenc_latent()
    lat.data_name = ae.data_name
    lat.base_dir = base_dir
    lat.pretrain = PretrainConfig('demo', f'{ae.logdir}/last.ckpt')
    lat.latent_infer_path = f'{ae.logdir}/latent.pkl'
    lat.name = 'scenes32_autoenc_latent'
    return ae, lat


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=800,
                   help='autoencoder steps (the demo template: 3000)')
    p.add_argument('--base-dir', default='checkpoints')
    args = p.parse_args(argv)
    ae, lat = scenes_confs(args.steps, args.base_dir)
    train(ae, gpus=[0])
    if not os.path.exists(lat.latent_infer_path):
        ae.eval_programs = ['infer']
        train(ae, gpus=[0], mode='eval')
    train(lat, gpus=[0])


if __name__ == '__main__':
    main()
