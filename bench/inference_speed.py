"""What a user of the CLI and the web page gets: today's default path
(float32 DDIM at the former step counts) against the new default
(DPM-Solver++(2M) at the matching step counts, in the precision
hardware.py picks), wall-clock in one interleaved run, with each result's
distance to the converged solution (docs/solver.md).

    flock -x /work/cpu.lock python bench/inference_speed.py

Operations as the front-ends run them on the demo model: render (one
image from random x_T and its z_sem), reconstruction (encode, invert,
decode one image), sample (8 images through the latent DPM). Errors: MSE
against a --ref-step float32 DDIM solution from the same noise (for the
reconstruction: against the input image). With --capped the same runs
again in a child process with ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI (oneDNN
without bf16, as on a CPU without it; hardware.py reads the cap).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardware  # noqa: E402
import solver_curves  # noqa: E402
import study_recipes  # noqa: E402
from inference import DiffAE, steps_matching_ddim  # noqa: E402

# the former defaults: (render T, inversion T, latent T)
FRONT_ENDS = {'cli': (20, 100, 20), 'web': (20, 50, 50)}


def paths(front):
    T, T_inv, T_lat = FRONT_ENDS[front]
    new = (steps_matching_ddim('dpmpp_2m', T),
           steps_matching_ddim('dpmpp_2m', T_inv),
           steps_matching_ddim('dpmpp_2m', T_lat, latent=True))
    return {'today': ('ddim', None, (T, T_inv, T_lat)),
            'new': ('dpmpp_2m', 'auto', new)}


def operations(model, x, xT, steps):
    T, T_inv, T_lat = steps

    def render():
        return model.render(xT, model.encode(x), T=T)

    def reconstruct():
        cond = model.encode(x)
        return model.render(model.encode_stochastic(x, cond, T=T_inv), cond,
                            T=T)

    def sample():
        torch.manual_seed(1)
        return model.sample(8, 'cpu', T=T, T_latent=T_lat)
    return {'render': render, 'reconstruction': reconstruct,
            'sample': sample}


def references(model, x, xT, ref):
    torch.manual_seed(1)
    return {'render': model.render(xT, model.encode(x), T=ref),
            'reconstruction': (x + 1) / 2,
            'sample': model.sample(8, 'cpu', T=ref, T_latent=ref)}


def measure(args):
    conf = solver_curves.latent_conf('shapes', args.base_dir)
    data = study_recipes.heldout_data('shapes')
    x = data[0]['img'][None]
    xT = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = {'cpu': hardware.read_facts('cpu').describe(),
           'onednn_cap': os.environ.get('ONEDNN_MAX_CPU_ISA'), 'fronts': {}}
    ref_model = DiffAE.from_checkpoint(conf, precision=None)
    refs = references(ref_model, x, xT, args.ref)
    for front in args.front:
        runs = {}
        for name, (solver, precision, steps) in paths(front).items():
            model = DiffAE.from_checkpoint(conf, precision=precision,
                                           solver=solver)
            ops = operations(model, x, xT, steps)
            runs[name] = {'solver': solver, 'steps': steps, 'ops': ops,
                          'precision': model.precision_chosen(),
                          'seconds': {k: [] for k in ops}, 'mse': {}}
            for k, op in ops.items():          # warm-up, and the error
                runs[name]['mse'][k] = solver_curves.mse(op(), refs[k])
        for _ in range(args.reps):             # interleaved timing
            for k in ('render', 'reconstruction', 'sample'):
                for run in runs.values():
                    t0 = time.perf_counter()
                    run['ops'][k]()
                    run['seconds'][k].append(time.perf_counter() - t0)
        for run in runs.values():
            run.pop('ops')
            run['best_s'] = {k: min(v) for k, v in run['seconds'].items()}
        out['fronts'][front] = runs
        print(json.dumps({front: {n: (r['precision'], r['steps'],
                                      r['best_s'], r['mse'])
                                  for n, r in runs.items()}}), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--base-dir', default='checkpoints')
    p.add_argument('--front', nargs='+', default=['cli', 'web'])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--ref', type=int, default=1000)
    p.add_argument('--capped', action='store_true')
    p.add_argument('--out', default='outputs/solver/speed.json')
    args = p.parse_args(argv)
    lscpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    flags = [f for f in ('avx512_bf16', 'amx_bf16') if f in lscpu]
    print('CPU:', hardware.read_facts('cpu').describe(), 'flags:', flags,
          flush=True)
    result = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
              'command': ' '.join(sys.argv), 'flags': flags,
              'threads': torch.get_num_threads(), 'native': measure(args)}
    if args.capped:
        child = args.out + '.capped.json'
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX512_CORE_VNNI')
        subprocess.run([sys.executable, __file__, '--base-dir',
                        args.base_dir, '--reps', str(args.reps), '--ref',
                        str(args.ref), '--out', child, '--front',
                        *args.front], env=env, check=True)
        result['capped'] = json.load(open(child))['native']
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'written {args.out}')


if __name__ == '__main__':
    main()
