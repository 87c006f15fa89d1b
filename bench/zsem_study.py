"""Does z_sem carry the semantics at a small budget? One training recipe on
one built-in dataset, measured at several step counts (issue #12's study).

    python bench/zsem_study.py --dataset shapes --variant v --steps 600 1200

For every step count: train the autoencoder (continuing the same run),
infer z_sem of the dataset, train the demo's attribute classifier on it,
then measure on the first --images images:

- z_sem-only decoding from random x_T (zsem_probe.zsem_decoding_report):
  which measured attributes stay, and the spread across z_sem vs x_T;
- moving z_sem along the classifier directions with the inverted x_T
  (zsem_probe.manipulation_change_rate): each colour / sky class from the
  images without it, 'large' / 'high_horizon' from those without it;
- inverted-x_T reconstruction MSE;
- the linear probe of z_sem vs the same encoder at three random
  initialisations (cached per dataset: the architecture is the same for
  every recipe).

One JSON line per step count is appended to --out (default
outputs/study/<dataset>_<variant>.jsonl), with the CPU named. Runs go to
checkpoints/study/<dataset>_<variant>; rerunning continues them.
"""
import argparse
import glob
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import zsem_probe  # noqa: E402
import hardware  # noqa: E402
import study_recipes  # noqa: E402
import validation  # noqa: E402
from experiment import train  # noqa: E402
from experiment_classifier import ClsModel, train_cls  # noqa: E402
from inference import DiffAE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='shapes',
                   choices=sorted(study_recipes.DATASETS))
    p.add_argument('--variant', default='official',
                   choices=sorted(study_recipes.VARIANTS))
    p.add_argument('--steps', type=int, nargs='+', default=[1200])
    p.add_argument('--images', type=int, default=64)
    p.add_argument('--T', type=int, default=20)
    p.add_argument('--seeds', type=int, default=4)
    p.add_argument('--base-dir', default='checkpoints/study')
    p.add_argument('--out', default=None)
    p.add_argument('--no-probe', action='store_true')
    p.add_argument('--measure-only', action='store_true',
                   help='measure the run\'s saved checkpoints of --steps '
                   '(epoch=*-step=N.ckpt and its classifier) without '
                   'training; written to <out> with "-remeasured"')
    args = p.parse_args(argv)
    args.out = args.out or (f'outputs/study/{args.dataset}_'
                            f'{args.variant}.jsonl')
    return args


def random_encoder_probes(ds, conf, data, base_dir, draws=3, tag=''):
    """Linear-probe results of ``draws`` randomly initialised encoders of
    ``conf``'s architecture (cached in ``base_dir``)."""
    path = os.path.join(base_dir,
                        f'{ds.name}{tag}_random_encoder_probes.json')
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    loader = torch.utils.data.DataLoader(data, batch_size=250)
    out = []
    for seed in range(draws):
        torch.manual_seed(seed)
        model = conf.make_model_conf().make_model().eval()
        with torch.no_grad():
            z = torch.cat([model.encoder(b['img']) for b in loader])
        out.append(zsem_probe.linear_probe(z, data.labels, ds.label_names))
    os.makedirs(base_dir, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(out, f)
    return out


@torch.no_grad()
def loss_gain_by_noise(model, conf, x, buckets=10, seed=0):
    """How much the right z_sem lowers the training loss at each noise
    level: the loss with each image's own z_sem vs with another image's
    (rolled by one), at ``buckets`` evenly spaced timesteps. Reported in
    the recipe's own objective ('loss', what the gradients follow) and as
    the x_0 error of the prediction (comparable across recipes)."""
    sampler = conf.make_diffusion_conf().make_sampler()
    net = model.ema_model
    z = model.encode(x)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(buckets):
        t = torch.full((len(x), ), int((b + 0.5) * conf.T / buckets))
        noise = torch.randn(x.shape, generator=g)
        row = {'t': int(t[0]),
               'snr': float(sampler.alphas_cumprod[t[0]]
                            / (1 - sampler.alphas_cumprod[t[0]]))}
        for name, c in (('own', z), ('other', z.roll(1, 0))):
            out = sampler.training_losses(net, x, t, model_kwargs={
                'cond': c}, noise=noise)
            row[f'loss_{name}_z'] = out['loss'].mean().item()
            row[f'x0_mse_{name}_z'] = (out['pred_xstart'].clamp(-1, 1)
                                       - x).square().mean().item()
        rows.append(row)
    return rows


def measure_images(args, ds, model, cls, x):
    """z_sem-only decoding, inverted-x_T reconstruction and the change
    rates of the manipulations, on the images ``x``."""
    rec = {'zsem_only': zsem_probe.zsem_decoding_report(
        model, x, ds.read_attributes, T=args.T, seeds=args.seeds)}
    cond = model.encode(x)
    xT = model.encode_stochastic(x, cond, T=args.T)
    inv = model.render(xT, cond, T=args.T)
    rec['recon_mse_inverted_xT'] = (inv - (x + 1) / 2).square().mean().item()
    rec['manipulation'] = {}
    for attribute, label, target in ds.manipulations:
        r = zsem_probe.manipulation_change_rate(
            model, x, cond, xT, cls.direction(label), ds.read_attributes,
            attribute, target, amounts=(0.5, 1.0), T=args.T,
            normalize=cls.normalize, denormalize=cls.denormalize)
        rec['manipulation'][label] = r
    return rec


@torch.no_grad()
def encode_all(model, data, batch_size=250):
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    return torch.cat([model.encode(b['img']) for b in loader])


def measure(args, ds, ae, cls_conf, data, heldout, path=None):
    """Every number of one checkpoint (see the module docstring): on the
    first --images training images, and (under 'heldout') on as many
    images the model never saw."""
    torch.manual_seed(0)
    model = DiffAE.from_checkpoint(ae, path, precision=None)  # as before
    cls = ClsModel.from_checkpoint(cls_conf)
    x = torch.stack([data[i]['img'] for i in range(args.images)])
    rec = measure_images(args, ds, model, cls, x)
    rec['loss_gain_by_noise'] = loss_gain_by_noise(model, ae, x)
    xh = torch.stack([heldout[i]['img'] for i in range(args.images)])
    rec['heldout'] = measure_images(args, ds, model, cls, xh)
    if not args.no_probe:
        # (latent.pkl is of the run's last checkpoint)
        if ae.data_dir is None and path is None:
            z = validation.load_latents(
                os.path.join(ae.logdir, 'latent.pkl'), ae.style_ch)['conds']
            rec['probe_trained'] = zsem_probe.linear_probe(
                z, data.labels, ds.label_names)
            rec['probe_random'] = random_encoder_probes(ds, ae, data,
                                                        args.base_dir)
        # the same unseen images for every recipe
        rec['heldout']['probe_trained'] = zsem_probe.linear_probe(
            encode_all(model, heldout), heldout.labels, ds.label_names)
        rec['heldout']['probe_random'] = random_encoder_probes(
            ds, ae, heldout, args.base_dir, tag='_heldout')
    return rec


def remeasure(args, ds, data, heldout):
    """Measure saved checkpoints of an earlier run again (e.g. for
    numbers added to measure() since)."""
    out = args.out.replace('.jsonl', '-remeasured.jsonl')
    for steps in args.steps:
        ae = study_recipes.autoencoder_conf(args.dataset, args.variant,
                                            steps, args.base_dir)
        found = glob.glob(os.path.join(ae.logdir,
                                       f"epoch=*-step={steps}.ckpt"))
        if len(found) != 1:
            raise FileNotFoundError(f'no single checkpoint of step {steps} '
                                    f'in {ae.logdir}: {found}')
        rec = {'dataset': args.dataset, 'variant': args.variant,
               'steps': steps, 'checkpoint': found[0]}
        rec.update(measure(args, ds, ae,
                           study_recipes.classifier_conf(ae, steps), data,
                           heldout, path=found[0]))
        rec['cpu'] = hardware.read_facts('cpu').describe()
        with open(out, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        print(json.dumps(study_recipes.headline(rec), indent=1), flush=True)


def main(argv=None):
    args = parse_args(argv)
    torch.set_float32_matmul_precision('high')
    ds = study_recipes.DATASETS[args.dataset]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    data = study_recipes.training_data(args.dataset, args.variant)
    heldout = study_recipes.heldout_data(args.dataset)
    if args.measure_only:
        return remeasure(args, ds, data, heldout)
    for steps in args.steps:
        t0 = time.time()
        ae = study_recipes.autoencoder_conf(args.dataset, args.variant,
                                            steps, args.base_dir)
        train(ae, gpus=[0])
        t_train = time.time() - t0
        ae.eval_programs = ['infer']
        train(ae, gpus=[0], mode='eval')
        cls_conf = study_recipes.classifier_conf(ae, steps)
        train_cls(cls_conf, gpus=[0])
        rec = {'dataset': args.dataset, 'variant': args.variant,
               'steps': steps, 'seconds_train_this_segment': t_train}
        rec.update(measure(args, ds, ae, cls_conf, data, heldout))
        rec['seconds_total_segment'] = time.time() - t0
        rec['cpu'] = hardware.read_facts('cpu').describe()
        with open(args.out, 'a') as f:
            f.write(json.dumps(rec) + '\n')
        print(json.dumps(study_recipes.headline(rec), indent=1), flush=True)


if __name__ == '__main__':
    main()
