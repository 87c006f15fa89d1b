"""Quality guard of the fast path (bf16 autocast + channels_last) against
float32, on the demo config:

    python bench/quality.py --steps 300 \
        --ckpt checkpoints/shapes32_autoenc/last.ckpt

1. trains the demo autoencoder for --steps steps twice from the same seed
   on the same batches (float32, then bf16) and prints both loss curves
   (means over windows) and their difference;
2. with --ckpt (a trained demo model), encodes 16 images stochastically
   and renders them back (T=20) in both precisions and prints the
   reconstruction MSEs (the fast path should stay within 2x of float32).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import shapes_data  # noqa: E402
from experiment import LitModel, ema_update  # noqa: E402
from templates import shapes32_autoenc  # noqa: E402


def autocast(mode):
    return torch.autocast('cpu', dtype=torch.bfloat16,
                          enabled=mode == 'bf16')


def loss_curve(mode, steps, images, seed=0):
    torch.manual_seed(seed)
    conf = shapes32_autoenc()
    lit = LitModel(conf)
    model = lit.model
    if mode == 'bf16':
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=conf.lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(images), (conf.batch_size, ), generator=g)
        x = images[idx]
        t = torch.randint(0, conf.T, (len(x), ), generator=g)
        noise = torch.randn(x.shape, generator=g)
        with autocast(mode):
            loss = lit.sampler.training_losses(model, x, t,
                                               noise=noise)['loss'].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), conf.grad_clip)
        opt.step()
        ema_update(model, lit.ema_model, conf.ema_decay)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def recon_error(ckpt, images, T=20):
    conf = shapes32_autoenc()
    lit = LitModel.from_checkpoint(conf, ckpt)
    x = images[:16]
    out = {}
    for mode in ('fp32', 'bf16'):
        with autocast(mode):
            cond = lit.encode(x)
            xT = lit.encode_stochastic(x, cond, T=T)
            rec = lit.render(xT, cond, T=T)
        out[mode] = ((rec.float() - (x + 1) / 2)**2).mean().item()
    out['ratio_bf16_to_fp32'] = out['bf16'] / out['fp32']
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--window', type=int, default=50)
    p.add_argument('--ckpt', default=None)
    p.add_argument('--data', default='datasets/shapes.lmdb')
    args = p.parse_args(argv)
    data = shapes_data.ShapesDataset(args.data, image_size=32)
    images = torch.stack([data[i]['img'] for i in range(len(data))])
    if args.steps:
        curves = {m: loss_curve(m, args.steps, images)
                  for m in ('fp32', 'bf16')}
        w = args.window
        rows = []
        for i in range(0, args.steps, w):
            a = sum(curves['fp32'][i:i + w]) / len(curves['fp32'][i:i + w])
            b = sum(curves['bf16'][i:i + w]) / len(curves['bf16'][i:i + w])
            rows.append({'steps': f'{i}-{i + w}', 'fp32': a, 'bf16': b,
                         'rel_diff': (b - a) / a})
        print(json.dumps({'loss_curve_window_means': rows}))
    if args.ckpt:
        print(json.dumps({'reconstruction_mse_T20': recon_error(
            args.ckpt, images)}))


if __name__ == '__main__':
    main()
