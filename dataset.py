"""The datasets of DiffAE, reading the official LMDB formats.

Every item is a dict ``{'img': (3, H, W) tensor in [-1, 1], 'index': int}``
(attribute datasets add ``'labels'``). The transforms are the official
ones: ``Resize(image_size)`` (+ ``CenterCrop`` for all but FFHQ, or the D2C
crop first for CelebA), an optional ``RandomHorizontalFlip``, ``ToTensor``
and ``Normalize(0.5, 0.5)``. Each dataset keeps its transform in a settable
``.transform`` attribute.

Official LMDB formats (keys ``f'{original_resolution}-{index:0{zfill}d}'``
plus ``length``; all opened read-only without a lock file):

============  =================  =====  =============================
dataset       key example        zfill  made by
============  =================  =====  =============================
FFHQ          ``256-00000``      5      ``data_resize_ffhq.py``
CelebA        ``None-0000000``   7      ``data_resize_celeba.py``
CelebA-HQ     ``256-00000``      5      ``data_resize_celebahq.py``
LSUN horse    ``256-0000000``    7      ``data_resize_horse.py``
LSUN bedroom  ``256-0000000``    7      ``data_resize_bedroom.py``
shapes        ``64-00000``       5      generated on first use
scenes        ``64-00000``       5      generated on first use
============  =================  =====  =============================

Errors: a missing dataset raises FileNotFoundError naming the path and the
script that makes it; an LMDB without ``length`` or with keys in another
format raises :class:`~dataset_util.LMDBFormatError` naming the path, the
expected key pattern and the first keys found; a record (or file) that
cannot be decoded raises :class:`~dataset_util.CorruptImageError` naming
its key and LMDB path (or the file path) -- we raise rather than skip so
that no image silently disappears from training. Images of any mode (RGBA,
greyscale, palette, 16-bit) are converted to 8-bit RGB
(:func:`dataset_util.to_rgb`).

The built-in demo dataset (``shapes_data.py``), the second synthetic
dataset of landscape scenes (``scenes_data.py``) and the resumable training
order (``resumable_loader.py``) have modules of their own.
"""
import csv
import operator
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as Ftrans
from torch.utils.data import Dataset
from torchvision import transforms

from dataset_util import (CorruptImageError, LMDBFormatError, ReadonlyLMDB,
                          decode_image, list_images, open_image)

# the 40 CelebA attributes, in the official order
CELEBA_ATTRS = [
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick',
    'Wearing_Necklace', 'Wearing_Necktie', 'Young'
]

# attribute name -> column (the official ``cls_to_id``)
CELEBA_CLS_TO_ID = {name: i for i, name in enumerate(CELEBA_ATTRS)}

# how to make each dataset (named in the missing-path error)
_MAKE_COMMANDS = {
    'ffhq': 'python data_resize_ffhq.py --in <folder of FFHQ images> '
            '--out {path}',
    'celeba': 'python data_resize_celeba.py --in <folder of CelebA '
              'img_align_celeba images> --out {path}',
    'celebahq': 'python data_resize_celebahq.py --in <folder of CelebA-HQ '
                'images> --out {path}',
    'horse': 'python data_resize_horse.py --in <LSUN horse_train_lmdb '
             'folder> --out {path}',
    'bedroom': 'python data_resize_bedroom.py --in <LSUN bedroom_train_lmdb '
               'folder> --out {path}',
}


def _make_hint(name: Optional[str], path) -> str:
    if name is None:
        return ''
    cmd = _MAKE_COMMANDS[name].format(path=path)
    return (f'Make it with `{cmd}` (or point the config at it: '
            'conf.data_dir = <path>)')


def _check_index(index, length: int) -> int:
    index = operator.index(index)
    if not 0 <= index < length:
        raise IndexError(f'index {index} out of range (length {length})')
    return index


# ---------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------
class Crop:
    """Crop the box rows ``x1:x2``, columns ``y1:y2`` (official naming: x is
    the vertical axis)."""

    def __init__(self, x1, x2, y1, y2):
        self.x1 = x1
        self.x2 = x2
        self.y1 = y1
        self.y2 = y2

    def __call__(self, img):
        return Ftrans.crop(img, top=self.x1, left=self.y1,
                           height=self.x2 - self.x1, width=self.y2 - self.y1)

    def __repr__(self):
        return (f'{type(self).__name__}(x1={self.x1}, x2={self.x2}, '
                f'y1={self.y1}, y2={self.y2})')


# centre of the face in the 178x218 CelebA images (D2C paper)
_D2C_CENTER_X, _D2C_CENTER_Y, _D2C_HALF = 89, 121, 64


def d2c_crop() -> Crop:
    """The D2C paper's CelebA crop: the 128x128 box with top 57, left 25."""
    return Crop(_D2C_CENTER_Y - _D2C_HALF, _D2C_CENTER_Y + _D2C_HALF,
                _D2C_CENTER_X - _D2C_HALF, _D2C_CENTER_X + _D2C_HALF)


def build_transform(image_size, crop: Optional[str] = 'center',
                     flip: bool = False, flip_prob: float = 0.5,
                     to_tensor: bool = True, normalize: bool = True):
    """The official transform pipelines.

    crop: 'center' (Resize + CenterCrop), 'd2c' (D2C crop + Resize) or
    None (Resize only, FFHQ)."""
    if image_size is None:
        raise ValueError('image_size is required (e.g. image_size=64)')
    if crop == 'd2c':
        steps = [d2c_crop(), transforms.Resize(image_size)]
    elif crop == 'center':
        steps = [transforms.Resize(image_size),
                 transforms.CenterCrop(image_size)]
    elif crop is None:
        steps = [transforms.Resize(image_size)]
    else:
        raise ValueError(f'unknown crop {crop!r}')
    if flip:
        steps.append(transforms.RandomHorizontalFlip(p=flip_prob))
    if to_tensor:
        steps.append(transforms.ToTensor())
    if normalize:
        steps.append(transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    return transforms.Compose(steps)


def make_transform(image_size, flip_prob=0.5, crop_d2c=False):
    """Official: Resize + CenterCrop (or the D2C crop + Resize), a
    horizontal flip with probability ``flip_prob`` (kept even at 0, as
    the official one), ToTensor, Normalize to [-1, 1]."""
    return build_transform(image_size, 'd2c' if crop_d2c else 'center',
                            flip=True, flip_prob=flip_prob)


class _SmallImageWarning:
    """Warn once per dataset when its images are upscaled."""

    _warned = False

    def _check_small(self, img, crop_side=None):
        if self._warned:
            return
        side = crop_side or min(img.size)
        size = getattr(self, 'image_size', None)
        if isinstance(size, int) and side < size:
            self._warned = True
            warnings.warn(
                f'{type(self).__name__}: images ({img.size[0]}x'
                f'{img.size[1]}) are smaller than image_size={size} and '
                'will be upscaled', stacklevel=3)


# ---------------------------------------------------------------------------
# generic datasets
# ---------------------------------------------------------------------------
class ImageDataset(Dataset, _SmallImageWarning):
    """Every image in a folder (official semantics).

    Args:
        folder: the folder; with ``has_subdir`` its subfolders too.
        exts: file extensions to take (case-sensitive, as globbing is).
        sort_names: sort the relative paths (else glob order per ext).
        do_augment: random horizontal flip; do_transform: ToTensor;
            do_normalize: to [-1, 1].

    A file that cannot be decoded raises CorruptImageError naming it.
    """

    def __init__(self, folder, image_size, exts=['jpg'],
                 do_augment: bool = True, do_transform: bool = True,
                 do_normalize: bool = True, sort_names=False,
                 has_subdir: bool = True):
        super().__init__()
        self.folder = folder
        self.image_size = image_size
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"image folder '{folder}' does not exist (for "
                "data_name='imagefolder' it is conf.data_dir)")
        self.paths = list_images(folder, exts, has_subdir)
        if not self.paths:
            where = ' (and its subfolders)' if has_subdir else ''
            raise FileNotFoundError(
                f"no images in folder '{folder}'{where} with extensions "
                f'{list(exts)}')
        if sort_names:
            self.paths = sorted(self.paths)
        self.transform = build_transform(image_size, 'center',
                                          flip=do_augment,
                                          to_tensor=do_transform,
                                          normalize=do_normalize)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        index = _check_index(index, len(self.paths))
        img = open_image(os.path.join(self.folder, self.paths[index]))
        self._check_small(img)
        if self.transform is not None:
            img = self.transform(img)
        return {'img': img, 'index': index}


class SubsetDataset(Dataset):
    """The first ``size`` items of ``dataset``."""

    def __init__(self, dataset, size):
        if len(dataset) < size:
            raise ValueError(f'SubsetDataset: asked for {size} items of a '
                             f'dataset of {len(dataset)}')
        self.dataset = dataset
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return self.dataset[_check_index(index, self.size)]


class Repeat(Dataset):
    """``dataset`` repeated cyclically up to ``new_len`` items."""

    def __init__(self, dataset, new_len) -> None:
        super().__init__()
        self.dataset = dataset
        self.original_len = len(dataset)
        self.new_len = new_len

    def __len__(self):
        return self.new_len

    def __getitem__(self, index):
        index = _check_index(index, self.new_len)
        return self.dataset[index % self.original_len]


# ---------------------------------------------------------------------------
# LMDB datasets
# ---------------------------------------------------------------------------
class BaseLMDB(Dataset):
    """Images of an official-format LMDB: ``data[i]`` is the RGB PIL image
    under key ``f'{original_resolution}-{str(i).zfill(zfill)}'``.

    ``i`` may also be a digit string (``'42'``), as the official CelebA-HQ
    attribute reader passes. Raises FileNotFoundError (with
    ``missing_hint``) when ``path`` does not exist, LMDBFormatError when it
    has no ``length`` key or its first key is not in this format, KeyError
    naming the key when a record is missing and CorruptImageError naming
    the key when a record cannot be decoded.
    """

    def __init__(self, path, original_resolution, zfill: int = 5,
                 missing_hint: str = ''):
        self.original_resolution = original_resolution
        self.zfill = zfill
        self.db = ReadonlyLMDB(path, missing_hint)
        pattern = (f"'{original_resolution}-' + the index zero-padded to "
                   f"{zfill} digits (e.g. '{self.key(0)}')")
        self.length = self.db.read_length(pattern)
        if self.length > 0 and self.db.get(self.key(0)) is None:
            raise LMDBFormatError(
                f"LMDB '{self.path}' has no key '{self.key(0)}': expected "
                f"keys {pattern}; found {self.db.describe_keys()}"
                f'{self._guess()}')
        self.db.check_length(self.length, self.key)

    @property
    def path(self):
        return self.db.path

    def key(self, index) -> str:
        return f'{self.original_resolution}-{str(index).zfill(self.zfill)}'

    def _guess(self) -> str:
        """A hint at the settings that would read the keys found."""
        for k in self.db.first_keys(5):
            prefix, _, digits = k.rpartition('-')
            if prefix and digits.isdigit():
                return (f" (these look like original_resolution="
                        f"{prefix!r}, zfill={len(digits)})")
        return ''

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        key = self.key(index)
        data = self.db.get(key)
        if data is None:
            raise KeyError(f"key '{key}' not found in LMDB '{self.path}' "
                           f'(length {self.length})')
        return decode_image(data, f"key '{key}' of LMDB '{self.path}'")


class LMDBImages(Dataset, _SmallImageWarning):
    """Shared body of the LMDB image datasets: ``self.data`` (BaseLMDB),
    ``self.transform``, ``self.length`` and ``self.offset``."""

    offset = 0
    crop_side = None

    def _open(self, path, original_resolution, zfill, make_name):
        self.original_resolution = original_resolution
        self.data = BaseLMDB(path, original_resolution, zfill=zfill,
                             missing_hint=_make_hint(make_name, path))
        self.length = len(self.data)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        index = _check_index(index, self.length) + self.offset
        img = self.data[index]
        self._check_small(img, self.crop_side)
        if self.transform is not None:
            img = self.transform(img)
        return {'img': img, 'index': index}


class FFHQlmdb(LMDBImages):
    """FFHQ (``256-00000`` keys). ``split``: None (all), 'train' (all but
    the first 10000) or 'test' (the first 10000). Resize only, no crop
    (the images are square)."""

    def __init__(self, path=os.path.expanduser('datasets/ffhq256.lmdb'),
                 image_size=256, original_resolution=256, split=None,
                 as_tensor: bool = True, do_augment: bool = True,
                 do_normalize: bool = True, **kwargs):
        self.image_size = image_size
        self._open(path, original_resolution, 5, 'ffhq')
        if split is None:
            self.offset = 0
        elif split == 'train':
            if self.length <= 10000:
                raise ValueError(
                    f"split='train' skips the first 10000 images, but "
                    f"'{path}' holds only {self.length}")
            self.length = self.length - 10000
            self.offset = 10000
        elif split == 'test':
            self.length = min(10000, self.length)
            self.offset = 0
        else:
            raise NotImplementedError(
                f"split {split!r}: use None, 'train' or 'test'")
        self.transform = build_transform(image_size, None, flip=do_augment,
                                          to_tensor=as_tensor,
                                          normalize=do_normalize)


class CelebAlmdb(LMDBImages):
    """CelebA (``None-0000000`` keys: the original 178x218 images as the
    official converter stores them with ``original_resolution=None``).
    ``crop_d2c``: the D2C crop then Resize; else Resize + CenterCrop."""

    def __init__(self, path, image_size, original_resolution=128,
                 split=None, as_tensor: bool = True,
                 do_augment: bool = True, do_normalize: bool = True,
                 crop_d2c: bool = False, **kwargs):
        self.image_size = image_size
        self._open(path, original_resolution, 7, 'celeba')
        self.crop_d2c = crop_d2c
        if split is not None:
            raise NotImplementedError(
                f'CelebAlmdb has no splits (split={split!r}); use None')
        self.offset = 0
        self.crop_side = 2 * _D2C_HALF if crop_d2c else None
        self.transform = build_transform(
            image_size, 'd2c' if crop_d2c else 'center', flip=do_augment,
            to_tensor=as_tensor, normalize=do_normalize)


class _LSUNlmdb(LMDBImages):
    """LSUN categories converted by ``data_resize_<name>.py``
    (``256-0000000`` keys): Resize + CenterCrop. A subclass names its
    converter (``_make_name``) and its default path (``_default_path``)."""

    _make_name = None
    _default_path = None

    def __init__(self, path=None, image_size=128, original_resolution=256,
                 do_augment: bool = True, do_transform: bool = True,
                 do_normalize: bool = True, **kwargs):
        self.image_size = image_size
        self._open(path or self._default_path, original_resolution, 7,
                   self._make_name)
        self.transform = build_transform(image_size, 'center',
                                          flip=do_augment,
                                          to_tensor=do_transform,
                                          normalize=do_normalize)


class Horse_lmdb(_LSUNlmdb):
    """LSUN horse (``256-0000000`` keys)."""

    _make_name = 'horse'
    _default_path = 'datasets/horse256.lmdb'


class Bedroom_lmdb(_LSUNlmdb):
    """LSUN bedroom (``256-0000000`` keys; the official code read it with
    the horse class, issue #58 -- same format, own class here)."""

    _make_name = 'bedroom'
    _default_path = 'datasets/bedroom256.lmdb'


class CelebHQlmdb(LMDBImages):
    """CelebA-HQ (``256-00000`` keys, from ``data_resize_celebahq.py``):
    Resize + CenterCrop."""

    def __init__(self, path=os.path.expanduser('datasets/celebahq256.lmdb'),
                 image_size=256, original_resolution=256,
                 do_augment: bool = True, do_transform: bool = True,
                 do_normalize: bool = True, **kwargs):
        self.image_size = image_size
        self._open(path, original_resolution, 5, 'celebahq')
        self.transform = build_transform(image_size, 'center',
                                          flip=do_augment,
                                          to_tensor=do_transform,
                                          normalize=do_normalize)


# ---------------------------------------------------------------------------
# attribute files
# ---------------------------------------------------------------------------
def _blame_attr_row(path, names, rows):
    """Raise a ValueError naming the first malformed data row."""
    for i, ln in enumerate(rows):
        row = ln.split()
        if len(row) != len(names) + 1:
            raise ValueError(
                f"attribute file '{path}', data row {i + 1}: expected a "
                f'file name and {len(names)} values, got {len(row)} fields')
        if not all(v.lstrip('+-').isdigit() for v in row[1:]):
            raise ValueError(f"attribute file '{path}', data row {i + 1} "
                             f'({row[0]}): values must be integers')


def read_attr_file(path) -> Tuple[List[str], List[str], np.ndarray]:
    """Parse a CelebA attribute file (``list_attr_celeba.txt``,
    ``CelebAMask-HQ-attribute-anno.txt``).

    Format: line 1 the image count (skipped, as officially), line 2 the
    attribute names, then ``<file name> v1 v2 ...`` with values 1 / -1.
    Returns (attribute names, file names, (N, K) int8 values).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"attribute file '{path}' not found (CelebA: "
            'Anno/list_attr_celeba.txt; CelebA-HQ: '
            'CelebAMask-HQ-attribute-anno.txt)')
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    if lines and lines[0].strip().isdigit():
        lines = lines[1:]
    if not lines:
        raise ValueError(f"attribute file '{path}' has no header line")
    names, rows = lines[0].split(), lines[1:]
    # the fast path (C parser); on any problem, find the row to blame
    if not rows:
        return names, [], np.zeros((0, len(names)), dtype=np.int8)
    try:
        if len(' '.join(rows).split()) != len(rows) * (len(names) + 1):
            raise ValueError('ragged rows')
        values = np.loadtxt(rows, usecols=range(1, len(names) + 1),
                            dtype=np.int8, ndmin=2, comments=None)
    except (ValueError, OverflowError) as e:
        _blame_attr_row(path, names, rows)
        raise ValueError(f"attribute file '{path}': {e}") from e
    files = [ln.split(None, 1)[0] for ln in rows]
    return names, files, values


def read_fewshot_csv(path) -> Tuple[List[str], List[str], np.ndarray]:
    """Parse an official few-shot split CSV (a pandas frame written with
    its index: header ``,attr1,attr2,...``; rows ``file,v1,v2,...``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"few-shot split file '{path}' not found (the official "
            "repository's data/ folder has them)")
    with open(path, newline='') as f:
        table = [r for r in csv.reader(f) if r]
    if not table:
        raise ValueError(f"few-shot split file '{path}' is empty")
    names = table[0][1:]
    files = [r[0] for r in table[1:]]
    values = np.array([[int(float(v)) for v in r[1:]] for r in table[1:]],
                      dtype=np.int8).reshape(len(files), len(names))
    return names, files, values


class _AttrTable:
    """Rows of attribute values with the official label order
    (``id_to_cls``)."""

    id_to_cls: List[str] = CELEBA_ATTRS

    def _set_table(self, names, files, values, source):
        unknown = [n for n in names if n not in self.cls_to_id]
        if unknown:
            raise ValueError(f"'{source}' has attributes {unknown} that are "
                             f'not in {type(self).__name__}.id_to_cls')
        self.attr_names = list(names)
        self.files = list(files)
        # official: attributes missing from the file are 0
        labels = np.zeros((len(files), len(self.id_to_cls)), dtype=np.int64)
        for j, name in enumerate(names):
            labels[:, self.cls_to_id[name]] = values[:, j]
        self.labels = torch.from_numpy(labels)

    def _select(self, keep: np.ndarray):
        self.files = [f for f, k in zip(self.files, keep) if k]
        self.labels = self.labels[torch.from_numpy(keep)]

    def _only(self, only_cls_name, only_cls_value):
        if only_cls_name is not None:
            col = self.labels[:, self.cls_to_id[only_cls_name]]
            self._select((col == only_cls_value).numpy())

    def pos_count(self, cls_name):
        return int((self.labels[:, self.cls_to_id[cls_name]] == 1).sum())

    def neg_count(self, cls_name):
        return int((self.labels[:, self.cls_to_id[cls_name]] == -1).sum())

    def __len__(self):
        return len(self.files)


class CelebAttrDataset(_AttrTable, Dataset, _SmallImageWarning):
    """CelebA images of a folder with their 40 attributes.

    Only the rows of ``attr_path`` whose image (``<stem>.<ext>``) is in
    ``folder`` are kept, in the file's order. Items carry ``'labels'``: a
    (40,) int64 tensor of 1 / -1 in ``id_to_cls`` order; ``.labels`` holds
    all of them, (N, 40).
    """

    id_to_cls = CELEBA_ATTRS
    cls_to_id = CELEBA_CLS_TO_ID

    def __init__(self, folder, image_size=64,
                 attr_path=os.path.expanduser(
                     'datasets/celeba_anno/list_attr_celeba.txt'),
                 ext='png', only_cls_name: str = None,
                 only_cls_value: int = None, do_augment: bool = False,
                 do_transform: bool = True, do_normalize: bool = True,
                 d2c: bool = False):
        super().__init__()
        self.folder = folder
        self.image_size = image_size
        self.ext = ext
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"CelebA image folder '{folder}' does "
                                    'not exist')
        present = {str(p.relative_to(folder).with_suffix('.jpg'))
                   for p in Path(folder).glob(f'**/*.{ext}')}
        names, files, values = read_attr_file(attr_path)
        self._set_table(names, files, values, attr_path)
        self._select(np.array([f in present for f in self.files],
                              dtype=bool))
        if not self.files:
            raise FileNotFoundError(
                f"none of the {len(files)} images listed in '{attr_path}' "
                f"is in '{folder}' as *.{ext}")
        self._only(only_cls_name, only_cls_value)
        self.crop_side = 2 * _D2C_HALF if d2c else None
        self.transform = build_transform(
            image_size, 'd2c' if d2c else 'center', flip=do_augment,
            to_tensor=do_transform, normalize=do_normalize)

    def __getitem__(self, index):
        index = _check_index(index, len(self.files))
        name = f'{self.files[index].split(".")[0]}.{self.ext}'
        img = open_image(os.path.join(self.folder, name))
        self._check_small(img, self.crop_side)
        if self.transform is not None:
            img = self.transform(img)
        return {'img': img, 'index': index, 'labels': self.labels[index]}


class CelebD2CAttrDataset(CelebAttrDataset):
    """CelebA with the D2C crop (the D2C paper's data)."""

    def __init__(self, folder, image_size=64,
                 attr_path=os.path.expanduser(
                     'datasets/celeba_anno/list_attr_celeba.txt'),
                 ext='jpg', only_cls_name: str = None,
                 only_cls_value: int = None, do_augment: bool = False,
                 do_transform: bool = True, do_normalize: bool = True,
                 d2c: bool = True):
        super().__init__(folder, image_size, attr_path, ext=ext,
                         only_cls_name=only_cls_name,
                         only_cls_value=only_cls_value,
                         do_augment=do_augment, do_transform=do_transform,
                         do_normalize=do_normalize, d2c=d2c)


class CelebAttrFewshotDataset(_AttrTable, Dataset, _SmallImageWarning):
    """K-shot CelebA subsets of the official few-shot experiments, read
    from ``data/celeba_fewshots/K{K}_{cls_name}_{seed}.csv`` (or
    ``K{K}_allneg_...`` with ``all_neg``), or from ``csv_path``. Items carry
    ``'labels'``: the (1,) value of ``cls_name``."""

    id_to_cls = CELEBA_ATTRS
    cls_to_id = CELEBA_CLS_TO_ID

    def __init__(self, cls_name, K, img_folder, img_size=64, ext='png',
                 seed=0, only_cls_name: str = None,
                 only_cls_value: int = None, all_neg: bool = False,
                 do_augment: bool = False, do_transform: bool = True,
                 do_normalize: bool = True, d2c: bool = False,
                 csv_path: str = None) -> None:
        self.cls_name = cls_name
        self.K = K
        self.img_folder = img_folder
        self.image_size = img_size
        self.ext = ext
        if csv_path is None:
            neg = 'allneg_' if all_neg else ''
            csv_path = f'data/celeba_fewshots/K{K}_{neg}{cls_name}_{seed}.csv'
        self._set_table(*read_fewshot_csv(csv_path), csv_path)
        self._only(only_cls_name, only_cls_value)
        self.crop_side = 2 * _D2C_HALF if d2c else None
        self.transform = build_transform(
            img_size, 'd2c' if d2c else 'center', flip=do_augment,
            to_tensor=do_transform, normalize=do_normalize)

    def __getitem__(self, index):
        index = _check_index(index, len(self.files))
        name = f'{self.files[index].split(".")[0]}.{self.ext}'
        img = open_image(os.path.join(self.img_folder, name))
        self._check_small(img, self.crop_side)
        label = self.labels[index, self.cls_to_id[self.cls_name]]
        if self.transform is not None:
            img = self.transform(img)
        return {'img': img, 'index': index, 'labels': label.unsqueeze(-1)}


class CelebD2CAttrFewshotDataset(CelebAttrFewshotDataset):
    """The few-shot subsets with the D2C crop."""

    def __init__(self, cls_name, K, img_folder, img_size=64, ext='jpg',
                 seed=0, only_cls_name: str = None,
                 only_cls_value: int = None, all_neg: bool = False,
                 do_augment: bool = False, do_transform: bool = True,
                 do_normalize: bool = True, is_negative=False,
                 d2c: bool = True, csv_path: str = None) -> None:
        super().__init__(cls_name, K, img_folder, img_size, ext=ext,
                         seed=seed, only_cls_name=only_cls_name,
                         only_cls_value=only_cls_value, all_neg=all_neg,
                         do_augment=do_augment, do_transform=do_transform,
                         do_normalize=do_normalize, d2c=d2c,
                         csv_path=csv_path)
        self.is_negative = is_negative


class _CelebHQRows(_AttrTable, Dataset, _SmallImageWarning):
    """CelebA-HQ LMDB images addressed by attribute-table file names
    (``'42.jpg'`` -> key ``256-00042``)."""

    id_to_cls = CELEBA_ATTRS
    cls_to_id = CELEBA_CLS_TO_ID

    def _open_lmdb(self, path, image_size, original_resolution, do_augment,
                   do_transform, do_normalize):
        self.image_size = image_size
        self.data = BaseLMDB(path, original_resolution, zfill=5,
                             missing_hint=_make_hint('celebahq', path))
        self.transform = build_transform(image_size, 'center',
                                          flip=do_augment,
                                          to_tensor=do_transform,
                                          normalize=do_normalize)

    def _image(self, index):
        stem = self.files[index].split('.')[0]
        if not stem.isdigit():
            raise ValueError(f"CelebA-HQ image name '{self.files[index]}' "
                             'is not <number>.jpg')
        img = self.data[int(stem)]
        self._check_small(img)
        if self.transform is not None:
            img = self.transform(img)
        return img


class CelebHQAttrDataset(_CelebHQRows):
    """CelebA-HQ (LMDB) with the 40 attributes of
    ``CelebAMask-HQ-attribute-anno.txt``; ``'labels'`` is (40,) 1 / -1 in
    ``id_to_cls`` order; ``.labels`` holds all of them."""

    def __init__(self, path=os.path.expanduser('datasets/celebahq256.lmdb'),
                 image_size=None,
                 attr_path=os.path.expanduser(
                     'datasets/celeba_anno/CelebAMask-HQ-attribute-anno.txt'),
                 original_resolution=256, do_augment: bool = False,
                 do_transform: bool = True, do_normalize: bool = True):
        super().__init__()
        self._open_lmdb(path, image_size, original_resolution, do_augment,
                        do_transform, do_normalize)
        self._set_table(*read_attr_file(attr_path), attr_path)

    def __getitem__(self, index):
        index = _check_index(index, len(self.files))
        return {'img': self._image(index), 'index': index,
                'labels': self.labels[index]}


class CelebHQAttrFewshotDataset(_CelebHQRows):
    """K-shot CelebA-HQ subsets (``data/celebahq_fewshots/K{K}_{cls}.csv``
    or ``csv_path``); ``'labels'`` is the (1,) value of ``cls_name``."""

    def __init__(self, cls_name, K, path, image_size,
                 original_resolution=256, do_augment: bool = False,
                 do_transform: bool = True, do_normalize: bool = True,
                 csv_path: str = None):
        super().__init__()
        self.cls_name = cls_name
        self.K = K
        self._open_lmdb(path, image_size, original_resolution, do_augment,
                        do_transform, do_normalize)
        if csv_path is None:
            csv_path = f'data/celebahq_fewshots/K{K}_{cls_name}.csv'
        self._set_table(*read_fewshot_csv(csv_path), csv_path)

    def __getitem__(self, index):
        index = _check_index(index, len(self.files))
        label = self.labels[index, self.cls_to_id[self.cls_name]]
        return {'img': self._image(index), 'index': index,
                'labels': label.unsqueeze(-1)}


__all__ = [
    'CELEBA_ATTRS', 'ImageDataset', 'SubsetDataset', 'Repeat', 'BaseLMDB',
    'make_transform', 'Crop', 'd2c_crop', 'FFHQlmdb', 'CelebAlmdb',
    'Horse_lmdb', 'Bedroom_lmdb', 'CelebHQlmdb', 'CelebAttrDataset',
    'CelebD2CAttrDataset', 'CelebAttrFewshotDataset',
    'CelebD2CAttrFewshotDataset', 'CelebHQAttrDataset',
    'CelebHQAttrFewshotDataset', 'read_attr_file', 'read_fewshot_csv',
    'CorruptImageError', 'LMDBFormatError', 'LMDBImages', 'build_transform',
    'list_images',
]
