"""The built-in demo, end to end on a CPU (about 14 minutes on 2 cores):

1. train the diffusion autoencoder on 32x32 coloured shapes (the dataset is
   generated on first use as an LMDB in the official format);
2. infer z_sem of the whole dataset (the 'infer' eval program);
3. train the latent DPM on it;
4. train the linear attribute classifier on z_sem;
5. write PNG grids to outputs/shapes32/: reconstructions (inverted vs
   random x_T), z_sem decoded from random x_T, unconditional samples, an
   interpolation, an attribute manipulation; and summary.json with the
   measured numbers (reconstruction MSE, what z_sem-only decoding keeps,
   manipulation effect and change rates, linear-probe AUROC vs random
   encoders).

Every stage resumes from its last checkpoint; rerunning skips finished
stages. ``--quick`` runs a few steps of each (a smoke test).
"""
import argparse
import functools
import json
import os
import shutil
import time

import pytorch_lightning as pl
import torch
from tqdm.auto import tqdm

import shapes_data
import zsem_probe
import hardware
import renderer
from experiment import train
from experiment_classifier import ClsModel, train_cls
from grids import save_labelled_grid
from inference import DiffAE
from templates import shapes32_autoenc
from templates_cls import shapes32_autoenc_cls
from templates_latent import shapes32_autoenc_latent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=None,
                   help='folder for the result grids and summary.json '
                   '(default outputs/shapes32, with --quick '
                   'outputs/shapes32_quick)')
    p.add_argument('--quick', action='store_true',
                   help='a few steps per stage and a small report (smoke '
                   'test, about 2 minutes; own checkpoint folder)')
    p.add_argument('--base-dir', default=None,
                   help='where checkpoints go (conf.base_dir; default '
                   'checkpoints, with --quick checkpoints/quick)')
    p.add_argument('--data', default=None,
                   help='path of the shapes LMDB (default datasets/)')
    p.add_argument('--T', type=int, default=None,
                   help='solver steps for encoding/rendering the results '
                   '(default 50, with --quick 10)')
    p.add_argument('--solver', default='ddim', choices=['ddim', 'dpmpp_2m'],
                   help='ODE solver of the report (default ddim, the '
                   "official sampler the README's figures use; dpmpp_2m: "
                   'DPM-Solver++(2M), docs/solver.md)')
    p.add_argument('--steps', type=int, default=None,
                   help='autoencoder training steps (default: the '
                   "template's 3000, about 11 minutes on 2 cores); a finished "
                   'run continues from its checkpoint to the new count')
    p.add_argument('--attribute', default='large',
                   help='attribute to manipulate (see ShapesAttrDataset)')
    args = p.parse_args(argv)
    quick = args.quick
    args.out = args.out or ('outputs/shapes32_quick' if quick
                            else 'outputs/shapes32')
    args.base_dir = args.base_dir or ('checkpoints/quick' if quick
                                      else 'checkpoints')
    args.T = args.T or (10 if quick else 50)
    return args


def configure(conf, args):
    conf.base_dir = args.base_dir
    if args.data:
        conf.data_dir = args.data
    for c in (conf.pretrain, ):
        if c is not None:
            c.path = c.path.replace('checkpoints/', f'{args.base_dir}/', 1)
    if conf.latent_infer_path:
        conf.latent_infer_path = conf.latent_infer_path.replace(
            'checkpoints/', f'{args.base_dir}/', 1)
    if args.steps and conf.name == 'shapes32_autoenc':
        conf.total_samples = conf.batch_size * args.steps
    if args.quick:
        conf.total_samples = conf.batch_size * 4
        conf.sample_every_samples = conf.batch_size * 2
        conf.save_every_samples = conf.batch_size * 2
    return conf


def set_aside_if_stale(logdir, source):
    """A stage trained on an older ``source`` (latent.pkl re-inferred
    after more autoencoder steps) would resume as finished: move its run
    folder to ``<logdir>.old`` (replacing an earlier one) so it retrains."""
    ckpt = os.path.join(logdir, 'last.ckpt')
    if os.path.exists(ckpt) and \
            os.path.getmtime(ckpt) < os.path.getmtime(source):
        old = logdir.rstrip('/') + '.old'
        shutil.rmtree(old, ignore_errors=True)
        os.rename(logdir, old)
        print(f"'{source}' is newer than '{ckpt}': moved that run to "
              f"'{old}' and training it again")


# measured on 2-core CPUs (README): the stages after the autoencoder and
# the report take about this long together (full demo with 40,000 images,
# 2026-11-28: infer 25, latent DPM 44, classifier 23, report 93 s)
OTHER_STAGES_S = {False: 190, True: 30}
SHAPE_ATTRS = list(shapes_data.ShapesAttrDataset.id_to_cls)


def heldout_data(conf):
    """The report's images: shapes of the training distribution that the
    autoencoder never saw (``shapes_heldout.lmdb`` beside the training
    LMDB), so that the numbers say what z_sem does for a new image."""
    return shapes_data.ShapesAttrDataset.heldout(
        conf.data_dir or conf.data_path, image_size=conf.img_size)


def train_stages(args):
    t0 = time.time()
    ae = configure(shapes32_autoenc(), args)
    lat = configure(shapes32_autoenc_latent(), args)
    print_plan(args, ae, lat)
    train(ae, gpus=[0], callbacks=[DemoEstimate(OTHER_STAGES_S[args.quick],
                                                warmup=1 if args.quick else 3,
                                                measure=2 if args.quick
                                                else 10)])
    t_ae = time.time() - t0

    latent_path = os.path.join(ae.logdir, 'latent.pkl')
    ckpt = os.path.join(ae.logdir, 'last.ckpt')
    if not os.path.exists(latent_path) or \
            os.path.getmtime(latent_path) < os.path.getmtime(ckpt):
        ae.eval_programs = ['infer']
        train(ae, gpus=[0], mode='eval')
    t_infer = time.time() - t0 - t_ae

    set_aside_if_stale(lat.logdir, latent_path)
    train(lat, gpus=[0])
    t_lat = time.time() - t0 - t_ae - t_infer

    cls = configure(shapes32_autoenc_cls(), args)
    set_aside_if_stale(cls.logdir, latent_path)
    train_cls(cls, gpus=[0])
    t_cls = time.time() - t0 - t_ae - t_infer - t_lat
    return {'seconds_autoencoder': t_ae, 'seconds_infer': t_infer,
            'seconds_latent_dpm': t_lat, 'seconds_classifier': t_cls}


class DemoEstimate(pl.Callback):
    """Prints, after the first steps, how long the autoencoder stage will
    take on this machine (measured) and the whole demo with it."""

    def __init__(self, other_stages_s: float, warmup: int = 3,
                 measure: int = 10):
        self.other_stages_s = other_stages_s
        self.warmup, self.measure = warmup, measure
        self.start_step = self.t0 = None

    def on_train_batch_end(self, trainer, *_):
        step = trainer.global_step
        if self.start_step is None:
            self.start_step = step
        done = step - self.start_step
        if done == self.warmup:
            self.t0 = time.time()
        elif done == self.warmup + self.measure and self.t0 is not None:
            per_step = (time.time() - self.t0) / self.measure
            left = (trainer.max_steps - step) * per_step
            print(f'\n[demo] {per_step:.2f} s per autoencoder step here: '
                  f'about {left / 60:.1f} min to finish this stage, about '
                  f'{(left + self.other_stages_s) / 60:.0f} min for the '
                  'whole demo', flush=True)


def print_plan(args, ae, lat):
    print(f"""[demo] plan ({'quick smoke test' if args.quick else 'full'}):
  1. dataset       {ae.data_dir or ae.data_path} (generated on first use)
  2. autoencoder   {ae.total_samples // ae.batch_size} steps of batch \
{ae.batch_size} -> {ae.logdir}/last.ckpt
  3. infer         z_sem of every image -> {ae.logdir}/latent.pkl
  4. latent DPM    {lat.total_samples // lat.batch_size} steps of batch \
{lat.batch_size} -> {lat.logdir}/last.ckpt
  5. classifier    linear attribute classifier on z_sem
  6. report        PNG grids + summary.json -> {args.out}/
Every stage resumes from its checkpoint; a finished stage is skipped.""",
          flush=True)


def decode_report(args, lit, x, summary):
    """Reconstructions from the inverted and from random x_T."""
    x01 = (x + 1) / 2
    cond = lit.encode(x)
    xT = lit.encode_stochastic(x, cond, T=args.T, progress=True)
    rec_inv = lit.render(xT, cond, T=args.T)
    rec_rand = lit.render(torch.randn_like(x), cond, T=args.T)
    save_labelled_grid(
        f'{args.out}/reconstructions.png', [x01, rec_inv, rec_rand],
        ['input', 'inverted x_T', 'random x_T'],
        title=f'Decoding z_sem ({args.solver} T={args.T})')
    summary['recon_mse_inverted_xT'] = (rec_inv - x01).square().mean().item()
    summary['recon_mse_random_xT'] = (rec_rand - x01).square().mean().item()
    return cond, xT


def samples_report(args, lit, n=16):
    """Unconditional samples through the latent DPM."""
    torch.manual_seed(1)
    samples = lit.sample(n, device='cpu', T=args.T, T_latent=args.T)
    half = n // 2
    save_labelled_grid(f'{args.out}/samples.png',
                       [samples[:half], samples[half:2 * half]],
                       title=f'Unconditional samples (latent DPM + decoder, '
                       f'T={args.T})')


def interpolation_report(args, lit, cond, xT, n=8):
    """From the first image to the second: z_sem lerp, x_T slerp."""
    alphas = torch.linspace(0, 1, n).tolist()
    inter = lit.interpolate(cond[:1], xT[:1], cond[1:2], xT[1:2], alphas,
                            T=args.T)
    save_labelled_grid(f'{args.out}/interpolation.png', [inter],
                       col_labels=[f'{a:.2f}' for a in alphas],
                       title='Interpolation, alpha from image 1 to image 2')


def manipulation_report(args, lit, cls, cond, xT, summary):
    """Move z_sem along the classifier direction of ``args.attribute``;
    the effect is measured from the rendered pixels."""
    direction = cls.direction(args.attribute)
    amounts = [-1.0, -0.5, 0.0, 0.5, 1.0]
    k = SHAPE_ATTRS.index(args.attribute)
    cols, positive, score = [], {}, {}
    for a in amounts:
        c2 = renderer.manipulate_cond(cond, direction, a, cls.normalize,
                                      cls.denormalize)
        img = lit.render(xT, c2, T=args.T)
        cols.append(img)
        measured = shapes_data.shape_attribute_scores(img, value_range=(0, 1))
        positive[a] = (measured['labels'][:, k] > 0).float().mean().item()
        score[a] = measured['label_scores'][:, k].mean().item()
    rows = list(torch.stack(cols, 1))        # one row per image
    save_labelled_grid(
        f'{args.out}/manipulation.png', rows,
        [f'image {i + 1}' for i in range(len(rows))],
        [f'{a:+g}' for a in amounts],
        title=f"Moving z_sem along '{args.attribute}' (amount x sqrt(C))")
    summary['manipulation'] = {
        'attribute': args.attribute,
        'fraction_with_attribute_by_amount': positive,
        'mean_attribute_score_by_amount': score,
    }


def zsem_report(args, lit, cls, data, summary):
    """Does z_sem carry what the image is? Decode it from random x_T
    (several draws) and read the attributes back from the pixels; move it
    along the classifier directions (inverted x_T) and count the images
    that change (zsem_probe.zsem_decoding_report /
    manipulation_change_rate). T is at most 20 here (hundreds of decodes).
    """
    n, T = (16, min(args.T, 10)) if args.quick else (64, min(args.T, 20))
    n = min(n, len(data))
    x = torch.stack([data[i]['img'] for i in range(n)])
    read = functools.partial(shapes_data.shape_attribute_classes,
                             value_range=(0, 1))
    report = zsem_probe.zsem_decoding_report(
        lit, x, read, T=T, seeds=2 if args.quick else 4, return_decoded=True)
    decoded = report.pop('decoded')
    summary['zsem_only_decoding'] = report
    # the grid: one row per image (the first 8), its decodes of the draws
    rows = [(x[:8] + 1) / 2] + [d[:8] for d in decoded]
    save_labelled_grid(
        f'{args.out}/zsem_only.png', [torch.stack(r) for r in zip(*rows)],
        [f'image {i + 1}' for i in range(8)],
        ['input'] + [f'x_T draw {k + 1}' for k in range(len(rows) - 1)],
        title=f'z_sem from random x_T (T={T}), one x_T per column')
    cond = lit.encode(x)
    xT = lit.encode_stochastic(x, cond, T=T)
    changed = {}
    for attribute, label, target in shapes_data.SHAPE_MANIPULATIONS:
        changed[label] = zsem_probe.manipulation_change_rate(
            lit, x, cond, xT, cls.direction(label), read, attribute, target,
            amounts=(0.5, 1.0, 1.5), T=T, normalize=cls.normalize,
            denormalize=cls.denormalize)
    summary['manipulation_change_rate'] = changed


def probe_report(args, lit, data, summary):
    """Linear probe of z_sem on the held-out images: the trained encoder vs
    the same architecture at random initialisation (random conv features
    are a strong baseline and vary with the draw)."""
    names = SHAPE_ATTRS
    loader = torch.utils.data.DataLoader(data, batch_size=250)
    z = torch.cat([lit.encode(b['img']) for b in tqdm(
        loader, desc='trained encoder', leave=False)])
    summary['probe_auroc_trained_encoder'] = zsem_probe.linear_probe(
        z, data.labels, names)
    random_enc = []
    for seed in range(1 if args.quick else 3):
        torch.manual_seed(seed)
        model = lit.conf.make_model_conf().make_model().eval()
        z = torch.cat([model.encoder(b['img']) for b in tqdm(
            loader, desc=f'random encoder {seed + 1}', leave=False)])
        random_enc.append(zsem_probe.linear_probe(z, data.labels, names))
    summary['probe_auroc_random_encoders'] = random_enc
    summary['probe_mean_auroc'] = {
        'trained_encoder': summary['probe_auroc_trained_encoder']['mean'],
        'random_encoders': [r['mean'] for r in random_enc]}


@torch.no_grad()
def report(args, summary):
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    lat_conf = configure(shapes32_autoenc_latent(), args)
    lit = DiffAE.from_checkpoint(lat_conf, solver=args.solver)
    # what the report ran: the solver and the precision chosen for the CPU
    summary['solver'] = args.solver
    summary['inference_precision'] = lit.precision_chosen()
    # and what a call on one image runs in ('auto' runs small CPU calls,
    # under inference_precision.CPU_BF16_MIN_PIXELS, in float32)
    summary['inference_precision_of_one_image'] = lit.precision_chosen(
        pixels=lat_conf.img_size**2)
    data = heldout_data(lat_conf)
    summary['report_images'] = (f'{len(data)} held-out images '
                                f"('{data.path}', seed {data.meta['seed']})")
    x = torch.stack([data[i]['img'] for i in range(4 if args.quick else 8)])
    cond, xT = decode_report(args, lit, x, summary)
    samples_report(args, lit, 8 if args.quick else 16)
    interpolation_report(args, lit, cond, xT)
    cls_conf = configure(shapes32_autoenc_cls(), args)
    cls = ClsModel.from_checkpoint(cls_conf)
    manipulation_report(args, lit, cls, cond, xT, summary)
    zsem_report(args, lit, cls, data, summary)
    probe_report(args, lit, data, summary)
    summary['seconds_report'] = time.time() - t0
    summary['cpu'] = hardware.read_facts('cpu').describe()
    with open(f'{args.out}/summary.json', 'w') as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None):
    args = parse_args(argv)
    torch.set_float32_matmul_precision('high')
    summary = train_stages(args)
    summary = report(args, summary)
    print(json.dumps(summary, indent=1))
    print(f'grids written to {args.out}/')


if __name__ == '__main__':
    main()
