"""The recipes and datasets of the z_sem study (bench/zsem_study.py).

A recipe is a set of config overrides on the official recipe (eps
prediction, plain MSE, uniform timesteps, linear schedule), applied to the
dataset's demo template (whose own recipe is the study's winner).
"""
import functools
import os
from dataclasses import dataclass
from typing import Callable, List, Tuple

import scenes_data
import shapes_data
import templates
import templates_cls
from choices import ModelMeanType
from config import PretrainConfig

OFFICIAL_RECIPE = {
    'beatgans_model_mean_type': ModelMeanType.eps,
    'loss_weighting': 'none',
    'T_sampler': 'uniform',
    'beta_scheduler': 'linear',
}
VARIANTS = {
    'official': {},
    'p2': {'loss_weighting': 'p2'},
    'min_snr': {'loss_weighting': 'min_snr'},
    'high_noise': {'T_sampler': 'high_noise'},
    'x0': {'beatgans_model_mean_type': ModelMeanType.start_x},
    'v': {'beatgans_model_mean_type': ModelMeanType.v},
    'v_min_snr': {'beatgans_model_mean_type': ModelMeanType.v,
                  'loss_weighting': 'min_snr'},
    'v_high_noise': {'beatgans_model_mean_type': ModelMeanType.v,
                     'T_sampler': 'high_noise'},
    'x0_high_noise': {'beatgans_model_mean_type': ModelMeanType.start_x,
                      'T_sampler': 'high_noise'},
    # the cosine schedule spends fewer steps at near-pure noise (for small
    # images the linear one reaches it early)
    'x0_cosine': {'beatgans_model_mean_type': ModelMeanType.start_x,
                  'beta_scheduler': 'cosine'},
    # more images at the same steps (the demo had 4,000 before)
    'x0_40k': {'beatgans_model_mean_type': ModelMeanType.start_x,
               'num_images': 40_000},
    # the same with the learning rate decayed to 0 by the last step
    # (cosine); measured at one step count per run (the decay is tied to it)
    'x0_40k_cos': {'beatgans_model_mean_type': ModelMeanType.start_x,
                   'num_images': 40_000, 'lr_decay': 'cosine'},
    # half the batch, so about 1.7x the steps in the same time (bf16 on
    # the AMD EPYC: 0.14-0.15 s per step instead of 0.25)
    'x0_40k_b16': {'beatgans_model_mean_type': ModelMeanType.start_x,
                   'num_images': 40_000, 'batch_size': 16},
    # the demo's recipe in float32, what conf.precision='auto' picks on a
    # CPU without native bf16 (its numbers, not its speed)
    'x0_40k_fp32': {'beatgans_model_mean_type': ModelMeanType.start_x,
                    'num_images': 40_000, 'precision': '32-true'},
}
# variant keys that are not config fields: the number of images generated
# for the training set (default: the dataset's own count)
DATA_KEYS = ('num_images', )


@dataclass
class StudyDataset:
    name: str
    autoenc: Callable        # template of the autoencoder
    classifier: Callable     # template of its attribute classifier
    attr_class: type         # its labelled dataset (images in [-1, 1])
    read_attributes: Callable
    label_names: List[str]
    # (attribute read back, classifier label to move along, target class)
    manipulations: List[Tuple[str, str, int]]


DATASETS = {
    'shapes': StudyDataset(
        'shapes', templates.shapes32_autoenc,
        templates_cls.shapes32_autoenc_cls,
        shapes_data.ShapesAttrDataset,
        functools.partial(shapes_data.shape_attribute_classes,
                          value_range=(0, 1)),
        list(shapes_data.SHAPE_LABELS),
        shapes_data.SHAPE_MANIPULATIONS),
    'scenes': StudyDataset(
        'scenes', templates.scenes32_autoenc,
        templates_cls.scenes32_autoenc_cls,
        scenes_data.ScenesAttrDataset,
        functools.partial(scenes_data.scene_attribute_classes,
                          value_range=(0, 1)),
        list(scenes_data.SCENE_LABELS),
        scenes_data.SCENE_MANIPULATIONS),
}


def data_path(dataset: str, variant: str):
    """The training images of a recipe: None for the dataset's default
    LMDB, else ``datasets/<dataset>_<count>.lmdb``."""
    count = VARIANTS[variant].get('num_images')
    return None if count is None else f'datasets/{dataset}_{count}.lmdb'


def training_data(dataset: str, variant: str):
    """The recipe's labelled training set (generated on first use)."""
    cls = DATASETS[dataset].attr_class
    path = data_path(dataset, variant) or cls.default_path
    return cls(path, image_size=32,
               num_images=VARIANTS[variant].get('num_images'))


def heldout_data(dataset: str):
    """Images of the same distribution that no recipe trains on."""
    cls = DATASETS[dataset].attr_class
    return cls.heldout(cls.default_path, image_size=32)


def _apply(conf, dataset, variant):
    for k, v in {**OFFICIAL_RECIPE, **VARIANTS[variant]}.items():
        if k not in DATA_KEYS:
            setattr(conf, k, v)
    conf.data_dir = data_path(dataset, variant)


def autoencoder_conf(dataset: str, variant: str, steps: int, base_dir: str):
    """The dataset's demo autoencoder with the recipe's overrides, trained
    for ``steps`` steps in ``<base_dir>/<dataset>_<variant>``."""
    conf = DATASETS[dataset].autoenc()
    _apply(conf, dataset, variant)
    conf.total_samples = conf.batch_size * steps
    conf.sample_every_samples = 0
    conf.name = f'{dataset}_{variant}'
    conf.base_dir = base_dir
    conf.make_model_conf()
    return conf


def classifier_conf(ae, steps: int):
    """The demo's attribute classifier on ``ae``'s z_sem at ``steps``."""
    dataset = ae.name.split('_')[0]
    conf = DATASETS[dataset].classifier()
    variant = ae.name[len(dataset) + 1:]
    _apply(conf, dataset, variant)
    conf.base_dir = ae.base_dir
    conf.name = f'{ae.name}_cls_{steps}'
    conf.latent_infer_path = os.path.join(ae.logdir, 'latent.pkl')
    conf.pretrain = PretrainConfig('study', os.path.join(ae.logdir,
                                                         'last.ckpt'))
    return conf


def headline(rec):
    """The few numbers of a study record worth printing."""
    z = rec['zsem_only']
    out = {'steps': rec['steps'], 'variant': rec['variant'],
           'kept': {k: round(v, 3) for k, v in z['kept'].items()},
           'chance': {k: round(v, 3) for k, v in z['chance'].items()},
           'spread_z': round(z['spread_across_z'], 4),
           'spread_xT': round(z['spread_across_xT'], 4),
           'recon_mse_inv': round(rec['recon_mse_inverted_xT'], 5),
           'changed_at_1': {k: round(m['changed'].get(1.0, float('nan')), 3)
                            for k, m in rec['manipulation'].items()}}
    if 'probe_trained' in rec:
        out.update(_probe_headline(rec))
    if 'heldout' in rec:
        out['heldout'] = headline({**rec['heldout'], 'steps': rec['steps'],
                                   'variant': rec['variant']})
    return out


def _probe_headline(rec):
    return {'probe': round(rec['probe_trained']['mean'], 4),
            'probe_random': [round(r['mean'], 4)
                             for r in rec['probe_random']],
            'probe_beats_all_splits': all(
                t > max(r['mean_by_split'][i] for r in rec['probe_random'])
                for i, t in enumerate(
                    rec['probe_trained']['mean_by_split']))}
