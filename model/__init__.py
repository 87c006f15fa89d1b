"""Networks of DiffAE: the BeatGANs UNet, the autoencoder and the latent
MLP."""
from typing import Union

from .latentnet import LatentNetType, MLPSkipNet, MLPSkipNetConfig
from .unet import (BeatGANsEncoderConfig, BeatGANsEncoderModel,
                   BeatGANsUNetConfig, BeatGANsUNetModel)
from .unet_autoenc import BeatGANsAutoencConfig, BeatGANsAutoencModel

Model = Union[BeatGANsUNetModel, BeatGANsAutoencModel]
ModelConfig = Union[BeatGANsUNetConfig, BeatGANsAutoencConfig]

__all__ = [
    'BeatGANsAutoencConfig', 'BeatGANsAutoencModel', 'BeatGANsEncoderConfig',
    'BeatGANsEncoderModel', 'BeatGANsUNetConfig', 'BeatGANsUNetModel',
    'LatentNetType', 'MLPSkipNet', 'MLPSkipNetConfig', 'Model', 'ModelConfig'
]
