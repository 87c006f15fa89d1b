"""What the opt-in perceptual (LPIPS) loss term costs per training step:
step time and peak memory with the term off and on, side by side.

    python bench/perceptual_loss.py --template shapes32_autoenc --batch 8
    python bench/perceptual_loss.py --template ffhq128_autoenc_130M \
        --batch 2 --steps 2 --rounds 1

Each measurement runs in a fresh child process (so that its peak RSS is
its own), the modes alternating off, on, off, on ... for ``--rounds``.
A step is what ``train()`` runs: the loss in the precision train() picks
here (conf.precision 'auto': bf16 autocast with native bf16), backward,
grad-norm clip, Adam, EMA. The term is on at every timestep
(lpips_loss_t_max = T; the cost does not depend on it: LPIPS runs on the
whole batch and the weight zeroes the other samples). The AlexNet trunk
is a seeded random stand-in of the real file's shapes (same FLOPs).
Prints one JSON line per child, then the medians and on/off ratios;
'lpips_alone_s' times the LPIPS forward + backward by itself (measured
after the steps, so not inside the peak), for when the step-time
difference is below run-to-run noise.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import hardware  # noqa: E402
import templates_latent  # noqa: E402
from experiment import LitModel  # noqa: E402
from train_step import training_step  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--template', default='shapes32_autoenc')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--steps', type=int, default=3,
                   help='timed steps per child (after one warm-up step)')
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--net', default='alex', help='LPIPS trunk')
    p.add_argument('--child', choices=['off', 'on'],
                   help=argparse.SUPPRESS)
    p.add_argument('--trunk', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def child(args):
    conf = getattr(templates_latent, args.template)()
    conf.batch_size = args.batch
    if args.child == 'on':
        conf.lpips_loss_weight = 1.0
        conf.lpips_loss_t_max = conf.T
        conf.lpips_loss_net = args.net
        conf.lpips_loss_trunk_path = args.trunk
    precision, _ = hardware.choose_precision(conf.precision, conf.fp16,
                                             'cpu')
    dtype = torch.bfloat16 if precision == 'bf16-mixed' else None
    torch.manual_seed(0)
    lit = LitModel(conf)
    net = lit.perceptual_net('cpu')
    if hardware.prefers_channels_last('cpu'):
        lit.model.to(memory_format=torch.channels_last)
        lit.ema_model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(lit.model.parameters(), lr=conf.lr)
    x = torch.rand(args.batch, 3, conf.img_size, conf.img_size) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, conf.T, (args.batch, ))

    def step():
        ctx = torch.autocast('cpu', dtype=dtype or torch.float32,
                             enabled=dtype is not None)
        training_step(lit, lit.model, opt, x, t, ctx, perceptual=net)

    built = rss_mib()
    step()  # warm-up (oneDNN kernels, Adam state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    term_s = None
    if net is not None:  # the LPIPS forward + backward alone, float32
        guess = x.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            net(guess.float(), x.float()).sum().backward()
        term_s = round((time.perf_counter() - t0) / args.steps, 4)
    print(json.dumps({
        'template': args.template, 'batch': args.batch, 'lpips': args.child,
        'net': args.net if args.child == 'on' else None,
        'precision': precision, 'threads': torch.get_num_threads(),
        'step_s': [round(v, 3) for v in times], 'lpips_alone_s': term_s,
        'rss_after_build_mib': round(built), 'peak_rss_mib': round(peak),
        'step_peak_over_build_mib': round(peak - built)}), flush=True)


def stand_in_trunk(folder, net):
    import metrics
    import torchvision
    filename, _, _ = metrics.LPIPS_TRUNKS[net]
    make = {'alex': torchvision.models.alexnet, 'vgg': torchvision.models.
            vgg16, 'squeeze': torchvision.models.squeezenet1_1}[net]
    torch.manual_seed(1)
    state = {k: v for k, v in make(weights=None).state_dict().items()
             if k.startswith('features.')}
    path = os.path.join(folder, filename)
    torch.save(state, path)
    return path


def main(args):
    facts = hardware.read_facts('cpu')
    flags = sorted(f for f in (facts.cpu_flags or ())
                   if f in ('avx512_bf16', 'amx_bf16', 'amx_tile'))
    print(json.dumps({'cpu': facts.describe(), 'bf16_flags': flags,
                      'date': time.strftime('%Y-%m-%d %H:%M UTC',
                                            time.gmtime()),
                      'command': ' '.join(sys.argv)}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trunk = stand_in_trunk(tmp, args.net)
        for _ in range(args.rounds):
            for mode in ('off', 'on'):
                out = subprocess.run(
                    [sys.executable, __file__, '--child', mode, '--trunk',
                     trunk, '--template', args.template, '--batch',
                     str(args.batch), '--steps', str(args.steps), '--net',
                     args.net], capture_output=True, text=True, check=True)
                line = out.stdout.strip().splitlines()[-1]
                print(line, flush=True)
                rows.append(json.loads(line))
    summary = {}
    for mode in ('off', 'on'):
        mine = [r for r in rows if r['lpips'] == mode]
        summary[mode] = {
            'median_step_s': round(statistics.median(
                v for r in mine for v in r['step_s']), 3),
            'peak_rss_mib': max(r['peak_rss_mib'] for r in mine),
            'step_peak_over_build_mib': max(r['step_peak_over_build_mib']
                                            for r in mine)}
    summary['on']['lpips_alone_s'] = statistics.median(
        r['lpips_alone_s'] for r in rows if r['lpips'] == 'on')
    summary['step_time_ratio_on_off'] = round(
        summary['on']['median_step_s'] / summary['off']['median_step_s'], 3)
    print(json.dumps({'summary': summary}), flush=True)


if __name__ == '__main__':
    a = parse_args()
    child(a) if a.child else main(a)
