"""Templates of the attribute classifiers used for manipulation.

``from templates_cls import *`` also re-exports everything of
``templates`` (and ClsModel lazily)."""
import templates
from choices import ManipulateMode, TrainMode
from config import PretrainConfig
from templates import (ffhq128_autoenc_130M, ffhq256_autoenc, scenes32_autoenc,
                       shapes32_autoenc)


def __getattr__(name):
    if name in ('ClsModel', 'train_cls'):
        import experiment_classifier
        return getattr(experiment_classifier, name)
    return getattr(templates, name)


def _classifier_of(conf, source, pretrain_name):
    conf.train_mode = TrainMode.manipulate
    conf.manipulate_mode = ManipulateMode.celebahq_all
    conf.manipulate_znormalize = True
    conf.latent_infer_path = f'checkpoints/{source.name}/latent.pkl'
    conf.batch_size = 32
    conf.lr = 1e-3
    conf.total_samples = 300_000
    # the pretraining trick (not continuing)
    conf.pretrain = PretrainConfig(pretrain_name,
                                   f'checkpoints/{source.name}/last.ckpt')
    return conf


def ffhq128_autoenc_cls():
    conf = _classifier_of(ffhq128_autoenc_130M(), ffhq128_autoenc_130M(),
                          '130M')
    conf.name = 'ffhq128_autoenc_cls'
    return conf


def ffhq256_autoenc_cls():
    """The FFHQ-trained encoder with a linear classifier trained on
    CelebA-HQ attribute labels."""
    conf = _classifier_of(ffhq256_autoenc(), ffhq256_autoenc(), '130M')
    conf.name = 'ffhq256_autoenc_cls'
    return conf


def shapes32_autoenc_cls():
    """The demo's attribute classifier, on the shapes' 11 labels."""
    conf = _classifier_of(shapes32_autoenc(), shapes32_autoenc(), 'demo')
    conf.manipulate_mode = ManipulateMode.shapes_all
    conf.batch_size = 64
    conf.total_samples = 64 * 600
    conf.ema_decay = 0.99
    conf.name = 'shapes32_autoenc_cls'
    return conf


def scenes32_autoenc_cls():
    """The attribute classifier of the scenes autoencoder (10 labels)."""
    conf = shapes32_autoenc_cls()
    source = scenes32_autoenc()
    conf.data_name = source.data_name
    conf.latent_infer_path = f'checkpoints/{source.name}/latent.pkl'
    conf.pretrain = PretrainConfig('demo',
                                   f'checkpoints/{source.name}/last.ckpt')
    conf.manipulate_mode = ManipulateMode.scenes_all
    conf.name = 'scenes32_autoenc_cls'
    return conf


CLS_TEMPLATES = ['ffhq128_autoenc_cls', 'ffhq256_autoenc_cls',
                 'shapes32_autoenc_cls', 'scenes32_autoenc_cls']

__all__ = list(templates.__all__) + CLS_TEMPLATES + ['ClsModel', 'train_cls']
