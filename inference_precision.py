"""The numerics of a trained model's inference (inference.DiffAE): which
precision a device runs, as an autocast context.

``None`` keeps the official numerics (float32, or float16 autocast on CUDA
with ``conf.fp16``, which the diffusion applies itself); ``'auto'`` picks
what ``hardware.py`` picks for training on that device (bf16 autocast on a
CPU with native bf16, the official float16 on CUDA with conf.fp16, bf16 on
a GPU from compute capability 8.0, float32 elsewhere), except that on a
CPU a call of fewer than CPU_BF16_MIN_PIXELS pixels runs float32 (see
there); a Lightning precision string ('32-true', 'bf16-mixed', '16-mixed')
forces one.
"""
from contextlib import nullcontext
from typing import Optional, Tuple

import torch

import hardware

PRECISIONS = (None, 'auto', '32-true', 'bf16-mixed', '16-mixed')

# On a CPU, bf16 autocast pays only when a UNet call carries enough work:
# its casts cost more than they save on small tensors. Measured
# 2026-12-01 (2-core AMD EPYC, AVX512_BF16, torch 2.14.1, one UNet
# forward, channels_last; python bench/bf16_call_size.py): float32 / bf16
# time 0.88 at 1 image of 32x32 (1024 pixels), 1.01 at 2, 1.10 at 4
# (4096), 1.37 at 8; 1.47 for one 64x64 image of celeba64d2c, 1.71 for
# one 128x128 of ffhq128_autoenc_130M. So precision='auto' runs calls of
# fewer pixels (batch x height x width) than this in float32.
CPU_BF16_MIN_PIXELS = 4096


def check_precision(precision: Optional[str]) -> Optional[str]:
    if precision not in PRECISIONS:
        raise ValueError(f'unknown inference precision {precision!r}: use '
                         f'one of {list(PRECISIONS)}')
    return precision


def resolve(precision: Optional[str], conf_precision: Optional[str],
            fp16: bool, device_type: str) -> Tuple[str, str]:
    """(Lightning precision, reason) of inference on ``device_type``."""
    if precision is None:
        return '32-true', 'the official numerics (precision=None)'
    if precision != 'auto':
        return precision, f'precision={precision!r} was asked for'
    if device_type not in ('cpu', 'cuda'):
        return '32-true', f'no fast path known for {device_type!r}'
    return hardware.choose_precision(
        conf_precision, fp16, 'gpu' if device_type == 'cuda' else 'cpu')


def for_call(chosen: str, precision: Optional[str], device_type: str,
             pixels: Optional[int]) -> str:
    """The precision of one call of ``pixels`` (batch x height x width;
    None: not known, the model's) for a model whose ``precision`` setting
    resolved to ``chosen`` on ``device_type``: 'auto' on a CPU runs calls
    under CPU_BF16_MIN_PIXELS in float32."""
    if (precision == 'auto' and device_type == 'cpu' and
            chosen == 'bf16-mixed' and pixels is not None and
            pixels < CPU_BF16_MIN_PIXELS):
        return '32-true'
    return chosen


def autocast(precision: str, device_type: str):
    """The autocast context of a resolved ``precision``."""
    if precision == 'bf16-mixed':
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == '16-mixed':
        return torch.autocast(device_type, dtype=torch.float16)
    return nullcontext()
