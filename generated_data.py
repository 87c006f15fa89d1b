"""What the built-in synthetic datasets (``shapes_data``, ``scenes_data``)
share: a deterministic image dataset generated into an LMDB in the official
format on first use, with an ``attributes`` record (JSON: the generation
settings and per-image records) next to the images.

Each dataset module supplies what differs -- its format string, default
image count, generator / renderer, label function and the name its
messages use ('shapes', 'scenes') -- and keeps its public functions and
classes; this module holds the writing loop, the multi-process-safe
generate-on-first-use step, the format check of the ``attributes`` record
and the dataset base classes."""
import functools
import json
import os
import shutil
import tempfile
import warnings
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

import data_registry
from choices import ManipulateMode
from dataset import LMDBImages, build_transform
from dataset_util import LMDBFormatError, ReadonlyLMDB
from lmdb_writer import LMDBImageWriter, encode_image

# PNGs handed to the writer at a time
_WRITE_BATCH = 500


def write_generated_lmdb(path, meta: Dict,
                         render: Callable[[int], np.ndarray],
                         overwrite: bool = False) -> str:
    """Write ``meta['num_images']`` images as an LMDB at ``path``: image
    ``i`` is ``render(i)`` ((H, W, 3) uint8), stored as PNG under
    ``f"{meta['resolution']}-{i:05d}"``, plus ``length`` and
    ``attributes`` (``meta`` as JSON). FileExistsError if ``path`` exists
    (unless ``overwrite``). Returns ``path``."""
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"'{path}' already exists")
    with LMDBImageWriter(path, format='png', zfill=5,
                         key_prefix=str(meta['resolution'])) as writer:
        batch = []
        for i in range(meta['num_images']):
            batch.append(encode_image(Image.fromarray(render(i)), 'png'))
            if len(batch) == _WRITE_BATCH:
                writer.put_bytes(batch)
                batch = []
        writer.put_bytes(batch)
        writer.put_meta('attributes', json.dumps(meta).encode('utf-8'))
    return path


def ensure_generated_lmdb(path, make: Callable[[str], str], name: str):
    """Generate the dataset at ``path`` with ``make(tmp_path)`` unless it
    is there. Each process writes its own temporary copy (``{name}.lmdb``
    in a folder next to ``path``) and renames it into place; when another
    process got there first its (identical) copy is kept."""
    if os.path.exists(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent,
                           prefix=os.path.basename(path) + '.gen-')
    try:
        made = make(os.path.join(tmp, f'{name}.lmdb'))
        try:
            os.rename(made, path)
        except OSError:
            if not os.path.isdir(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_generated_meta(path, fmt: str, name: str,
                        format_error: Optional[str] = None) -> Dict:
    """The ``attributes`` record of a generated LMDB whose format is
    ``fmt``. LMDBFormatError naming the path when it has no such record
    ('is not a {name} LMDB') or another format (``format_error`` if given,
    else a message with both formats)."""
    db = ReadonlyLMDB(path)
    raw = db.get('attributes')
    if raw is None:
        raise LMDBFormatError(
            f"'{path}' is not a {name} LMDB: it has no 'attributes' key "
            f'(found {db.describe_keys()}); delete it to regenerate')
    meta = json.loads(raw.decode('utf-8'))
    if meta.get('format') != fmt:
        raise LMDBFormatError(format_error or (
            f"'{path}' is not a {name} LMDB: its attributes have format "
            f"{meta.get('format')!r}, not {fmt!r}; delete it to "
            'regenerate or use another path'))
    return meta


class GeneratedLMDBDataset(LMDBImages):
    """A deterministic image dataset generated at ``path`` on first use
    and read through the LMDB path like the real datasets (Resize +
    CenterCrop to ``image_size``; flips only with ``do_augment``).

    Subclasses set ``name`` (used in messages), ``default_count`` (images
    generated when ``num_images`` is not given; a warning says so when the
    LMDB at ``default_path`` holds another count), ``make_lmdb`` (``(path,
    num_images, seed=...) -> path``) and ``read_meta`` (``path -> the
    attributes record``); ``path`` defaults to their ``default_path``.

    ``num_images`` / ``seed``: used when generating (default
    ``default_count`` / 0); when given and the LMDB at ``path`` was made
    with other values, a ValueError says so. ``.attributes`` holds the
    per-image records, ``.meta`` the whole ``attributes`` record.
    """

    name: str = None
    default_count: int = None
    default_path: str = None   # the demo's own copy (data_paths[name])
    make_lmdb: Callable = None
    read_meta: Callable = None

    def __init__(self, path=None, image_size=32, num_images: int = None,
                 seed: int = None, do_augment: bool = False,
                 do_transform: bool = True, do_normalize: bool = True,
                 **kwargs):
        path = os.fspath(self.default_path if path is None else path)
        self.image_size = image_size
        make = functools.partial(
            type(self).make_lmdb,
            num_images=(self.default_count if num_images is None
                        else num_images),
            seed=0 if seed is None else seed)
        ensure_generated_lmdb(path, make, self.name)
        self.meta = type(self).read_meta(path)
        wanted = {'num_images': num_images, 'seed': seed}
        for k, v in wanted.items():
            if v is not None and self.meta[k] != v:
                raise ValueError(
                    f"'{path}' holds {self.name} made with "
                    f'{k}={self.meta[k]}, not {v}; delete it to '
                    'regenerate or use another path')
        if (num_images is None and self.default_path is not None
                and os.path.abspath(path) == os.path.abspath(
                    self.default_path)
                and self.meta['num_images'] != self.default_count):
            # an LMDB made by an older version of the demo
            warnings.warn(
                f"'{path}' holds {self.meta['num_images']} {self.name} "
                f'images; the default is now {self.default_count} '
                '(issue #12). Delete it to regenerate.', stacklevel=2)
        self.path = path
        self._open(path, self.meta['resolution'], 5, None)
        self.attributes = self.meta['records']
        self.transform = build_transform(image_size, 'center',
                                          flip=do_augment,
                                          to_tensor=do_transform,
                                          normalize=do_normalize)


# held-out images: the same distribution with another seed, generated
# beside the training LMDB (never trained on); what the demo report and
# bench/zsem_study.py measure
HELDOUT_IMAGES = 4000
HELDOUT_SEED = 1


class GeneratedAttrDataset(GeneratedLMDBDataset):
    """Binary labels for a :class:`GeneratedLMDBDataset`, like the CelebA
    attribute datasets: items carry ``'labels'`` (K,) int64 of +1 / -1 in
    ``id_to_cls`` order; ``.labels`` is the (N, K) tensor of all of them
    (``label_fn(attributes)``; no image decoding).

    Listed after the dataset: ``class ShapesAttrDataset(ShapesDataset,
    GeneratedAttrDataset)`` keeps ``ShapesDataset``'s constructor, whose
    ``super().__init__`` call then runs this one. Subclasses set
    ``id_to_cls`` (``cls_to_id`` follows) and ``label_fn``."""

    id_to_cls: Sequence[str] = ()
    cls_to_id: Dict[str, int] = {}
    label_fn: Callable[[Dict], torch.Tensor] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if 'id_to_cls' in cls.__dict__:
            cls.cls_to_id = {v: k for k, v in enumerate(cls.id_to_cls)}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = type(self).label_fn(self.attributes)

    @classmethod
    def heldout(cls, beside, image_size=32):
        """HELDOUT_IMAGES images with HELDOUT_SEED at
        ``<folder of beside>/<name>_heldout.lmdb`` (generated on first
        use): images no model trained on the LMDB ``beside`` has seen."""
        path = os.path.join(os.path.dirname(os.fspath(beside)),
                            f'{cls.name}_heldout.lmdb')
        return cls(path, image_size=image_size, num_images=HELDOUT_IMAGES,
                   seed=HELDOUT_SEED)

    def pos_count(self, cls_name):
        """How many images have label ``cls_name`` at +1."""
        return int((self.labels[:, self.cls_to_id[cls_name]] == 1).sum())

    def neg_count(self, cls_name):
        """How many images have label ``cls_name`` at -1."""
        return int((self.labels[:, self.cls_to_id[cls_name]] == -1).sum())

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item['labels'] = self.labels[item['index']]
        return item



def register_demo(dataset_cls, attr_cls, mode: ManipulateMode):
    """Register a generated dataset with the data registry: ``data_name =
    dataset_cls.name`` reads ``dataset_cls`` (at its ``default_path``),
    ``manipulate_mode = mode`` trains the classifier on ``attr_cls``."""
    name = dataset_cls.name
    data_registry.register_dataset(
        name, dataset_cls, f'generated on first use ({name}_data.py)',
        path=dataset_cls.default_path)

    def labelled(conf):
        return attr_cls(path=conf.data_dir or data_registry.data_paths[name],
                        image_size=conf.img_size)

    data_registry.register_attr_dataset(mode, labelled, attr_cls.id_to_cls)


__all__ = [
    'GeneratedLMDBDataset', 'GeneratedAttrDataset', 'write_generated_lmdb',
    'ensure_generated_lmdb', 'read_generated_meta', 'register_demo',
]
