"""When does conf.compile pay? Eager against torch.compile (inductor) for
a training step and a DDIM render, compile time included, side by side in
one run (bench/train_step.py does the timing).

    python bench/compile_cpu.py --model tiny --batch 8
    python bench/compile_cpu.py --model celeba64d2c_autoenc --batch 4

``--model tiny`` is the golden tiny autoencoder (32 px, 1.3M parameters,
tests/golden); any other name is a template. Prints train_step's JSON
lines, then one line per part (train, render) with the compile overhead
(first-call seconds, compiled minus eager; run it with a fresh
TORCHINDUCTOR_CACHE_DIR for a cold compile), the seconds per step or
render of each, and the number of steps (renders) after which the
compiled run is ahead: overhead / (eager - compiled), or null when the
compiled one is not faster.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gpu_check  # noqa: E402  (bench/gpu_check.py: the golden config)
import train_step  # noqa: E402  (bench/train_step.py: the timing)


def break_even(eager, compiled, per):
    """(compile overhead s, eager s, compiled s per item, items to pay)."""
    e = eager['seconds_median'] / per
    c = compiled['seconds_median'] / per
    overhead = compiled['warmup_seconds'] - eager['warmup_seconds']
    pays_after = overhead / (e - c) if e > c else None
    return overhead, e, c, pays_after


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='tiny')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--mode', default='auto', help='train_step mode')
    p.add_argument('--T', type=int, default=10)
    p.add_argument('--steps', type=int, default=3)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--backend', default='inductor')
    p.add_argument('--parts', default='train,render',
                   help='train and/or render')
    args = p.parse_args(argv)
    conf = gpu_check.golden_conf() if args.model == 'tiny' else None
    parts = args.parts.split(',')
    skip = ','.join(['encode'] + [x for x in ('train', 'render')
                                  if x not in parts])
    base = ['--batch', str(args.batch), '--modes', args.mode, '--T',
            str(args.T), '--steps', str(args.steps), '--repeats',
            str(args.repeats), '--skip', skip, '--no-peak', '--device',
            'cpu']
    if conf is None:
        base += ['--template', args.model]
    eager = train_step.main(base, conf=conf)[args.mode]
    compiled = train_step.main(base + ['--compile', '--compile-backend',
                                       args.backend], conf=conf)[args.mode]
    for part, per in (('train', args.steps), ('render', 1)):
        if part not in parts:
            continue
        overhead, e, c, pays = break_even(eager[part], compiled[part], per)
        print(json.dumps({
            'part': part, 'model': args.model, 'batch': args.batch,
            'mode': eager['computes'], 'backend': args.backend,
            'device': eager['device'],
            'compile_overhead_s': overhead,
            'eager_s_per_item': e, 'compiled_s_per_item': c,
            'speedup': e / c, 'pays_after_items': pays,
            'item': 'training step' if part == 'train' else
            f'DDIM render of {args.batch} images, T={args.T}'}),
            flush=True)


if __name__ == '__main__':
    main()
