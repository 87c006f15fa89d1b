"""From which call size bf16 autocast pays on this CPU: one UNet forward
in float32 and in bf16 (channels_last, inference mode), side by side, for
a few batch sizes of three templates (seeded random weights: the FLOPs
are the real ones). inference_precision.CPU_BF16_MIN_PIXELS comes from it.

    python bench/bf16_call_size.py

Prints one line per (template, batch): pixels per call (batch x height x
width), best float32 and bf16 seconds of 3 (after one warm-up), and their
ratio (> 1: bf16 is faster).
"""
import os
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import hardware  # noqa: E402
import templates_latent  # noqa: E402
from experiment import LitModel  # noqa: E402

CASES = (('shapes32_autoenc', (1, 2, 4, 8)),
         ('celeba64d2c_autoenc', (1, 2, 8)),
         ('ffhq128_autoenc_130M', (1, 2)))


def forward_seconds(model, x, t, cond, bf16, repeats=3):
    ctx = (torch.autocast('cpu', dtype=torch.bfloat16) if bf16 else
           nullcontext())
    times = []
    for _ in range(repeats + 1):
        with ctx:
            t0 = time.perf_counter()
            model(x, t, cond=cond)
            times.append(time.perf_counter() - t0)
    return min(times[1:])


def main():
    print('CPU:', hardware.read_facts('cpu').describe(), 'threads:',
          torch.get_num_threads(), time.strftime('%Y-%m-%d %H:%M UTC',
                                                 time.gmtime()), flush=True)
    for name, batches in CASES:
        conf = getattr(templates_latent, name)()
        torch.manual_seed(0)
        model = LitModel(conf).ema_model.eval().to(
            memory_format=torch.channels_last)
        for n in batches:
            x = torch.randn(n, 3, conf.img_size, conf.img_size).contiguous(
                memory_format=torch.channels_last)
            t = torch.full((n, ), 500)
            with torch.inference_mode():
                cond = model.encoder(x)
                f32 = forward_seconds(model, x, t, cond, False)
                b16 = forward_seconds(model, x, t, cond, True)
            print(f'{name} batch {n}: {n * conf.img_size**2} pixels, '
                  f'float32 {f32:.4f} s, bf16 {b16:.4f} s, ratio '
                  f'{f32 / b16:.2f}', flush=True)


if __name__ == '__main__':
    main()
