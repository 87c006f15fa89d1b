"""Low-level helpers shared by the datasets and the LMDB writer.

- :func:`use_cached_dataset_path`: the official helper that copies a dataset
  to a local cache folder once (rank 0) and returns the cached path.
- :func:`to_rgb` / :func:`decode_image` / :func:`open_image`: turn any image
  Pillow reads (RGBA, greyscale, palette, 16-bit, CMYK ...) into an 8-bit RGB
  image, and report undecodable bytes with the key or file they came from.
- :func:`list_images`: the image files of a folder (the readers' and the
  writer's view of a folder of images).
- :class:`ReadonlyLMDB`: a read-only LMDB handle opened as the official code
  does (``readonly=True, lock=False, readahead=False, meminit=False``),
  shared by all readers of the same LMDB in a process and safe to pickle
  into DataLoader workers.
"""
import os
import shutil
import tempfile
import warnings
import weakref
from io import BytesIO
from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image

from dist_utils import barrier, get_rank


class CorruptImageError(OSError):
    """Image bytes (an LMDB record or a file) that Pillow cannot decode.

    The message names the LMDB key and path, or the file path."""


class LMDBFormatError(ValueError):
    """An LMDB whose keys are not in the format a reader expects."""


# ---------------------------------------------------------------------------
# caching (official helper)
# ---------------------------------------------------------------------------
def use_cached_dataset_path(source_path, cache_path):
    """Copy ``source_path`` to ``cache_path`` once and return ``cache_path``.

    As in the official code, only rank 0 copies and every rank waits at a
    barrier. The copy goes to a temporary folder first and is renamed into
    place at the end, so an interrupted copy never looks like a finished
    cache."""
    if get_rank() == 0 and not os.path.exists(cache_path):
        if not os.path.exists(source_path):
            raise FileNotFoundError(
                f"cannot cache dataset: source '{source_path}' does not "
                "exist")
        parent = os.path.dirname(os.path.abspath(cache_path))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(
            dir=parent, prefix=os.path.basename(cache_path) + '.tmp-')
        print(f'copying the data: {source_path} to {cache_path}')
        try:
            target = os.path.join(tmp, 'data')
            if os.path.isdir(source_path):
                shutil.copytree(source_path, target)
            else:
                shutil.copy2(source_path, target)
            os.rename(target, cache_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    return cache_path


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
# background that transparent pixels are composited onto
def list_images(folder, exts: Sequence[str], has_subdir: bool = True
                ) -> List[Path]:
    """Files in ``folder`` ending in one of ``exts`` (relative paths, in
    glob order per extension, without duplicates)."""
    folder = Path(folder)
    pattern = '**/*.{}' if has_subdir else '*.{}'
    seen, out = set(), []
    for ext in exts:
        for p in folder.glob(pattern.format(ext.lstrip('.'))):
            rel = p.relative_to(folder)
            if rel not in seen and p.is_file():
                seen.add(rel)
                out.append(rel)
    return out


ALPHA_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB version of ``img``.

    - RGB: returned as is.
    - RGBA / LA / PA / palette or greyscale with a transparency key: alpha
      is composited onto white (``ALPHA_BACKGROUND``), so transparent
      regions do not show whatever colour happens to be stored under them.
      (For opaque images this equals the official ``img.convert('RGB')``.)
    - 16-bit greyscale (``I;16*``) and 32-bit integer (``I``) images are
      taken to hold 16-bit values and scaled by 255/65535 (Pillow's own
      ``convert`` would clip them, turning most pixels white); ``F`` images
      are taken to be in [0, 1] when their maximum is <= 1, else [0, 255].
    - everything else (L, 1, P, CMYK, YCbCr, ...) via ``convert('RGB')``.
    """
    mode = img.mode
    if mode == 'RGB':
        return img
    if mode.startswith('I') or mode == 'F':
        arr = np.asarray(img)
        if mode == 'F':
            arr = arr.astype(np.float64)
            scale = 255.0 if np.nanmax(arr, initial=0) <= 1.0 else 1.0
            arr = arr * scale
        else:
            arr = arr.astype(np.float64) * (255.0 / 65535.0)
        arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, 'L').convert('RGB')
    has_alpha = (mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La')
                 or 'transparency' in img.info)
    if has_alpha:
        rgba = img.convert('RGBA')
        background = Image.new('RGBA', rgba.size, ALPHA_BACKGROUND + (255, ))
        return Image.alpha_composite(background, rgba).convert('RGB')
    return img.convert('RGB')


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes into an RGB image (see :func:`to_rgb`).

    Raises :class:`CorruptImageError` naming ``where`` (e.g. "key
    '256-00003' of datasets/ffhq256.lmdb") when the bytes cannot be
    decoded."""
    try:
        img = Image.open(BytesIO(data))
        img.load()
    except Exception as e:
        raise CorruptImageError(
            f'cannot decode the image at {where}: {type(e).__name__}: {e}'
        ) from e
    return to_rgb(img)


def open_image(path) -> Image.Image:
    """Read an image file as RGB (see :func:`to_rgb`); raises
    :class:`CorruptImageError` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as f:
            f.load()
            img = to_rgb(f)
            if img is f:
                # the file closes with the block; keep the pixels
                img = f.copy()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CorruptImageError(
            f"cannot decode the image file '{path}': "
            f'{type(e).__name__}: {e}') from e
    return img


# ---------------------------------------------------------------------------
# LMDB
# ---------------------------------------------------------------------------
def _key_str(key: bytes) -> str:
    return key.decode('utf-8', errors='replace')


# read-only environments of this process, by the identity of their data
# file: py-lmdb refuses to open the same files twice in one process, so
# every reader of an LMDB shares one environment (a forked child keeps
# using its parent's, which is fine without locks). Entries go away with
# their last reader.
_SHARED_ENVS = weakref.WeakValueDictionary()


def _data_file(path: str, subdir: bool) -> str:
    return os.path.join(path, 'data.mdb') if subdir else path


def open_readonly_env(path: str):
    """The process's shared read-only environment of the LMDB at ``path``
    (``readonly=True, lock=False, readahead=False, meminit=False``)."""
    import lmdb
    subdir = os.path.isdir(path)
    data = _data_file(path, subdir)
    if not os.path.exists(data):
        raise LMDBFormatError(
            f"'{path}' is not an LMDB (no {os.path.basename(data)})")
    st = os.stat(data)
    key = (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(data)
    env = _SHARED_ENVS.get(key)
    if env is None:
        try:
            env = lmdb.open(path, subdir=subdir, max_readers=32,
                            readonly=True, lock=False, readahead=False,
                            meminit=False)
        except lmdb.Error as e:
            raise LMDBFormatError(
                f"cannot open '{path}' as an LMDB: {e}") from e
        _SHARED_ENVS[key] = env
    return env


class ReadonlyLMDB:
    """A read-only LMDB handle, opened lazily.

    All handles of the same LMDB in a process share one environment
    (:func:`open_readonly_env`); pickling drops it, so the object can go
    to DataLoader workers with any start method.

    Args:
        path: the LMDB folder (or file).
        missing_hint: appended to the FileNotFoundError when ``path`` does
            not exist (e.g. which ``data_resize_*.py`` makes it).
    """

    def __init__(self, path, missing_hint: str = ''):
        self.path = os.fspath(path)
        self.missing_hint = missing_hint
        if not os.path.exists(self.path):
            msg = f"LMDB dataset not found: '{self.path}'"
            if missing_hint:
                msg += f'. {missing_hint}'
            raise FileNotFoundError(msg)
        self._env = open_readonly_env(self.path)

    @property
    def env(self):
        if self._env is None:
            self._env = open_readonly_env(self.path)
        return self._env

    def get(self, key: str):
        """The bytes stored under ``key`` (a str), or None."""
        with self.env.begin(write=False) as txn:
            return txn.get(key.encode('utf-8'))

    def first_keys(self, n: int = 5):
        """The first ``n`` keys (in LMDB order) as strings."""
        out = []
        with self.env.begin(write=False) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                out.append(_key_str(key))
                if len(out) >= n:
                    break
        return out

    def num_entries(self) -> int:
        return self.env.stat()['entries']

    def read_length(self, key_pattern: str) -> int:
        """The integer under the 'length' key; a clear
        :class:`LMDBFormatError` (naming the path, the expected key
        pattern and the keys found) when it is missing or not a number."""
        raw = self.get('length')
        if raw is None:
            raise LMDBFormatError(
                f"LMDB '{self.path}' has no 'length' key; expected keys "
                f"'length' and {key_pattern}; found "
                f'{self.describe_keys()}')
        try:
            return int(raw.decode('utf-8'))
        except ValueError:
            raise LMDBFormatError(
                f"LMDB '{self.path}': 'length' holds {raw[:20]!r}, not an "
                'integer') from None

    def check_length(self, length: int, key) -> None:
        """The records ``key(0) .. key(length - 1)`` that 'length'
        promises are there (LMDBFormatError naming the first missing one),
        and a warning when records lie beyond ``length`` (they would be
        left out of training)."""
        if length > 0 and self.get(key(length - 1)) is None:
            raise LMDBFormatError(
                f"LMDB '{self.path}' says length={length} but has no record "
                f"'{key(length - 1)}' (it holds {self.num_entries()} entries "
                "including 'length'): the LMDB is incomplete or its 'length' "
                'is wrong; rewrite it with its converter')
        if self.get(key(length)) is not None:
            warnings.warn(
                f"LMDB '{self.path}' says length={length} but also holds "
                f"record '{key(length)}' ({self.num_entries()} entries in "
                f'all): only the first {length} records are used. Fix its '
                "'length' key if that is wrong.")

    def describe_keys(self, n: int = 5) -> str:
        keys = self.first_keys(n + 1)
        if not keys:
            return 'no keys (the LMDB is empty)'
        more = ', ...' if len(keys) > n else ''
        shown = ', '.join(repr(k) for k in keys[:n])
        return f'{self.num_entries()} keys: {shown}{more}'

    def close(self):
        """Drop this handle (the environment closes with its last one)."""
        self._env = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_env'] = None
        return state
