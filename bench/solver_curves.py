"""DDIM vs DPM-Solver++(2M) on a trained model: how close each gets to the
converged ODE solution at T model calls (docs/solver.md).

    python bench/solver_curves.py --dataset shapes [--part latent]
    python bench/solver_curves.py --dataset scenes [--part latent]
    python bench/solver_curves.py --table outputs/solver/*.json

For T in --T and each solver, on --images held-out images (float32, the
official numerics, so that only the solver differs):

- decode: MSE of render(x_T, z_sem, T) against the converged reference,
  DDIM with --ref steps from the same x_T (seeded) and z_sem;
- round trip: MSE of render(encode_stochastic(x, T), T) against x;
- latent: MSE of the latent DPM's sample (normalised space, --latents
  seeded noises) against its --ref-step DDIM solution;
- seconds per render (an indication only: not under the bench lock).

Then the z_sem-only decoding report (zsem_probe.zsem_decoding_report) with
each solver at its --zsem steps. One JSON per dataset and part in
outputs/solver/ (the demo's models; the scenes ones: bench/solver_models).
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zsem_probe  # noqa: E402
import hardware  # noqa: E402
import solver_models  # noqa: E402
import study_recipes  # noqa: E402
from inference import DiffAE  # noqa: E402
from templates import shapes32_autoenc  # noqa: E402
from templates_latent import shapes32_autoenc_latent  # noqa: E402

SOLVERS = ('ddim', 'dpmpp_2m')


def autoenc_conf(dataset, base_dir):
    if dataset == 'shapes':
        conf = shapes32_autoenc()
        conf.base_dir = base_dir
        return conf
    return solver_models.scenes_confs(0, base_dir)[0]


def latent_conf(dataset, base_dir):
    if dataset == 'shapes':
        conf = shapes32_autoenc_latent()
        conf.base_dir = base_dir
        conf.latent_infer_path = conf.latent_infer_path.replace(
            'checkpoints/', f'{base_dir}/', 1)
        return conf
    return solver_models.scenes_confs(0, base_dir)[1]


class WithSolver:
    """A model whose render uses ``solver`` (for evaluation's reports)."""

    def __init__(self, model, solver):
        self.model, self.solver = model, solver

    def encode(self, x):
        return self.model.encode(x)

    def render(self, noise, cond, T=None):
        return self.model.render(noise, cond, T=T, solver=self.solver)


def mse(a, b):
    return (a.float() - b.float()).square().mean().item()


def latent_sample(model, noise, T, solver):
    sampler = model.latent_sampler(T, solver)
    return sampler.sample(model=model.ema_model.latent_net, noise=noise,
                          clip_denoised=model.conf.latent_clip_sample)


def image_curves(model, x, args):
    """Decode and round-trip errors per (T, solver)."""
    g = torch.Generator().manual_seed(0)
    xT = torch.randn(x.shape, generator=g)
    cond = model.encode(x)
    x01 = (x + 1) / 2
    ref = model.render(xT, cond, T=args.ref, solver='ddim', progress=True)
    rows = []
    for T in args.T:
        for solver in SOLVERS:
            t0 = time.perf_counter()
            dec = model.render(xT, cond, T=T, solver=solver)
            sec = time.perf_counter() - t0
            inv = model.encode_stochastic(x, cond, T=T, solver=solver)
            rec = model.render(inv, cond, T=T, solver=solver)
            rows.append({'T': T, 'solver': solver,
                         'decode_mse': mse(dec, ref),
                         'round_trip_mse': mse(rec, x01), 'render_s': sec})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def latent_curves(model, args):
    """Latent-sample errors per (T, solver), normalised space."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(args.latents, model.conf.style_ch, generator=g)
    ref = latent_sample(model, noise, args.ref, 'ddim')
    rows = []
    for T in args.T:
        for solver in SOLVERS:
            rows.append({'T': T, 'solver': solver, 'latent_mse': mse(
                latent_sample(model, noise, T, solver), ref)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def zsem_reports(model, dataset, args):
    data = study_recipes.heldout_data(dataset)
    n = min(args.zsem_images, len(data))
    x = torch.stack([data[i]['img'] for i in range(n)])
    read = study_recipes.DATASETS[dataset].read_attributes
    out = {}
    for solver, T in zip(SOLVERS, args.zsem):
        rep = zsem_probe.zsem_decoding_report(WithSolver(model, solver), x,
                                              read, T=T, seeds=args.seeds)
        out[f'{solver}_T{T}'] = {k: rep[k] for k in (
            'T', 'seeds', 'images', 'kept', 'chance', 'spread_across_z',
            'spread_across_xT')}
        print(solver, T, json.dumps(rep['kept']), flush=True)
    return out


def table(paths):
    """The docs table: one row per dataset and T, both solvers side by
    side (the image and latent parts of a dataset merged)."""
    print('| model | T | decode MSE DDIM | decode MSE 2M | round trip DDIM '
          '| round trip 2M | latent MSE DDIM | latent MSE 2M |')
    print('|---|---|---|---|---|---|---|---|')
    by = {}
    for path in paths:
        r = json.load(open(path))
        for x in r.get('image_rows', []) + r.get('latent_rows', []):
            by.setdefault((r['dataset'], x['T'], x['solver']), {}).update(x)
    for dataset, T in sorted({(d, T) for d, T, _ in by}):
        cells = []
        for key in ('decode_mse', 'round_trip_mse', 'latent_mse'):
            cells += [f"{by[dataset, T, s][key]:.2e}"
                      if key in by.get((dataset, T, s), {}) else '-'
                      for s in SOLVERS]
        print(f'| {dataset} | {T} | ' + ' | '.join(cells) + ' |')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='shapes', choices=['shapes',
                                                          'scenes'])
    p.add_argument('--part', default='images',
                   choices=['images', 'latent', 'zsem'],
                   help='images: decode, round trip and the z_sem-only '
                   'report (the autoencoder); latent: the latent DPM; '
                   'zsem: the z_sem-only report alone')
    p.add_argument('--base-dir', default='checkpoints')
    p.add_argument('--images', type=int, default=8)
    p.add_argument('--latents', type=int, default=256)
    p.add_argument('--T', type=int, nargs='+', default=[5, 10, 20, 50, 100])
    p.add_argument('--ref', type=int, default=1000)
    p.add_argument('--zsem', type=int, nargs=2, default=[20, 10],
                   help='steps of DDIM and of DPM-Solver++(2M) for the '
                   'z_sem-only decoding report')
    p.add_argument('--zsem-images', type=int, default=64)
    p.add_argument('--seeds', type=int, default=4)
    p.add_argument('--out', default=None)
    p.add_argument('--table', nargs='+', default=None,
                   help='print the docs table of these result files')
    args = p.parse_args(argv)
    if args.table:
        return table(sorted(sum((glob.glob(t) for t in args.table), [])))
    torch.manual_seed(0)
    out = args.out or f'outputs/solver/{args.dataset}_{args.part}.json'
    t0 = time.time()
    result = {'dataset': args.dataset, 'part': args.part,
              'command': ' '.join(sys.argv),
              'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              'cpu': hardware.read_facts('cpu').describe(),
              'threads': torch.get_num_threads(), 'ref_steps': args.ref}
    if args.part == 'latent':
        model = DiffAE.from_checkpoint(
            latent_conf(args.dataset, args.base_dir), precision=None)
        result['latent_rows'] = latent_curves(model, args)
    else:
        model = DiffAE.from_checkpoint(
            autoenc_conf(args.dataset, args.base_dir), precision=None)
        data = study_recipes.heldout_data(args.dataset)
        x = torch.stack([data[i]['img'] for i in range(args.images)])
        result['images'] = args.images
        if args.part == 'images':
            result['image_rows'] = image_curves(model, x, args)
        result['zsem_only_decoding'] = zsem_reports(model, args.dataset,
                                                    args)
    result['checkpoint'] = model.source
    result['seconds'] = time.time() - t0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'written {out}')


if __name__ == '__main__':
    main()
