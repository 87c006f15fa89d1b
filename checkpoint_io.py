"""Reading and verifying checkpoints (official Lightning 1.4 files and our
own), and reading/writing the shareable ``.safetensors`` weights files.

Official ``last.ckpt`` files pickle Lightning's ``ModelCheckpoint`` class
(as the key of ``callbacks``), which torch's default ``weights_only=True``
load refuses. Importing this module allow-lists exactly the few harmless
Lightning classes such files contain; anything else in a file is still
refused.
"""
import hashlib
import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Optional

import safetensors
import safetensors.torch
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


class CheckpointLoadError(RuntimeError):
    """A checkpoint (or latent.pkl) file that cannot be read: the message
    names the file, why, and what to do."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (read-only folder, full disk)."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A file that pickles a global outside the allow-list (loading it
    would run code from the file). Nothing from it was executed."""


def _refused_global(exc) -> Optional[str]:
    m = re.search(r'GLOBAL ([\w.]+)', str(exc))
    return m.group(1) if m else None


def _unsafe_message(path, name):
    return (f'{path} was refused: it pickles the global {name!r}, which is '
            f'not on the allow-list of checkpoint_io.py. Official DiffAE '
            f'checkpoints and latent.pkl files never need it, and loading it '
            f'would run code from the file. Nothing from the file was run. '
            f'Use a checkpoint from a source you trust (the official release '
            f'or your own training run).')


def _damage(path: Path, exc) -> str:
    """Why ``path`` could not be read, in words."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(4)
    if size == 0:
        return 'the file is empty (0 bytes)'
    if head == b'PK\x03\x04' and not zipfile.is_zipfile(path):
        return (f'truncated ({size} bytes; the zip archive has no central '
                f'directory: the write or copy was cut short, e.g. a full '
                f'disk)')
    if head[:2] != b'PK' and head[:1] != b'\x80':
        return f'not a checkpoint (starts with {head!r}; {type(exc).__name__})'
    return f'damaged or not a checkpoint ({type(exc).__name__}: {exc})'


def load_checkpoint(path, map_location='cpu', what='checkpoint',
                    mmap=False):
    """``torch.load`` with ``weights_only=True``. A missing file, a damaged
    one (truncated, not a checkpoint) and one pickling a global outside the
    allow-list each raise an error naming the file and the way out."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f'{what} not found: {path}. Train with train(conf, gpus) or '
            f'download the official checkpoint into {path.parent}/')
    if path.suffix == '.safetensors':
        raise CheckpointLoadError(
            f'{path} is a .safetensors weights file (EMA weights only, no '
            f'training state), not a {what}: load it with '
            'DiffAE.from_checkpoint(path) or ClsModel.from_checkpoint(path)')
    try:
        # mmap: a lazy read, cheap for checking a large file
        mmap = mmap and zipfile.is_zipfile(path)
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap)
    except pickle.UnpicklingError as e:
        name = _refused_global(e)
        if name is not None:
            raise UnsafeCheckpointError(_unsafe_message(path, name)) from None
        raise CheckpointLoadError(
            f'cannot read {what} {path}: {_damage(path, e)}') from e
    except Exception as e:  # torch raises many kinds on a damaged file
        raise CheckpointLoadError(
            f'cannot read {what} {path}: {_damage(path, e)}') from e


def check_checkpoint(path) -> Optional[str]:
    """None when ``path`` loads as a Lightning checkpoint with a
    state_dict, else why not (an unsafe file raises)."""
    try:
        state = load_checkpoint(path, mmap=True)
    except CheckpointLoadError as e:
        return str(e).split(': ', 1)[-1]
    if not isinstance(state, dict) or 'state_dict' not in state:
        keys = list(state)[:8] if isinstance(state, dict) else \
            type(state).__name__
        return f'wrong format: no state_dict (found {keys})'
    return None


def _step_of(path: Path):
    m = re.search(r'step=(\d+)', path.name)
    return (int(m.group(1)) if m else -1, path.stat().st_mtime)


def _aside(path: Path) -> Path:
    """``<path>.damaged`` (numbered when taken): never overwritten."""
    dest = path.with_name(path.name + '.damaged')
    n = 1
    while dest.exists():
        dest = path.with_name(f'{path.name}.damaged.{n}')
        n += 1
    os.replace(path, dest)
    return dest


def find_resume_checkpoint(logdir) -> Optional[str]:
    """The checkpoint a rerun in ``logdir`` continues from: ``last.ckpt``
    when it is intact; else the newest intact ``*.ckpt`` of the folder,
    with a loud warning naming both files (a damaged ``last.ckpt`` is kept
    as ``last.ckpt.damaged``, never deleted); None for a folder without
    checkpoints. Stops with the choices when nothing there is intact."""
    logdir = Path(logdir)
    last = logdir / 'last.ckpt'
    others = sorted((p for p in logdir.glob('*.ckpt') if p.name !=
                     'last.ckpt'), key=_step_of, reverse=True)
    why = check_checkpoint(last) if last.exists() else None
    if last.exists() and why is None:
        return str(last)
    bad = {}
    for p in others:
        reason = check_checkpoint(p)
        if reason is None:
            if last.exists():
                kept = _aside(last)
                msg = (f'{last} cannot be resumed: {why}. RESUMING FROM THE '
                       f'NEWEST INTACT CHECKPOINT {p} instead; the damaged '
                       f'file is kept as {kept}.')
            else:
                msg = (f'{logdir} has no last.ckpt but holds checkpoints: '
                       f'RESUMING FROM THE NEWEST INTACT ONE, {p} (not '
                       f'starting over on top of them).')
            warnings.warn(msg)
            print('WARNING:', msg, flush=True)
            return str(p)
        bad[p] = reason
    if not last.exists() and not bad:
        return None
    lines = ([f'  {last}: {why}'] if last.exists() else []) + [
        f'  {p}: {r}' for p, r in bad.items()]
    raise CheckpointLoadError(
        f'cannot resume the run in {logdir}: no intact checkpoint there.\n'
        + '\n'.join(lines) + '\nChoices: (1) put an intact last.ckpt back '
        f'(e.g. from a backup); (2) start over: move {logdir} aside (or set '
        'another conf.name) and rerun; (3) continue from another run: move '
        f'{logdir} aside and set conf.continue_from to its checkpoint. '
        'Nothing was deleted.')


class CheckpointMismatchError(RuntimeError):
    pass


def key_mismatch(module: torch.nn.Module, state_dict: Mapping):
    """(missing keys, unexpected keys, shape mismatches as (key, in the
    checkpoint, in the model)) between ``module`` and ``state_dict``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(getattr(state_dict[k], 'shape', ())),
               tuple(own[k].shape)) for k in own if k in state_dict
              and tuple(getattr(state_dict[k], 'shape', ())) !=
              tuple(own[k].shape)]
    return missing, unexpected, shapes


def describe_mismatch(module: torch.nn.Module, state_dict: Mapping,
                      limit: int = 20) -> str:
    """Human-readable list of missing/unexpected keys and shape
    mismatches between ``module`` and ``state_dict``."""
    missing, unexpected, shapes = key_mismatch(module, state_dict)
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
    missing, unexpected, bad_shape = key_mismatch(module, state_dict)
    missing = [k for k in missing if not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in unexpected
                  if not k.startswith(tuple(allow_unexpected))]
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


def run_checkpoint_callback(**kwargs):
    """Lightning's ModelCheckpoint, except that it never deletes a
    checkpoint file this process did not write (a resumed or restarted run
    keeps the files of the runs before it)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    class RunCheckpoint(ModelCheckpoint):
        def __init__(self, **kw):
            super().__init__(**kw)
            self._written = set()

        def _save_checkpoint(self, trainer, filepath):
            try:
                super()._save_checkpoint(trainer, filepath)
            except OSError as e:
                last = os.path.join(os.path.dirname(filepath), 'last.ckpt')
                kept = (f'{last} (as it was before this save) is kept'
                        if os.path.exists(last) else 'no earlier checkpoint '
                        'exists')
                raise CheckpointSaveError(
                    f'cannot write checkpoint {filepath} at step '
                    f'{trainer.global_step}: {e}. Training stopped; {kept}. '
                    f'Make {os.path.dirname(filepath)} writable (or free '
                    'disk space) and rerun the same command to resume.'
                ) from e
            self._written.add(os.path.abspath(filepath))

        def _remove_checkpoint(self, trainer, filepath):
            if os.path.abspath(filepath) in self._written:
                super()._remove_checkpoint(trainer, filepath)

    return RunCheckpoint(**kwargs)


# -- safetensors: tensors and text metadata only, nothing to execute -----
SAFETENSORS_SUFFIX = '.safetensors'


def is_safetensors(path) -> bool:
    """Whether ``path`` is (meant to be) a safetensors file: by its name,
    or for another name by its start (8 bytes of header length, then the
    JSON header's ``{``)."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b'{':
        return False
    return 0 < struct.unpack('<Q', head[:8])[0] < path.stat().st_size


def file_sha256(path, chunk=1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def save_safetensors(tensors: Mapping[str, torch.Tensor], path,
                     metadata: Mapping[str, str]):
    """Write ``tensors`` with text ``metadata`` as a safetensors file,
    through a temporary file and a rename (never a truncated ``path``).
    Tensors that share memory (tied weights, e.g. the latent net's
    ``linear_emb`` / ``cond_layers.1``) are each written under their key."""
    path = str(path)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        safetensors.torch.save_file(
            {k: v.detach().clone().contiguous() for k, v in tensors.items()},
            tmp, metadata=dict(metadata))
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointSaveError(f'cannot write {path}: {e}') from e


def load_safetensors(path, what='weights file', device='cpu'):
    """(tensors, metadata) of a safetensors file. The format holds only
    tensors and text, so reading it runs nothing from the file; a missing
    or damaged file (or another format under this name) raises an error
    naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f'{what} not found: {path}. Export one with `python cli.py '
            f'export --template NAME {path.name}`.')
    try:
        with safetensors.safe_open(str(path), framework='pt',
                                   device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (safetensors.SafetensorError, ValueError, OSError) as e:
        with open(path, 'rb') as f:
            head = f.read(8)
        raise CheckpointLoadError(
            f'cannot read {what} {path}: not a complete safetensors file '
            f'({e}; it starts with {head!r}, {path.stat().st_size} bytes). '
            'Nothing from it was run. Export it again, or copy it again '
            'in full.') from None
    return tensors, metadata


def safetensors_size(shapes: Mapping[str, Iterable[int]],
                     metadata: Mapping[str, str], itemsize=4,
                     dtype='F32') -> int:
    """Bytes of the safetensors file that would hold tensors of
    ``shapes`` (one dtype) and ``metadata``, without writing it: the
    8-byte header length, the JSON header (tensors in name order, padded
    with spaces to a multiple of 8) and the data."""
    header = {'__metadata__': dict(metadata)}
    offset = 0
    for name in sorted(shapes):
        shape = [int(d) for d in shapes[name]]
        n = itemsize
        for d in shape:
            n *= d
        header[name] = {'dtype': dtype, 'shape': shape,
                        'data_offsets': [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(',', ':'),
                      ensure_ascii=False).encode()
    return 8 + (len(text) + 7) // 8 * 8 + offset
