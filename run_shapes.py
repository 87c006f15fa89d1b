"""The built-in demo, end to end on a CPU (about 10-15 minutes on 2 cores):

1. train the diffusion autoencoder on 32x32 coloured shapes (the dataset is
   generated on first use as an LMDB in the official format);
2. infer z_sem of the whole dataset (the 'infer' eval program);
3. train the latent DPM on it;
4. train the linear attribute classifier on z_sem;
5. write PNG grids to outputs/shapes32/: reconstructions (inverted vs
   random x_T), unconditional samples, an interpolation, an attribute
   manipulation; and summary.json with the measured numbers (reconstruction
   MSE, manipulation effect, linear-probe AUROC vs a random encoder).

Every stage resumes from its last checkpoint; rerunning skips finished
stages. ``--quick`` runs a few steps of each (a smoke test).
"""
import argparse
import json
import os
import shutil
import time

import torch
from torchvision.utils import make_grid, save_image

import checkpoint_io
import dataset as D
import evaluation
import renderer
from experiment import LitModel, train
from experiment_classifier import ClsModel, train_cls
from templates import shapes32_autoenc
from templates_cls import shapes32_autoenc_cls
from templates_latent import shapes32_autoenc_latent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='outputs/shapes32',
                   help='folder for the result grids and summary.json')
    p.add_argument('--quick', action='store_true',
                   help='a few steps per stage (smoke test)')
    p.add_argument('--base-dir', default='checkpoints',
                   help='where checkpoints go (conf.base_dir)')
    p.add_argument('--data', default=None,
                   help='path of the shapes LMDB (default datasets/)')
    p.add_argument('--T', type=int, default=50,
                   help='DDIM steps for encoding/rendering the results')
    p.add_argument('--steps', type=int, default=None,
                   help='autoencoder training steps (default: the '
                   "template's 2400, about 9 minutes on 2 cores); a finished "
                   'run continues from its checkpoint to the new count')
    p.add_argument('--attribute', default='large',
                   help='attribute to manipulate (see ShapesAttrDataset)')
    return p.parse_args(argv)


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


def train_stages(args):
    t0 = time.time()
    ae = configure(shapes32_autoenc(), args)
    train(ae, gpus=[0])
    t_ae = time.time() - t0

    latent_path = os.path.join(ae.logdir, 'latent.pkl')
    ckpt = os.path.join(ae.logdir, 'last.ckpt')
    if not os.path.exists(latent_path) or \
            os.path.getmtime(latent_path) < os.path.getmtime(ckpt):
        ae.eval_programs = ['infer']
        train(ae, gpus=[0], mode='eval')
    t_infer = time.time() - t0 - t_ae

    lat = configure(shapes32_autoenc_latent(), args)
    set_aside_if_stale(lat.logdir, latent_path)
    train(lat, gpus=[0])
    t_lat = time.time() - t0 - t_ae - t_infer

    cls = configure(shapes32_autoenc_cls(), args)
    set_aside_if_stale(cls.logdir, latent_path)
    train_cls(cls, gpus=[0])
    t_cls = time.time() - t0 - t_ae - t_infer - t_lat
    return {'seconds_autoencoder': t_ae, 'seconds_infer': t_infer,
            'seconds_latent_dpm': t_lat, 'seconds_classifier': t_cls}


def grid(rows, path):
    """Save a grid with one row per tensor in ``rows`` (images in [0, 1])."""
    imgs = torch.cat(rows).clamp(0, 1)
    save_image(make_grid(imgs, nrow=len(rows[0]), padding=1), path)


@torch.no_grad()
def report(args, summary):
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    lat_conf = configure(shapes32_autoenc_latent(), args)
    lit = LitModel.from_checkpoint(lat_conf)
    data = D.ShapesAttrDataset(path=lat_conf.data_dir or lit.conf.data_path,
                               image_size=lat_conf.img_size)
    x = torch.stack([data[i]['img'] for i in range(8)])
    x01 = (x + 1) / 2

    # reconstruction: inverted x_T vs random x_T
    cond = lit.encode(x)
    xT = lit.encode_stochastic(x, cond, T=args.T, progress=True)
    rec_inv = lit.render(xT, cond, T=args.T)
    rec_rand = lit.render(torch.randn_like(x), cond, T=args.T)
    grid([x01, rec_inv, rec_rand], f'{args.out}/reconstructions.png')
    summary['recon_mse_inverted_xT'] = (rec_inv - x01).square().mean().item()
    summary['recon_mse_random_xT'] = (rec_rand - x01).square().mean().item()

    # unconditional samples through the latent DPM
    torch.manual_seed(1)
    samples = lit.sample(16, device='cpu', T=args.T, T_latent=args.T)
    save_image(make_grid(samples, nrow=8, padding=1),
               f'{args.out}/samples.png')

    # interpolation between the first two images
    alphas = torch.linspace(0, 1, 8).tolist()
    inter = renderer.interpolate(lit.ema_model, lit._sampler(args.T),
                                 cond[:1], xT[:1], cond[1:2], xT[1:2],
                                 alphas)
    grid([(inter + 1) / 2], f'{args.out}/interpolation.png')

    # manipulation along the classifier direction of one attribute
    cls_conf = configure(shapes32_autoenc_cls(), args)
    cls = ClsModel(cls_conf)
    cls.load_state_dict(checkpoint_io.load_checkpoint(
        os.path.join(cls_conf.logdir, 'last.ckpt'))['state_dict'])
    direction = cls.direction(args.attribute)
    amounts = [-1.0, -0.5, 0.0, 0.5, 1.0]
    k = D.ShapesAttrDataset.cls_to_id[args.attribute]
    rows, positive, score = [], {}, {}
    for a in amounts:
        c2 = renderer.manipulate_cond(cond, direction, a, cls.normalize,
                                      cls.denormalize)
        img = lit.render(xT, c2, T=args.T)
        rows.append(img)
        measured = D.shape_attribute_scores(img, value_range=(0, 1))
        positive[a] = (measured['labels'][:, k] > 0).float().mean().item()
        score[a] = measured['label_scores'][:, k].mean().item()
    save_image(make_grid(torch.stack(rows, 1).flatten(0, 1),
                         nrow=len(amounts), padding=1),
               f'{args.out}/manipulation.png')
    # measured from the rendered pixels
    summary['manipulation'] = {
        'attribute': args.attribute,
        'fraction_with_attribute_by_amount': positive,
        'mean_attribute_score_by_amount': score,
    }

    # linear probe of z_sem: the trained encoder vs the same architecture
    # at random initialisation (three draws: random conv features are a
    # strong baseline, and vary with the draw)
    state = checkpoint_io.load_checkpoint(lat_conf.latent_infer_path)
    names = D.ShapesAttrDataset.id_to_cls
    summary['probe_auroc_trained_encoder'] = evaluation.linear_probe(
        state['conds'], data.labels, names)
    loader = torch.utils.data.DataLoader(data, batch_size=250)
    random_enc = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = lit.conf.make_model_conf().make_model().eval()
        z = torch.cat([model.encoder(b['img']) for b in loader])
        random_enc.append(evaluation.linear_probe(z, data.labels, names))
    summary['probe_auroc_random_encoders'] = random_enc
    summary['probe_mean_auroc'] = {
        'trained_encoder': summary['probe_auroc_trained_encoder']['mean'],
        'random_encoders': [r['mean'] for r in random_enc]}
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
