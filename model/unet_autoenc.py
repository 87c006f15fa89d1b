"""The diffusion autoencoder: semantic encoder + conditional UNet."""
from dataclasses import dataclass
from typing import NamedTuple, Tuple

import torch
from torch import Tensor, nn

from .blocks import ResBlock
from .latentnet import MLPSkipNetConfig
from .nn import linear, timestep_embedding
from .unet import BeatGANsEncoderConfig, BeatGANsUNetConfig, BeatGANsUNetModel


@dataclass
class BeatGANsAutoencConfig(BeatGANsUNetConfig):
    # z_sem channels (the paper's 512)
    enc_out_channels: int = 512
    enc_attn_resolutions: Tuple[int] = None
    enc_pool: str = 'depthconv'
    enc_num_res_block: int = 2
    enc_channel_mult: Tuple[int] = None
    enc_grad_checkpoint: bool = False
    # the latent DPM, when the template trains one
    latent_net_conf: MLPSkipNetConfig = None

    def make_model(self):
        return BeatGANsAutoencModel(self)


class AutoencReturn(NamedTuple):
    pred: Tensor
    cond: Tensor = None


class EmbedReturn(NamedTuple):
    # style (z_sem) condition
    emb: Tensor = None
    # time embedding only
    time_emb: Tensor = None
    style: Tensor = None


class TimeStyleSeperateEmbed(nn.Module):
    """Embeds time with an MLP and passes z_sem through unchanged."""

    def __init__(self, time_channels, time_out_channels):
        super().__init__()
        self.time_embed = nn.Sequential(
            linear(time_channels, time_out_channels),
            nn.SiLU(),
            linear(time_out_channels, time_out_channels),
        )
        self.style = nn.Identity()

    def forward(self, time_emb=None, cond=None, **kwargs):
        time_emb = None if time_emb is None else self.time_embed(time_emb)
        style = self.style(cond)
        return EmbedReturn(emb=style, time_emb=time_emb, style=style)


class BeatGANsAutoencModel(BeatGANsUNetModel):
    def __init__(self, conf: BeatGANsAutoencConfig):
        super().__init__(conf)
        self.conf = conf
        # time and z_sem enter every res-block separately
        self.time_embed = TimeStyleSeperateEmbed(
            time_channels=conf.model_channels,
            time_out_channels=conf.embed_channels,
        )
        self.encoder = BeatGANsEncoderConfig(
            image_size=conf.image_size,
            in_channels=conf.in_channels,
            model_channels=conf.model_channels,
            out_hid_channels=conf.enc_out_channels,
            out_channels=conf.enc_out_channels,
            num_res_blocks=conf.enc_num_res_block,
            attention_resolutions=(conf.enc_attn_resolutions
                                   or conf.attention_resolutions),
            dropout=conf.dropout,
            channel_mult=conf.enc_channel_mult or conf.channel_mult,
            use_time_condition=False,
            conv_resample=conf.conv_resample,
            dims=conf.dims,
            use_checkpoint=conf.use_checkpoint or conf.enc_grad_checkpoint,
            num_heads=conf.num_heads,
            num_head_channels=conf.num_head_channels,
            resblock_updown=conf.resblock_updown,
            use_new_attention_order=conf.use_new_attention_order,
            pool=conf.enc_pool,
        ).make_model()
        if conf.latent_net_conf is not None:
            self.latent_net = conf.latent_net_conf.make_model()

    def encode(self, x):
        """x0 in [-1, 1] -> {'cond': z_sem}."""
        return {'cond': self.encoder.forward(x)}

    def _res_blocks(self):
        for part in (self.input_blocks, self.middle_block,
                     self.output_blocks):
            for m in part.modules():
                if isinstance(m, ResBlock):
                    yield m

    @property
    def stylespace_sizes(self):
        return [
            m.cond_emb_layers[-1].weight.shape[0] for m in self._res_blocks()
        ]

    def encode_stylespace(self, x, return_vector: bool = True):
        """Per-block z_sem projections ("style space") of images ``x``."""
        cond = self.encoder.forward(x)
        S = [m.cond_emb_layers(cond) for m in self._res_blocks()]
        return torch.cat(S, dim=1) if return_vector else S

    def forward(self, x, t, y=None, x_start=None, cond=None, style=None,
                noise=None, t_cond=None, **kwargs):
        """Predict eps of ``x`` at ``t`` given z_sem ``cond`` (or the image
        ``x_start`` to encode). Returns ``AutoencReturn(pred, cond)``."""
        if noise is not None:
            raise NotImplementedError('noise-to-cond is not supported')
        if cond is None:
            if x is not None:
                assert len(x) == len(x_start), f'{len(x)} != {len(x_start)}'
            cond = self.encode(x_start)['cond']
        if t_cond is None:
            t_cond = t
        if t is not None:
            t_emb = timestep_embedding(t, self.conf.model_channels)
            t_cond_emb = timestep_embedding(t_cond, self.conf.model_channels)
        else:
            t_emb = t_cond_emb = None
        if not self.conf.resnet_two_cond:
            raise NotImplementedError('the autoencoder needs resnet_two_cond')
        res = self.time_embed(time_emb=t_emb, cond=cond,
                              time_cond_emb=t_cond_emb)
        assert (y is not None) == (self.conf.num_classes is not None), (
            'must specify y if and only if the model is class-conditional')
        emb, cond_emb = res.time_emb, res.emb

        h = self.run_unet(x, emb, cond_emb)
        return AutoencReturn(pred=self.out(h), cond=cond)
