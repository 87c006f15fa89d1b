"""Writing images into LMDBs in the official DiffAE formats.

Official API (same names and behaviour):

- :func:`convert` turns a [0, 1] CHW tensor into encoded image bytes;
- :class:`LMDBImageWriter` is a context manager; ``put_images(tensor)``
  appends a batch under keys ``str(i).zfill(zfill)``, and leaving the block
  writes the ``length`` key;
- :class:`LMDBImageReader` reads such an LMDB back (PIL images).

Differences that lose nothing: the writer encodes and writes in the calling
process (the official one forked a process per writer), one transaction per
batch; it writes into a temporary folder next to the target and renames it
into place only when the block ends without an error, so a killed run never
leaves a half-written LMDB at the target (an older LMDB there is replaced
then, as the official writer replaced it at the start). ``__enter__``
returns the writer.

Added: :func:`folder_to_lmdb`, the generic "folder of images (or LSUN
LMDB) -> resized LMDB" converter that every ``data_resize_*.py`` script
uses.
"""
import os
import shutil
import tempfile
from io import BytesIO
from multiprocessing import Pool
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

import image_check
from dataset_util import (CorruptImageError, LMDBFormatError, ReadonlyLMDB,
                          decode_image, list_images, open_image)

# Pillow's names for the formats (``jpg`` is not one of them)
_FORMAT_ALIASES = {'jpg': 'jpeg', 'tif': 'tiff'}
# the LMDB map grows by doubling from here when it fills up
_INITIAL_MAP_SIZE = 64 * 1024**2


def _pil_format(format: str) -> str:
    f = format.lower()
    return _FORMAT_ALIASES.get(f, f)


def encode_image(img: Image.Image, format: str, quality: int = 100) -> bytes:
    """Encode a PIL image (``quality`` is ignored by lossless formats)."""
    buffer = BytesIO()
    img.save(buffer, format=_pil_format(format), quality=quality)
    return buffer.getvalue()


def convert(x: torch.Tensor, format: str, quality: int = 100) -> bytes:
    """Encode one image tensor.

    Args:
        x: (C, H, W) in [0, 1] (C = 3, or 1 for greyscale, 4 for RGBA);
            values are rounded to 8 bits and clamped like the official
            ``x * 255 + 0.5`` then truncation.
        format: 'webp', 'jpeg' (or 'jpg'), 'png', ...
        quality: the encoder quality for lossy formats.
    """
    if x.dim() != 3:
        raise ValueError(f'convert() wants a (C, H, W) tensor, got shape '
                         f'{tuple(x.shape)}')
    x = x.detach().cpu().float()
    x = x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    arr = x.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return encode_image(Image.fromarray(arr), format, quality)


def _replace_dir(tmp: str, target: str):
    """Move the finished folder ``tmp`` to ``target``, replacing what is
    there only once ``tmp`` is complete."""
    old = None
    if os.path.lexists(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(tmp),
                               prefix=os.path.basename(target) + '.old-')
        os.rmdir(old)
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


class LMDBImageWriter:
    """Write batches of images into a new LMDB at ``path``.

    Keys are ``str(i).zfill(zfill)`` (official), or
    ``f'{key_prefix}-{str(i).zfill(zfill)}'`` when ``key_prefix`` is given
    (the dataset formats, e.g. ``'256'`` for ``256-00000``); leaving the
    block writes ``length``. Use as::

        with LMDBImageWriter('out.lmdb', format='png', zfill=5) as w:
            w.put_images(batch)          # (N, C, H, W) in [0, 1]

    Nothing appears at ``path`` until the block ends without an error.
    """

    def __init__(self, path, format: str = 'webp', quality: int = 100,
                 zfill: int = 7, key_prefix: Optional[str] = None) -> None:
        self.path = os.fspath(path)
        self.format = format
        self.quality = quality
        self.zfill = zfill
        self.key_prefix = key_prefix
        self.i = 0
        self._env = None
        self._tmp = None

    def key(self, i: int) -> str:
        idx = str(i).zfill(self.zfill)
        return idx if self.key_prefix is None else f'{self.key_prefix}-{idx}'

    def __enter__(self):
        import lmdb
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._tmp = tempfile.mkdtemp(
            dir=parent, prefix=os.path.basename(self.path) + '.tmp-')
        self._env = lmdb.open(self._tmp, map_size=_INITIAL_MAP_SIZE,
                              readahead=False)
        self.i = 0
        return self

    def _write(self, items: Sequence):
        """Put (key, bytes) pairs in one transaction, growing the map when
        it is full."""
        import lmdb
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key.encode('utf-8'), value)
                return
            except lmdb.MapFullError:
                size = self._env.info()['map_size']
                self._env.set_mapsize(size * 2)

    def _check_open(self):
        if self._env is None:
            raise RuntimeError('use LMDBImageWriter inside a `with` block')

    def put_images(self, tensor: torch.Tensor):
        """Append a batch: (N, C, H, W) tensor in [0, 1]."""
        self._check_open()
        tensor = tensor.detach().cpu()
        self.put_bytes([convert(x, self.format, self.quality)
                        for x in tensor])

    def put_bytes(self, blobs: Iterable[bytes]):
        """Append already-encoded images, one transaction."""
        self._check_open()
        items = []
        for b in blobs:
            items.append((self.key(self.i + len(items)), b))
        self._write(items)
        self.i += len(items)

    def put_meta(self, key: str, value: bytes):
        """Store an extra record (e.g. JSON attributes) under ``key``."""
        self._check_open()
        self._write([(key, value)])

    def __exit__(self, exc_type, exc, tb):
        env, self._env = self._env, None
        if env is None:
            return False
        try:
            if exc_type is None:
                with env.begin(write=True) as txn:
                    txn.put(b'length', str(self.i).encode('utf-8'))
                env.sync(True)
            env.close()
            if exc_type is None:
                _replace_dir(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                shutil.rmtree(self._tmp, ignore_errors=True)
        return False


class LMDBImageReader(Dataset):
    """Read back what :class:`LMDBImageWriter` wrote: ``reader[i]`` is an
    RGB PIL image (key ``str(i).zfill(zfill)``, with ``key_prefix-`` in
    front when given)."""

    def __init__(self, path, zfill: int = 7,
                 key_prefix: Optional[str] = None):
        self.zfill = zfill
        self.key_prefix = key_prefix
        self.db = ReadonlyLMDB(path)
        self.length = self.db.read_length(repr(self.key(0)))

    @property
    def path(self):
        return self.db.path

    def key(self, i: int) -> str:
        idx = str(i).zfill(self.zfill)
        return idx if self.key_prefix is None else f'{self.key_prefix}-{idx}'

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(f'index {index} out of range for '
                             f"'{self.path}' (length {self.length})")
        key = self.key(index)
        data = self.db.get(key)
        if data is None:
            raise KeyError(f"key '{key}' missing in '{self.path}'")
        return decode_image(data, f"key '{key}' of '{self.path}'")


# ---------------------------------------------------------------------------
# folder -> LMDB
# ---------------------------------------------------------------------------
def resize_and_crop(img: Image.Image, size: Optional[int],
                    crop: bool = True,
                    resample: str = 'lanczos') -> Image.Image:
    """Resize the shorter side to ``size`` and center-crop a square (the
    official converters' torchvision ``resize`` + ``center_crop``);
    ``size=None`` keeps the image as is (the official CelebA converter)."""
    if size is None:
        return img
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F
    mode = {'lanczos': InterpolationMode.LANCZOS,
            'bilinear': InterpolationMode.BILINEAR,
            'bicubic': InterpolationMode.BICUBIC}[resample]
    img = F.resize(img, size, mode)
    if crop:
        img = F.center_crop(img, size)
    return img


def _convert_one(job):
    """Worker: (label, path-or-bytes, size, crop, resample, format,
    quality) -> encoded bytes."""
    label, source, size, crop, resample, format, quality = job
    if isinstance(source, bytes):
        img = decode_image(source, label)
    else:
        img = open_image(source)
    img = resize_and_crop(img, size, crop, resample)
    return encode_image(img, format, quality)


def _index_from_name(rel: Path) -> int:
    try:
        return int(rel.stem)
    except ValueError:
        raise ValueError(
            f"order='index' takes each key from the file name, but '{rel}' "
            "is not a number; use order='sorted' (--order sorted)") from None


def _lsun_items(path: str):
    """(label, bytes) of every record of an LSUN-style LMDB, in key order
    (the order torchvision's LSUNClass reads)."""
    db = ReadonlyLMDB(path)
    with db.env.begin(write=False) as txn:
        for key, value in txn.cursor():
            yield f"key {key!r} of '{path}'", bytes(value)


def is_lmdb(path) -> bool:
    return os.path.isfile(os.path.join(path, 'data.mdb'))


def folder_to_lmdb(in_folder, out_path, size: Optional[int] = 256,
                   key_prefix: Optional[str] = None, zfill: int = 7,
                   format: str = 'webp', quality: int = 100,
                   exts: Sequence[str] = ('jpg', 'jpeg', 'png'),
                   order: str = 'sorted', has_subdir: bool = True,
                   crop: bool = True, resample: str = 'lanczos',
                   workers: int = 0, batch_size: int = 256,
                   overwrite: bool = False, progress: bool = True,
                   limit: Optional[int] = None,
                   bad_images: str = 'error') -> int:
    """Convert a folder of images (or an LSUN LMDB) into a dataset LMDB.

    Each image is converted to RGB, resized (shorter side to ``size``,
    ``resample`` filter) and center-cropped to ``size`` x ``size`` (no
    resize with ``size=None``), encoded as ``format`` and stored under
    ``f'{key_prefix}-{str(i).zfill(zfill)}'`` (``key_prefix`` defaults to
    ``str(size)``, which gives ``'None'`` for ``size=None`` as the official
    CelebA LMDB has), plus ``length``.

    Args:
        in_folder: folder of images, or an LMDB folder (``data.mdb``) of
            encoded images such as LSUN's ``*_train_lmdb``.
        order: 'sorted' (by relative path; LMDB input: key order) or
            'index' (key = the integer file name, e.g. FFHQ ``00042.png``
            -> 42; the numbers must be exactly 0 .. N-1).
        workers: processes that decode/resize/encode (0 or 1: in process).
        batch_size: images per write transaction.
        overwrite: replace an existing ``out_path`` (else FileExistsError).
        limit: convert only the first ``limit`` images.
        bad_images: 'error' (stop before writing, listing every file that
            cannot be decoded) or 'skip' (leave them out, with a warning).

    The LMDB is written to a temporary folder next to ``out_path`` and
    renamed into place at the end. Returns the number of images. A file
    that cannot be decoded stops the conversion with a
    :class:`~dataset_util.CorruptImageError` naming it (nothing is written
    at ``out_path``).
    """
    from tqdm import tqdm
    in_folder = os.fspath(in_folder)
    out_path = os.fspath(out_path)
    if key_prefix is None:
        key_prefix = str(size)
    if not os.path.exists(in_folder):
        raise FileNotFoundError(f"input folder '{in_folder}' does not exist")
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(
            f"'{out_path}' already exists; delete it or pass overwrite=True "
            '(--overwrite)')
    if order not in ('sorted', 'index'):
        raise ValueError(f"order must be 'sorted' or 'index', got {order!r}")

    if is_lmdb(in_folder):
        if order == 'index':
            raise ValueError("order='index' needs a folder of image files")
        db = ReadonlyLMDB(in_folder)
        total = db.num_entries()
        sources = _lsun_items(in_folder)
    else:
        rels = list_images(in_folder, exts, has_subdir)
        if not rels:
            where = 'or its subfolders ' if has_subdir else ''
            raise FileNotFoundError(
                f"no images in '{in_folder}' {where}with extensions "
                f'{list(exts)}')
        # every file checked first: all bad ones reported at once
        rels = image_check.filter_paths(in_folder, rels, bad_images,
                                        setting='bad_images (--bad-images)',
                                        nothing='Nothing was written.')
        if order == 'index':
            idx = [_index_from_name(r) for r in rels]
            if sorted(idx) != list(range(len(idx))):
                raise ValueError(
                    f"order='index': the file numbers in '{in_folder}' must "
                    f'be exactly 0..{len(idx) - 1} (found {len(idx)} files, '
                    f'numbers {min(idx)}..{max(idx)}, '
                    f'{len(set(idx))} distinct); readers use keys '
                    "0..length-1. Use order='sorted' (--order sorted)")
            rels = [r for _, r in sorted(zip(idx, rels))]
        else:
            rels = sorted(rels)
        total = len(rels)
        sources = ((str(r), os.path.join(in_folder, r)) for r in rels)
    if limit is not None:
        total = min(total, limit)

    def jobs():
        for n, (label, src) in enumerate(sources):
            if n >= total:
                return
            yield (label, src, size, crop, resample, format, quality)

    pool = Pool(workers) if workers > 1 else None
    try:
        results = (pool.imap(_convert_one, jobs(), chunksize=8)
                   if pool is not None else map(_convert_one, jobs()))
        with LMDBImageWriter(out_path, format=format, quality=quality,
                             zfill=zfill, key_prefix=key_prefix) as writer:
            batch = []
            with tqdm(total=total, desc=f'-> {out_path}',
                      disable=not progress) as bar:
                for blob in results:
                    batch.append(blob)
                    if len(batch) >= batch_size:
                        writer.put_bytes(batch)
                        bar.update(len(batch))
                        batch = []
                if batch:
                    writer.put_bytes(batch)
                    bar.update(len(batch))
            count = writer.i
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return count


def resize_main(argv=None, *, description: str, default_in: str,
                default_out: str, default_size: Optional[int] = 256,
                zfill: int = 7, format: str = 'webp', quality: int = 100,
                order: str = 'sorted', exts=('jpg', 'jpeg', 'png'),
                has_subdir: bool = True, reader: str = '') -> int:
    """The command line of the ``data_resize_*.py`` scripts: ``--in``,
    ``--out``, ``--size``, ``--workers`` (+ ``--exts``, ``--overwrite``,
    ``--limit``); the other settings are the dataset's official format.
    Returns the number of images written."""
    import argparse
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--in', dest='in_path', default=default_in,
                        help='input folder of images (or an LSUN-style '
                        f'LMDB folder); default {default_in}')
    parser.add_argument('--out', default=default_out,
                        help=f'output LMDB; default {default_out}')
    parser.add_argument(
        '--size', type=lambda s: None if s.lower() == 'none' else int(s),
        default=default_size,
        help=f'output resolution; default {default_size} ("none" keeps '
        'the original size); it is also the key prefix')
    parser.add_argument('--workers', type=int,
                        default=min(8, os.cpu_count() or 1),
                        help='processes that resize and encode')
    parser.add_argument('--exts', default=','.join(exts),
                        help=f'file extensions; default {",".join(exts)}')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output LMDB')
    parser.add_argument('--limit', type=int, default=None,
                        help='convert only the first N images')
    args = parser.parse_args(argv)
    count = folder_to_lmdb(
        args.in_path, args.out, size=args.size, zfill=zfill, format=format,
        quality=quality, exts=[e for e in args.exts.split(',') if e],
        order=order, has_subdir=has_subdir, workers=args.workers,
        overwrite=args.overwrite, limit=args.limit)
    print(f"wrote {count} images to '{args.out}' (keys "
          f"'{args.size}-{str(0).zfill(zfill)}' ..., format {format})")
    if reader:
        print(f'read it with {reader.format(path=args.out, size=args.size)}')
    return count


__all__ = ['convert', 'encode_image', 'LMDBImageWriter', 'LMDBImageReader',
           'folder_to_lmdb', 'list_images', 'resize_and_crop',
           'resize_main', 'is_lmdb', 'CorruptImageError',
           'LMDBFormatError']
