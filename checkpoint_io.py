"""Reading and verifying checkpoints (official Lightning 1.4 files and our
own).

Official ``last.ckpt`` files pickle Lightning's ``ModelCheckpoint`` class
(as the key of ``callbacks``), which torch's default ``weights_only=True``
load refuses. Importing this module allow-lists exactly the few harmless
Lightning classes such files contain; anything else in a file is still
refused.
"""
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch


def _official_safe_globals():
    """The classes that official DiffAE checkpoints pickle. They are only
    referenced (as dict keys / plain dict subclasses), never called."""
    found = []
    try:
        from pytorch_lightning.callbacks.model_checkpoint import \
            ModelCheckpoint
        found.append(ModelCheckpoint)
    except ImportError:
        pass
    try:
        from pytorch_lightning.callbacks.lr_monitor import LearningRateMonitor
        found.append(LearningRateMonitor)
    except ImportError:
        pass
    try:
        from lightning_fabric.utilities.data import AttributeDict
        found.append(AttributeDict)
    except ImportError:
        pass
    return found


SAFE_GLOBALS = _official_safe_globals()
torch.serialization.add_safe_globals(SAFE_GLOBALS)


def load_checkpoint(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and a clear error for a
    missing file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f'checkpoint not found: {path}. Train with train(conf, gpus) or '
            f'download the official checkpoint into {path.parent}/')
    return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointMismatchError(RuntimeError):
    pass


def describe_mismatch(module: torch.nn.Module, state_dict: Mapping,
                      limit: int = 20) -> str:
    """Human-readable list of missing/unexpected keys and shape
    mismatches between ``module`` and ``state_dict``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(own[k].shape))
              for k in own if k in state_dict
              and hasattr(state_dict[k], 'shape')
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    lines = []

    def block(title, items: Iterable[str]):
        items = list(items)
        if items:
            lines.append(f'{title} ({len(items)}):')
            lines.extend(f'  {x}' for x in items[:limit])
            if len(items) > limit:
                lines.append(f'  ... and {len(items) - limit} more')

    block('missing keys', missing)
    block('unexpected keys', unexpected)
    block('shape mismatches (checkpoint vs model)',
          [f'{k}: {a} vs {b}' for k, a, b in shapes])
    return '\n'.join(lines)


def load_state_verified(module: torch.nn.Module, state_dict: Mapping,
                        source: str = 'checkpoint', allow_missing=(),
                        allow_unexpected=()):
    """Load ``state_dict`` into ``module``, raising
    CheckpointMismatchError that lists every mismatched key unless the
    only differences are keys starting with the allowed prefixes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict
               and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in state_dict if k not in own
                  and not k.startswith(tuple(allow_unexpected))]
    bad_shape = [k for k in own if k in state_dict
                 and tuple(getattr(state_dict[k], 'shape', ())) !=
                 tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise CheckpointMismatchError(
            f'{source} does not match this model (is it from another '
            f'template?)\n' + describe_mismatch(module, state_dict))
    return module.load_state_dict(state_dict, strict=False)


def atomic_save(obj, path):
    """torch.save to a temporary file then rename: a kill during the save
    never leaves a truncated ``path``."""
    path = str(path)
    tmp = f'{path}.tmp{os.getpid()}'
    torch.save(obj, tmp)
    os.replace(tmp, path)
