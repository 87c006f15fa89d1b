"""Enumerations that name every configurable choice of DiffAE.

The values are the official ones: they appear in config names, in saved
hyper-parameters and in the golden recipes (``"l1"`` means ``LossType.l1``).
"""
from enum import Enum

from torch import nn


class TrainMode(Enum):
    # training the linear attribute classifier on z_sem
    manipulate = 'manipulate'
    # the main mode: semantic encoder + conditional DDIM trained together
    diffusion = 'diffusion'
    # a DDIM fitted to (z-normalised) inferred z_sem
    latent_diffusion = 'latentdiffusion'

    def is_manipulate(self):
        return self is TrainMode.manipulate

    def is_diffusion(self):
        return self in (TrainMode.diffusion, TrainMode.latent_diffusion)

    def is_autoenc(self):
        return self is TrainMode.diffusion

    def is_latent_diffusion(self):
        return self is TrainMode.latent_diffusion

    def use_latent_net(self):
        return self.is_latent_diffusion()

    def require_dataset_infer(self):
        """Whether training needs z_sem of the whole dataset beforehand."""
        return self in (TrainMode.latent_diffusion, TrainMode.manipulate)


class ManipulateMode(Enum):
    """Which labelled data the attribute classifier is trained on."""
    celebahq_all = 'celebahq_all'
    d2c_fewshot = 'd2cfewshot'
    d2c_fewshot_allneg = 'd2cfewshotallneg'
    # the built-in demo dataset (coloured shapes with known attributes)
    shapes_all = 'shapes_all'
    # the second built-in dataset (landscape scenes, scenes_data.py)
    scenes_all = 'scenes_all'

    def is_celeba_attr(self):
        return self in (ManipulateMode.d2c_fewshot,
                        ManipulateMode.d2c_fewshot_allneg,
                        ManipulateMode.celebahq_all)

    def is_single_class(self):
        return self in (ManipulateMode.d2c_fewshot,
                        ManipulateMode.d2c_fewshot_allneg)

    def is_fewshot(self):
        return self.is_single_class()

    def is_fewshot_allneg(self):
        return self is ManipulateMode.d2c_fewshot_allneg


class ModelType(Enum):
    # unconditional DDPM/DDIM
    ddpm = 'ddpm'
    # diffusion autoencoder: needs z_sem (or an image to encode) to render
    autoencoder = 'autoencoder'

    def has_autoenc(self):
        return self is ModelType.autoencoder

    def can_sample(self):
        return self is ModelType.ddpm


class ModelName(Enum):
    beatgans_ddpm = 'beatgans_ddpm'
    beatgans_autoenc = 'beatgans_autoenc'


class ModelMeanType(Enum):
    eps = 'eps'  # the network predicts the noise (official)
    # opt-in (this project): the network predicts the clean image x_0, or
    # v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho, 2022)
    start_x = 'start_x'
    v = 'v'


class ModelVarType(Enum):
    # posterior variance beta~_t
    fixed_small = 'fixed_small'
    # beta_t (with the first step set to beta~_1)
    fixed_large = 'fixed_large'


class LossType(Enum):
    mse = 'mse'
    l1 = 'l1'


class GenerativeType(Enum):
    """How a sample is generated."""
    ddpm = 'ddpm'
    ddim = 'ddim'
    # opt-in: DPM-Solver++(2M), the second-order multistep ODE solver (Lu et
    # al. 2022) on DDIM's steps; deterministic, inverts like DDIM
    dpmpp_2m = 'dpmpp_2m'


class OptimizerType(Enum):
    adam = 'adam'
    adamw = 'adamw'


class Activation(Enum):
    none = 'none'
    relu = 'relu'
    lrelu = 'lrelu'
    silu = 'silu'
    tanh = 'tanh'

    def get_act(self) -> nn.Module:
        if self is Activation.none:
            return nn.Identity()
        if self is Activation.relu:
            return nn.ReLU()
        if self is Activation.lrelu:
            return nn.LeakyReLU(negative_slope=0.2)
        if self is Activation.silu:
            return nn.SiLU()
        if self is Activation.tanh:
            return nn.Tanh()
        raise NotImplementedError(self)


class ManipulateLossType(Enum):
    bce = 'bce'
    mse = 'mse'


# LPIPS trunks (lpips.LPIPS(net=...)) that the opt-in perceptual training
# loss can use (conf.lpips_loss_net); metrics.py knows their weight files
LPIPS_NETS = ('alex', 'vgg', 'squeeze')
