"""Size of the shareable weights file (``cli.py export``) against the
checkpoint it comes from, printed for:

  demo       shapes32_autoenc trained for 2 steps here (40 generated
             images) so that its last.ckpt is a real Lightning checkpoint
             (model, EMA model, Adam state, x_T), then exported; both files
             measured. The file's size does not depend on the steps.
  golden     the official-format fixtures (tests/golden/tiny_*: their
             model and EMA weights are one tensor, stored once, and they
             hold no optimizer state), exported and measured.
  ffhq256    ffhq256_autoenc from its key manifest
             (tests/golden/manifests): the export's size computed exactly
             from the shapes (checkpoint_io.safetensors_size, the formula
             the tests check against written files); the checkpoint's as
             float32 model + EMA model + Adam's two moments + x_T (no file
             of 2.7 GB is written or needed).

    python bench/export_sizes.py [--workdir DIR]
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import torch  # noqa: E402

import checkpoint_io  # noqa: E402
import shapes_data  # noqa: E402
import templates  # noqa: E402
import weights_file  # noqa: E402
from experiment import train  # noqa: E402
from inference import export_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, 'tests', 'golden')


def row(what, ckpt_bytes, file_bytes, how):
    print(f'{what:<27} {ckpt_bytes / 1e6:>10.2f} MB {file_bytes / 1e6:>10.2f}'
          f' MB {ckpt_bytes / file_bytes:>6.2f}x  {how}')


def demo(workdir):
    conf = templates.shapes32_autoenc()
    conf.base_dir = os.path.join(workdir, 'checkpoints')
    conf.data_dir = shapes_data.make_shapes_lmdb(
        os.path.join(workdir, 'shapes.lmdb'), num_images=40)
    conf.num_workers = 0
    conf.total_samples = conf.batch_size * 2
    conf.sample_every_samples = 0
    conf.precision = '32-true'
    train(conf, gpus=[])
    ckpt = os.path.join(conf.logdir, 'last.ckpt')
    out = os.path.join(workdir, 'shapes32_autoenc.safetensors')
    export_weights(conf, out, ckpt)
    return ckpt, out


def golden(workdir, name):
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from conftest import conf_from_recipe, load_recipe
    from pathlib import Path
    conf = conf_from_recipe(load_recipe(Path(GOLDEN, name))['recipe'])
    pkl = os.path.join(GOLDEN, name, 'latent.pkl')
    if os.path.exists(pkl):
        conf.latent_infer_path = pkl
    out = os.path.join(workdir, f'{name}.safetensors')
    ckpt = os.path.join(GOLDEN, name, 'last.ckpt')
    export_weights(conf, out, ckpt)
    return ckpt, out


def ffhq256_from_manifest():
    """(checkpoint bytes estimated, export bytes computed, parameters)."""
    with open(os.path.join(GOLDEN, 'manifests', 'ffhq256_autoenc.json')) as f:
        ref = json.load(f)
    conf = templates.ffhq256_autoenc()
    shapes = {f'ema_model.{k}': v for k, v in ref['state_dict'].items()}
    meta = weights_file.metadata_for(conf, 'autoencoder', 'last.ckpt',
                                     '0' * 64, latent_stats=False)
    exported = checkpoint_io.safetensors_size(shapes, meta)
    n = ref['num_params']
    x_T = conf.sample_size * 3 * conf.img_size ** 2
    ckpt = 4 * (n + n + 2 * n + x_T)
    return ckpt, exported, n, x_T


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--workdir', default=None,
                   help='where the demo run and the exports go (default: a '
                   'temporary folder)')
    args = p.parse_args(argv)
    torch.manual_seed(0)
    workdir = args.workdir or tempfile.mkdtemp(prefix='export_sizes_')
    results = [('demo shapes32_autoenc', *demo(workdir),
                'measured (2-step run here)')]
    for name in ('tiny_autoenc', 'tiny_autoenc_latent'):
        results.append((f'golden {name}', *golden(workdir, name),
                        'measured (official-format fixture)'))
    print(f'\n{"":<27} {"checkpoint":>13} {"export":>13} {"ratio":>7}')
    for what, ckpt, out, how in results:
        row(what, os.path.getsize(ckpt), os.path.getsize(out), how)
    ckpt, exported, n, x_T = ffhq256_from_manifest()
    row('ffhq256_autoenc', ckpt, exported,
        f'computed from the manifest ({n:,} parameters; checkpoint = '
        f'4 B x (model + EMA + 2 Adam moments) + x_T {x_T:,} floats)')


if __name__ == '__main__':
    main()
