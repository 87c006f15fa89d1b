"""Use a trained DiffAE from the command line; every result is a PNG grid.

    python cli.py autoencode  --template ffhq256_autoenc imgs_align/*.png
    python cli.py interpolate --template ffhq256_autoenc a.png b.png
    python cli.py manipulate  --template ffhq256_autoenc \\
        --cls-template ffhq256_autoenc_cls --attribute Wavy_Hair \\
        --amount 0.3 face.png
    python cli.py sample      --template ffhq128_autoenc_latent -n 8
    python cli.py export      --template ffhq256_autoenc ffhq256.safetensors
    python cli.py autoencode  --ckpt ffhq256.safetensors face.png

The checkpoint is ``checkpoints/<template name>/last.ckpt`` unless --ckpt
says otherwise. Input images are resized and center-cropped to the
template's size. Face photos for the FFHQ/CelebA-HQ models must be
aligned first: ``--align`` does it on the fly (align.py, the main face of
each photo; needs dlib and its landmark file: ``make align-deps`` and
``apt-get install libdlib-data``), or run ``python align.py -i imgs -o
imgs_align`` once.

``export`` writes the EMA weights (and z_sem statistics) of a checkpoint
as a .safetensors file that records its template: a --ckpt (--cls-ckpt)
of that kind needs no --template (a given one must agree).
"""
import argparse
import os
import sys

import torch
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

import align
import checkpoint_io
import renderer
from dataset_util import open_image
from experiment_classifier import ClsModel, export_classifier
from inference import (DiffAE, add_front_end_arguments, export_weights,
                       front_end_precision, steps_matching_ddim,
                       to_model_input)
from model_loading import load_diffae, load_template, template_conf


def _weights_file(template, ckpt, flag='--template'):
    """Whether ``ckpt`` is a .safetensors export (which names its own
    template); else ``template`` is needed."""
    if ckpt and checkpoint_io.is_safetensors(ckpt):
        return True
    if template is None:
        raise SystemExit(f'{flag} is needed (only a .safetensors export '
                         'names its own template)')
    return False


def load_model(args):
    """The DiffAE of --template with the weights of --ckpt (default
    checkpoints/<name>/last.ckpt; a .safetensors export names its own
    template), on --device."""
    options = dict(precision=front_end_precision(args.precision),
                   solver=args.solver)
    if _weights_file(args.template, args.ckpt) and args.template is None:
        return DiffAE.from_checkpoint(None, args.ckpt, **options).to(
            args.device)
    conf = template_conf(args.template,
                         latent_infer_path=args.latent_infer_path)
    return load_diffae(conf, args.ckpt, args.device, **options)


def load_images(paths, size, aligner=None):
    """Images in [-1, 1], resized and center-cropped to ``size``; with an
    ``aligner`` (align.py's detector), FFHQ-aligned first (the main face
    of a photo with several: stderr says how many). Every file that
    cannot be read is named, all at once."""
    out, errors = [], []
    for p in paths:
        if not os.path.isfile(p):
            errors.append(f'  {p}: not found')
            continue
        try:
            # decoded here in full, so that a truncated file is named
            img = open_image(p)
        except Exception as e:  # noqa: BLE001 (report which file)
            errors.append(f'  {p}: {e}')
            continue
        if aligner is not None:
            try:
                res = align.align_photo(align.open_photo(p), aligner,
                                        output_size=max(size, 256), name=p)
            except align.NoFaceError as e:
                raise SystemExit(str(e))
            if len(res.faces) > 1:  # the main face, and say so
                print(res.note, file=sys.stderr)
            img = res.crops[0]
        out.append(to_model_input(img, size))
    if errors:
        raise SystemExit(f'cannot read {len(errors)} of {len(paths)} '
                         'image(s):\n' + '\n'.join(errors))
    return torch.stack(out)


def make_aligner(args):
    """align.py's face detector when --align is given, else None."""
    if not getattr(args, 'align', False):
        return None
    try:
        return align.DlibLandmarks(args.predictor)
    except align.DetectorUnavailableError as e:
        raise SystemExit(f'--align: {e}')


def output_path(path, force=False):
    """``path``, or when it exists (and not ``force``) the first free
    ``<stem>-<n><ext>``: an earlier result is never overwritten
    silently."""
    if force or not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f'{stem}-{n}{ext}'):
        n += 1
    print(f'{path} exists (kept; --force overwrites): writing '
          f'{stem}-{n}{ext}')
    return f'{stem}-{n}{ext}'


def save_grid(rows, path, nrow, force=False):
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    path = output_path(path, force)
    save_image(make_grid(torch.cat(rows).clamp(0, 1), nrow=nrow, padding=2),
               path)
    print(f'wrote {path}')
    return path


@torch.no_grad()
def autoencode(args):
    """Per image: input, reconstruction from the inverted x_T and from a
    random x_T."""
    model = load_model(args)
    x = load_images(args.images, model.conf.img_size,
                    make_aligner(args)).to(args.device)
    rows = [[], [], []]
    for i in tqdm(range(len(x)), desc='autoencode'):
        xi = x[i:i + 1]
        cond = model.encode(xi)
        xT = model.encode_stochastic(xi, cond, T=args.T_inv)
        rows[0].append((xi + 1) / 2)
        rows[1].append(model.render(xT, cond, T=args.T))
        rows[2].append(model.render(torch.randn_like(xT), cond, T=args.T))
    save_grid([torch.cat(r) for r in rows],
              os.path.join(args.out, 'autoencode.png'), nrow=len(x),
              force=args.force)


@torch.no_grad()
def interpolate(args):
    model = load_model(args)
    x = load_images(args.images, model.conf.img_size,
                    make_aligner(args)).to(args.device)
    if len(x) != 2:
        raise SystemExit('interpolate takes exactly two images')
    cond = model.encode(x)
    xT = model.encode_stochastic(x, cond, T=args.T_inv, progress=True)
    alphas = torch.linspace(0, 1, args.steps).tolist()
    imgs = model.interpolate(cond[:1], xT[:1], cond[1:], xT[1:], alphas,
                             T=args.T, progress=True)
    save_grid([imgs], os.path.join(args.out, 'interpolate.png'),
              nrow=len(alphas), force=args.force)


@torch.no_grad()
def manipulate(args):
    model = load_model(args)
    cls_conf = None
    if not _weights_file(args.cls_template, args.cls_ckpt, '--cls-template'
                         ) or args.cls_template is not None:
        cls_conf = load_template(args.cls_template)
    cls = ClsModel.from_checkpoint(cls_conf, args.cls_ckpt).to(args.device)
    direction = cls.direction(args.attribute)
    x = load_images(args.images, model.conf.img_size,
                    make_aligner(args)).to(args.device)
    rows = [(x + 1) / 2, [], []]
    for i in tqdm(range(len(x)), desc='manipulate'):
        xi = x[i:i + 1]
        cond = model.encode(xi)
        xT = model.encode_stochastic(xi, cond, T=args.T_inv)
        moved = renderer.manipulate_cond(cond, direction, args.amount,
                                         cls.normalize, cls.denormalize)
        rows[1].append(model.render(xT, cond, T=args.T))
        rows[2].append(model.render(xT, moved, T=args.T))
    save_grid([rows[0], torch.cat(rows[1]), torch.cat(rows[2])],
              os.path.join(args.out,
                           f'manipulate_{args.attribute}_{args.amount}.png'),
              nrow=len(x), force=args.force)


@torch.no_grad()
def sample(args):
    model = load_model(args)
    torch.manual_seed(args.seed)
    imgs = model.sample(args.n, device=args.device, T=args.T,
                        T_latent=args.T_latent, progress=True)
    save_grid([imgs], os.path.join(args.out, 'sample.png'),
              nrow=min(8, args.n), force=args.force)


def export(args):
    """The EMA weights of a checkpoint (and its z_sem statistics) as a
    .safetensors file; prints its size against the checkpoint's."""
    conf = load_template(args.template)
    if args.latent_infer_path:
        conf.latent_infer_path = args.latent_infer_path
    conf.pretrain = None
    ckpt = args.ckpt or os.path.join(conf.logdir, 'last.ckpt')
    out = output_path(args.out_file, args.force)
    if conf.train_mode.is_manipulate():
        meta = export_classifier(conf, out, ckpt)
    else:
        meta = export_weights(conf, out, ckpt)
    a, b = os.path.getsize(ckpt), os.path.getsize(out)
    print(f'wrote {out}: {b / 1e6:.1f} MB, the {meta["kind"]} of template '
          f'{meta["template"]!r} ({ckpt}: {a / 1e6:.1f} MB, {a / b:.2f}x '
          f'the size); source sha256 {meta["source_sha256"]}')
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)

    def common(sp):
        sp.add_argument('--template', default=None,
                        help='template function, e.g. ffhq256_autoenc '
                        '(not needed for a .safetensors --ckpt)')
        sp.add_argument('--ckpt', default=None,
                        help='checkpoint or .safetensors export (default '
                        'checkpoints/<name>/last.ckpt)')
        sp.add_argument('--latent-infer-path', default=None,
                        help="latent.pkl of a latent template's autoencoder")
        sp.add_argument('--out', default='outputs/cli')
        sp.add_argument('--force', action='store_true',
                        help='overwrite an earlier result (default: write '
                        '<name>-1.png, <name>-2.png, ...)')
        add_front_end_arguments(sp)
        sp.add_argument('--T', type=int, default=None,
                        help='steps for rendering (default: DDIM 20, '
                        'dpmpp_2m 7)')
        sp.add_argument('--T-inv', type=int, default=None,
                        help='steps for encoding x_T (default: DDIM 100, '
                        'dpmpp_2m 34)')
        sp.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
        sp.add_argument('--align', action='store_true',
                        help='FFHQ-align face photos first (align.py; needs '
                        'dlib and its landmark file)')
        sp.add_argument('--predictor', default=None,
                        help='dlib shape_predictor_68_face_landmarks.dat '
                        '(default $DIFFAE_DLIB_LANDMARKS, checkpoints/, '
                        'then /usr/share/dlib/)')

    sp = sub.add_parser('autoencode', help='reconstruct images')
    common(sp)
    sp.add_argument('images', nargs='+')
    sp.set_defaults(fn=autoencode)

    sp = sub.add_parser('interpolate', help='interpolate two images')
    common(sp)
    sp.add_argument('images', nargs=2)
    sp.add_argument('--steps', type=int, default=7)
    sp.set_defaults(fn=interpolate)

    sp = sub.add_parser('manipulate', help='move along an attribute')
    common(sp)
    sp.add_argument('images', nargs='+')
    sp.add_argument('--cls-template', default=None,
                    help='classifier template, e.g. ffhq256_autoenc_cls '
                    '(not needed for a .safetensors --cls-ckpt)')
    sp.add_argument('--cls-ckpt', default=None)
    sp.add_argument('--attribute', required=True)
    sp.add_argument('--amount', type=float, default=0.3)
    sp.set_defaults(fn=manipulate)

    sp = sub.add_parser('sample', help='unconditional samples')
    common(sp)
    sp.add_argument('-n', type=int, default=8)
    sp.add_argument('--T-latent', type=int, default=None,
                    help='latent DPM steps (default 20 for both solvers)')
    sp.add_argument('--seed', type=int, default=0)
    sp.set_defaults(fn=sample)

    add_export_parser(sub)
    return with_step_defaults(p.parse_args(argv))


def add_export_parser(sub):
    """The 'export' subcommand (EMA weights as .safetensors)."""
    sp = sub.add_parser('export', help='EMA weights as .safetensors')
    sp.add_argument('--template', required=True,
                    help='template of the checkpoint (autoencoder, latent '
                    'or classifier), e.g. ffhq256_autoenc')
    sp.add_argument('--ckpt', default=None,
                    help='checkpoint (default checkpoints/<name>/last.ckpt)')
    sp.add_argument('--latent-infer-path', default=None,
                    help="latent.pkl of a latent template's autoencoder")
    sp.add_argument('--force', action='store_true',
                    help='overwrite OUT (default: write OUT-1 ...)')
    sp.add_argument('out_file', metavar='OUT.safetensors')
    sp.set_defaults(fn=export)


def with_step_defaults(args):
    """Fill the step counts left out: DDIM's former defaults (render 20,
    encode 100, latent 20), or the counts where the chosen solver matches
    them (inference.steps_matching_ddim)."""
    for name, ddim, latent in (('T', 20, False), ('T_inv', 100, False),
                               ('T_latent', 20, True)):
        if getattr(args, name, 0) is None:
            setattr(args, name, steps_matching_ddim(args.solver, ddim,
                                                         latent))
    return args


def main(argv=None):
    args = parse_args(argv)
    args.fn(args)


if __name__ == '__main__':
    sys.exit(main())
