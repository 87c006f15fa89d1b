"""The numerics of a trained model's inference (inference.DiffAE): which
precision a device runs, as an autocast context.

``None`` keeps the official numerics (float32, or float16 autocast on CUDA
with ``conf.fp16``, which the diffusion applies itself); ``'auto'`` picks
what ``hardware.py`` picks for training on that device (bf16 autocast on a
CPU with native bf16, the official float16 on CUDA with conf.fp16, bf16 on
a GPU from compute capability 8.0, float32 elsewhere); a Lightning
precision string ('32-true', 'bf16-mixed', '16-mixed') forces one.
"""
from contextlib import nullcontext
from typing import Optional, Tuple

import torch

import hardware

PRECISIONS = (None, 'auto', '32-true', 'bf16-mixed', '16-mixed')


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


def autocast(precision: str, device_type: str):
    """The autocast context of a resolved ``precision``."""
    if precision == 'bf16-mixed':
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == '16-mixed':
        return torch.autocast(device_type, dtype=torch.float16)
    return nullcontext()
