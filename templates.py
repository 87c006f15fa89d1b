"""The official training templates (each returns a ready TrainConfig).

``from templates import *`` gives a notebook what it used in the official
code: the template functions, TrainConfig and the enums, LitModel and
train(), the datasets, and torch / F / math. Heavy modules (Lightning, the
datasets) load on first use of those names.
"""
import importlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the demo datasets register with data_registry when imported
import scenes_data  # noqa: F401
import shapes_data  # noqa: F401
from choices import (Activation, GenerativeType, LossType, ManipulateLossType,
                     ManipulateMode, ModelMeanType, ModelName, ModelType,
                     ModelVarType, OptimizerType, TrainMode)
from config import PretrainConfig, TrainConfig, data_paths
from model import LatentNetType

# names a notebook uses, resolved lazily from their modules
_LAZY = {
    'LitModel': 'experiment',
    'train': 'experiment',
    'ImageDataset': 'dataset',
    'CelebAttrDataset': 'dataset',
    'CelebHQAttrDataset': 'dataset',
    'SubsetDataset': 'dataset',
    'ShapesDataset': 'shapes_data',
    'ShapesAttrDataset': 'shapes_data',
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'templates' has no attribute '{name}'")


def ddpm():
    """Base configuration of all DDIM (unconditional) models."""
    conf = TrainConfig()
    conf.batch_size = 32
    conf.beatgans_gen_type = GenerativeType.ddim
    conf.beta_scheduler = 'linear'
    conf.data_name = 'ffhq'
    conf.diffusion_type = 'beatgans'
    conf.eval_ema_every_samples = 200_000
    conf.eval_every_samples = 200_000
    conf.fp16 = True
    conf.lr = 1e-4
    conf.model_name = ModelName.beatgans_ddpm
    conf.net_attn = (16, )
    conf.net_beatgans_attn_head = 1
    conf.net_beatgans_embed_channels = 512
    conf.net_ch_mult = (1, 2, 4, 8)
    conf.net_ch = 64
    conf.sample_size = 32
    conf.T_eval = 20
    conf.T = 1000
    conf.make_model_conf()
    return conf


def autoenc_base():
    """Base configuration of all Diff-AE models."""
    conf = TrainConfig()
    conf.batch_size = 32
    conf.beatgans_gen_type = GenerativeType.ddim
    conf.beta_scheduler = 'linear'
    conf.data_name = 'ffhq'
    conf.diffusion_type = 'beatgans'
    conf.eval_ema_every_samples = 200_000
    conf.eval_every_samples = 200_000
    conf.fp16 = True
    conf.lr = 1e-4
    conf.model_name = ModelName.beatgans_autoenc
    conf.net_attn = (16, )
    conf.net_beatgans_attn_head = 1
    conf.net_beatgans_embed_channels = 512
    conf.net_beatgans_resnet_two_cond = True
    conf.net_ch_mult = (1, 2, 4, 8)
    conf.net_ch = 64
    conf.net_enc_channel_mult = (1, 2, 4, 8, 8)
    conf.net_enc_pool = 'adaptivenonzero'
    conf.sample_size = 32
    conf.T_eval = 20
    conf.T = 1000
    conf.make_model_conf()
    return conf


def ffhq64_ddpm():
    conf = ddpm()
    conf.data_name = 'ffhqlmdb256'
    conf.warmup = 0
    conf.total_samples = 72_000_000
    conf.scale_up_gpus(4)
    return conf


def ffhq64_autoenc():
    conf = autoenc_base()
    conf.data_name = 'ffhqlmdb256'
    conf.warmup = 0
    conf.total_samples = 72_000_000
    conf.net_ch_mult = (1, 2, 4, 8)
    conf.net_enc_channel_mult = (1, 2, 4, 8, 8)
    conf.eval_every_samples = 1_000_000
    conf.eval_ema_every_samples = 1_000_000
    conf.scale_up_gpus(4)
    conf.make_model_conf()
    return conf


def celeba64d2c_ddpm():
    # as in the official code, this derives from ffhq128_ddpm (128 px)
    conf = ffhq128_ddpm()
    conf.data_name = 'celebalmdb'
    conf.eval_every_samples = 10_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.total_samples = 72_000_000
    conf.name = 'celeba64d2c_ddpm'
    return conf


def celeba64d2c_autoenc():
    conf = ffhq64_autoenc()
    conf.data_name = 'celebalmdb'
    conf.eval_every_samples = 10_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.total_samples = 72_000_000
    conf.name = 'celeba64d2c_autoenc'
    return conf


def ffhq128_ddpm():
    conf = ddpm()
    conf.data_name = 'ffhqlmdb256'
    conf.warmup = 0
    conf.total_samples = 48_000_000
    conf.img_size = 128
    conf.net_ch = 128
    # channels 128 -> 128, 128, 256, 384, 512 at 128, 64, 32, 16, 8 px
    conf.net_ch_mult = (1, 1, 2, 3, 4)
    conf.eval_every_samples = 1_000_000
    conf.eval_ema_every_samples = 1_000_000
    conf.scale_up_gpus(4)
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.make_model_conf()
    return conf


def ffhq128_autoenc_base():
    conf = autoenc_base()
    conf.data_name = 'ffhqlmdb256'
    conf.scale_up_gpus(4)
    conf.img_size = 128
    conf.net_ch = 128
    # final resolution = 8x8
    conf.net_ch_mult = (1, 1, 2, 3, 4)
    # final resolution = 4x4
    conf.net_enc_channel_mult = (1, 1, 2, 3, 4, 4)
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.make_model_conf()
    return conf


def ffhq256_autoenc():
    conf = ffhq128_autoenc_base()
    conf.img_size = 256
    conf.net_ch = 128
    conf.net_ch_mult = (1, 1, 2, 2, 4, 4)
    conf.net_enc_channel_mult = (1, 1, 2, 2, 4, 4, 4)
    conf.eval_every_samples = 10_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.total_samples = 200_000_000
    conf.batch_size = 64
    conf.make_model_conf()
    conf.name = 'ffhq256_autoenc'
    return conf


def ffhq256_autoenc_eco():
    conf = ffhq256_autoenc()
    conf.name = 'ffhq256_autoenc_eco'
    return conf


def ffhq128_ddpm_72M():
    conf = ffhq128_ddpm()
    conf.total_samples = 72_000_000
    conf.name = 'ffhq128_ddpm_72M'
    return conf


def ffhq128_autoenc_72M():
    conf = ffhq128_autoenc_base()
    conf.total_samples = 72_000_000
    conf.name = 'ffhq128_autoenc_72M'
    return conf


def ffhq128_ddpm_130M():
    conf = ffhq128_ddpm()
    conf.total_samples = 130_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.name = 'ffhq128_ddpm_130M'
    return conf


def ffhq128_autoenc_130M():
    conf = ffhq128_autoenc_base()
    conf.total_samples = 130_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.name = 'ffhq128_autoenc_130M'
    return conf


def horse128_ddpm():
    conf = ffhq128_ddpm()
    conf.data_name = 'horse256'
    conf.total_samples = 130_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.name = 'horse128_ddpm'
    return conf


def horse128_autoenc():
    conf = ffhq128_autoenc_base()
    conf.data_name = 'horse256'
    conf.total_samples = 130_000_000
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.name = 'horse128_autoenc'
    return conf


def bedroom128_ddpm():
    conf = ffhq128_ddpm()
    conf.data_name = 'bedroom256'
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.total_samples = 120_000_000
    conf.name = 'bedroom128_ddpm'
    return conf


def bedroom128_autoenc():
    conf = ffhq128_autoenc_base()
    conf.data_name = 'bedroom256'
    conf.eval_ema_every_samples = 10_000_000
    conf.eval_every_samples = 10_000_000
    conf.total_samples = 120_000_000
    conf.name = 'bedroom128_autoenc'
    return conf


def _pretrain(conf, name, source):
    conf.pretrain = PretrainConfig(
        name=name, path=f'checkpoints/{source.name}/last.ckpt')
    conf.latent_infer_path = f'checkpoints/{source.name}/latent.pkl'
    return conf


def pretrain_celeba64d2c_72M():
    return _pretrain(celeba64d2c_autoenc(), '72M', celeba64d2c_autoenc())


def pretrain_ffhq128_autoenc72M():
    conf = ffhq128_autoenc_base()
    conf.postfix = ''
    return _pretrain(conf, '72M', ffhq128_autoenc_72M())


def pretrain_ffhq128_autoenc130M():
    return _pretrain(ffhq128_autoenc_base(), '130M', ffhq128_autoenc_130M())


def pretrain_ffhq256_autoenc():
    return _pretrain(ffhq256_autoenc(), '90M', ffhq256_autoenc())


def pretrain_horse128():
    return _pretrain(horse128_autoenc(), '82M', horse128_autoenc())


def pretrain_bedroom128():
    return _pretrain(bedroom128_autoenc(), '120M', bedroom128_autoenc())


def pretrain_shapes32():
    return _pretrain(shapes32_autoenc(), 'demo', shapes32_autoenc())


def shapes32_autoenc():
    """The built-in demo: a small Diff-AE on 32x32 coloured shapes (dataset
    generated on first use), trained in about 11 minutes on 2 CPU cores in
    bf16 (a high learning rate makes the most of the few thousand steps
    such a budget allows).

    Its decoder predicts x_0 instead of the official eps (opt-in, issue
    #12 study in the README): with the eps loss the right z_sem is worth
    nothing at high noise, so at this budget the decoder ignores it and
    z_sem decoded from random x_T keeps no colour; predicting x_0 makes
    z_sem carry the colour, size, position and background (measured).
    """
    conf = autoenc_base()
    conf.data_name = 'shapes'
    conf.img_size = 32
    conf.net_ch = 32
    conf.net_ch_mult = (1, 2, 2)
    conf.net_enc_channel_mult = (1, 2, 2, 2)
    conf.net_num_res_blocks = 1
    conf.net_enc_num_res_blocks = 1
    conf.net_attn = (8, )
    conf.style_ch = 128
    conf.net_beatgans_embed_channels = 128
    conf.dropout = 0
    conf.batch_size = 32
    conf.batch_size_eval = 32
    conf.lr = 1e-3
    conf.ema_decay = 0.995
    conf.fp16 = False
    conf.precision = 'auto'
    conf.num_workers = 1
    conf.beatgans_model_mean_type = ModelMeanType.start_x
    conf.total_samples = 32 * 3000
    conf.sample_size = 16
    conf.sample_every_samples = 32 * 600
    conf.save_every_samples = 32 * 200
    conf.eval_every_samples = 0
    conf.eval_ema_every_samples = 0
    conf.T_eval = 20
    conf.name = 'shapes32_autoenc'
    conf.make_model_conf()
    return conf


def scenes32_autoenc():
    """The demo's autoencoder on the second built-in dataset, 32x32
    landscape scenes (scenes_data.py; sky, ground, horizon, sun)."""
    conf = shapes32_autoenc()
    conf.data_name = 'scenes'
    conf.name = 'scenes32_autoenc'
    conf.make_model_conf()
    return conf


TEMPLATES = [
    'ddpm', 'autoenc_base', 'ffhq64_ddpm', 'ffhq64_autoenc',
    'celeba64d2c_ddpm', 'celeba64d2c_autoenc', 'ffhq128_ddpm',
    'ffhq128_autoenc_base', 'ffhq256_autoenc', 'ffhq256_autoenc_eco',
    'ffhq128_ddpm_72M', 'ffhq128_autoenc_72M', 'ffhq128_ddpm_130M',
    'ffhq128_autoenc_130M', 'horse128_ddpm', 'horse128_autoenc',
    'bedroom128_ddpm', 'bedroom128_autoenc', 'pretrain_celeba64d2c_72M',
    'pretrain_ffhq128_autoenc72M', 'pretrain_ffhq128_autoenc130M',
    'pretrain_ffhq256_autoenc', 'pretrain_horse128', 'pretrain_bedroom128',
    'shapes32_autoenc', 'pretrain_shapes32', 'scenes32_autoenc'
]

__all__ = TEMPLATES + list(_LAZY) + [
    'Activation', 'F', 'GenerativeType', 'LatentNetType', 'LossType',
    'ManipulateLossType', 'ManipulateMode', 'ModelMeanType', 'ModelName',
    'ModelType', 'ModelVarType', 'OptimizerType', 'PretrainConfig',
    'TrainConfig', 'TrainMode', 'data_paths', 'math', 'nn', 'np', 'torch'
]
