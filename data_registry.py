"""The one registry of named datasets: ``conf.data_name`` -> the reader,
its default path (``data_paths``, relative to the working directory as in
the official code) and what makes it (the ``data_resize_<name>.py`` that
writes the LMDB); and the labelled datasets of the attribute classifier
(``conf.manipulate_mode`` -> reader and label names).

``TrainConfig.make_dataset`` and the classifier read only this registry.
The real datasets are registered here; the demo datasets (``shapes``,
``scenes``) register themselves when their module is imported
(``shapes_data.py``, ``scenes_data.py``; ``templates.py`` imports both),
so that nothing below the templates imports the demo."""
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import dataset as D
from choices import ManipulateMode
from image_check import apply_policy

# where each named dataset (and annotation file) lives; the demo datasets
# add theirs when they register
data_paths = {
    'ffhqlmdb256': os.path.expanduser('datasets/ffhq256.lmdb'),
    # used for training a classifier
    'celeba': os.path.expanduser('datasets/celeba'),
    # used for training DPM models
    'celebalmdb': os.path.expanduser('datasets/celeba.lmdb'),
    'celebahq': os.path.expanduser('datasets/celebahq256.lmdb'),
    'horse256': os.path.expanduser('datasets/horse256.lmdb'),
    'bedroom256': os.path.expanduser('datasets/bedroom256.lmdb'),
    'celeba_anno': os.path.expanduser(
        'datasets/celeba_anno/list_attr_celeba.txt'),
    'celebahq_anno': os.path.expanduser(
        'datasets/celeba_anno/CelebAMask-HQ-attribute-anno.txt'),
    'celeba_relight': os.path.expanduser(
        'datasets/celeba_hq_light/celeba_light.txt'),
}

# the demo datasets and the module that registers each
DEMO_MODULES = {'shapes': 'shapes_data', 'scenes': 'scenes_data'}


@dataclass(frozen=True)
class DatasetEntry:
    """A named training dataset."""
    name: str
    make: Callable          # (path=, image_size=, **kwargs) -> Dataset
    made_by: str            # the script (or step) that writes it
    checked: bool = False   # image files checked first (conf.bad_images)

    @property
    def path(self) -> Optional[str]:
        """The default path (``data_paths``); None: it needs
        conf.data_dir."""
        return data_paths.get(self.name)


@dataclass(frozen=True)
class AttrDatasetEntry:
    """The labelled images of a classifier template."""
    make: Callable           # (conf) -> Dataset with 'labels'
    names: Sequence[str]     # the labels, in output order


DATASETS: Dict[str, DatasetEntry] = {}
ATTR_DATASETS: Dict[ManipulateMode, AttrDatasetEntry] = {}


def register_dataset(name: str, make: Callable, made_by: str,
                     path: Optional[str] = None, checked: bool = False):
    """Make ``conf.data_name = name`` read ``make(path=..., image_size=...,
    **kwargs)``; ``path`` (if given) becomes ``data_paths[name]``."""
    DATASETS[name] = DatasetEntry(name, make, made_by, checked)
    if path is not None:
        data_paths[name] = os.path.expanduser(path)


def register_attr_dataset(mode: ManipulateMode, make: Callable,
                          names: Sequence[str]):
    """Make ``conf.manipulate_mode = mode`` train on ``make(conf)``."""
    ATTR_DATASETS[mode] = AttrDatasetEntry(make, tuple(names))


def _unknown(name) -> str:
    demo = DEMO_MODULES.get(name)
    if demo:
        return (f"data_name '{name}' is a demo dataset, registered when "
                f'{demo}.py is imported (templates.py imports it): '
                f'`import {demo}` first')
    return (f"no dataset for data_name '{name}': use one of "
            f'{sorted(DATASETS)} (imagefolder with conf.data_dir)')


def dataset_path(name: str) -> str:
    """The default path of dataset ``name`` (KeyError naming the names)."""
    if name not in data_paths:
        hint = _unknown(name) if name in DEMO_MODULES else (
            f"unknown data_name '{name}': use one of {sorted(data_paths)} "
            "or 'imagefolder' with conf.data_dir")
        raise KeyError(hint)
    return data_paths[name]


def make_dataset(name: str, path, image_size: int, bad_images='error',
                 logdir: Optional[str] = None, **kwargs):
    """The dataset ``name`` at ``path``; a folder of image files is
    checked first (``bad_images``: 'error' or 'skip', see
    image_check.py; the list of bad files goes to ``logdir``)."""
    entry = DATASETS.get(name)
    if entry is None:
        raise NotImplementedError(_unknown(name))
    data = entry.make(path=path, image_size=image_size, **kwargs)
    if entry.checked:
        data = apply_policy(data, bad_images, logdir)
    return data


def attribute_names(mode: ManipulateMode, cls_name: Optional[str] = None):
    """The attributes a classifier of ``mode`` predicts, in output order."""
    if mode.is_single_class():
        return [cls_name]
    if mode not in ATTR_DATASETS:
        raise NotImplementedError(mode)
    return list(ATTR_DATASETS[mode].names)


def make_attr_dataset(conf):
    """The labelled images of classifier template ``conf``."""
    if conf.manipulate_mode not in ATTR_DATASETS:
        raise NotImplementedError(conf.manipulate_mode)
    return ATTR_DATASETS[conf.manipulate_mode].make(conf)


# ----------------------------------------------------------------------
# the real datasets
# ----------------------------------------------------------------------
def _image_folder(path, image_size, **kwargs):
    if path is None:
        raise ValueError("data_name='imagefolder' needs conf.data_dir = "
                         "'<folder of images>'")
    kwargs.setdefault('exts', ['jpg', 'jpeg', 'png', 'webp', 'JPG', 'JPEG',
                               'PNG'])
    kwargs.setdefault('sort_names', True)
    return D.ImageDataset(path, image_size=image_size, **kwargs)


def _celeba_d2c(path, image_size, **kwargs):
    # always the D2C crop
    return D.CelebAlmdb(path=path, image_size=image_size,
                        original_resolution=None, crop_d2c=True, **kwargs)


register_dataset('ffhqlmdb256', D.FFHQlmdb, 'data_resize_ffhq.py')
register_dataset('celebalmdb', _celeba_d2c, 'data_resize_celeba.py')
register_dataset('celebahq', D.CelebHQlmdb, 'data_resize_celebahq.py')
register_dataset('horse256', D.Horse_lmdb, 'data_resize_horse.py')
# (the reference reads bedrooms with the horse class, issue #58; same
# format, named right here)
register_dataset('bedroom256', D.Bedroom_lmdb, 'data_resize_bedroom.py')
register_dataset('imagefolder', _image_folder,
                 'your own folder (conf.data_dir)', checked=True)

register_attr_dataset(
    ManipulateMode.celebahq_all,
    lambda c: D.CelebHQAttrDataset(
        c.data_dir or data_paths['celebahq'], c.img_size,
        data_paths['celebahq_anno'], do_augment=False),
    D.CelebAttrDataset.id_to_cls)
register_attr_dataset(
    ManipulateMode.d2c_fewshot,
    lambda c: D.CelebD2CAttrFewshotDataset(
        cls_name=c.manipulate_cls, K=c.manipulate_shots,
        img_folder=data_paths['celeba'], img_size=c.img_size,
        seed=c.manipulate_seed, all_neg=False),
    ())

__all__ = ['data_paths', 'DATASETS', 'ATTR_DATASETS', 'DatasetEntry',
           'AttrDatasetEntry', 'register_dataset', 'register_attr_dataset',
           'dataset_path', 'make_dataset', 'attribute_names',
           'make_attr_dataset', 'DEMO_MODULES']
