"""Building blocks of the BeatGANs UNet: residual blocks with one or two
conditions, attention, up/down-sampling.

Module and parameter names are those of the official checkpoints.
"""
from abc import abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from config_base import BaseConfig

from .nn import (avg_pool_nd, conv_nd, linear, normalization,
                 torch_checkpoint, zero_module)


class TimestepBlock(nn.Module):
    """A module whose forward takes the time embedding ``emb``, the z_sem
    embedding ``cond`` and a decoder ``lateral`` besides ``x``."""

    @abstractmethod
    def forward(self, x, emb=None, cond=None, lateral=None):
        ...


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that hands the conditions to the children that take them."""

    def forward(self, x, emb=None, cond=None, lateral=None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb=emb, cond=cond, lateral=lateral)
            else:
                x = layer(x)
        return x


@dataclass
class ResBlockConfig(BaseConfig):
    channels: int
    emb_channels: Optional[int]
    dropout: float
    out_channels: int = None
    # condition the block on time (and z_sem when two_cond)
    use_condition: bool = True
    # 3x3 instead of 1x1 conv on the skip path when channels change
    use_conv: bool = False
    dims: int = 2
    use_checkpoint: bool = False
    up: bool = False
    down: bool = False
    # condition on both the time embedding and z_sem
    two_cond: bool = False
    # channels of the z_sem embedding (default: emb_channels)
    cond_emb_channels: int = None
    # decoder block that receives an encoder lateral (concatenated to x)
    has_lateral: bool = False
    lateral_channels: int = None
    # zero-initialise the last conv of the out path
    use_zero_module: bool = True

    def __post_init__(self):
        self.out_channels = self.out_channels or self.channels
        self.cond_emb_channels = self.cond_emb_channels or self.emb_channels

    def make_model(self):
        return ResBlock(self)


class ResBlock(TimestepBlock):
    """Residual block.

    in_layers:  norm -> SiLU -> [resample] -> conv
    out_layers: norm -> h*(1+s_t)+b_t -> h*(1+s_z) -> SiLU -> dropout -> conv
    (out_layers only exist for conditioned blocks; the encoder's blocks are
    unconditioned and end after in_layers).
    """

    def __init__(self, conf: ResBlockConfig):
        super().__init__()
        self.conf = conf
        assert conf.lateral_channels is None
        self.in_layers = nn.Sequential(
            normalization(conf.channels),
            nn.SiLU(),
            conv_nd(conf.dims, conf.channels, conf.out_channels, 3,
                    padding=1),
        )
        self.updown = conf.up or conf.down
        if conf.up:
            self.h_upd = Upsample(conf.channels, False, conf.dims)
            self.x_upd = Upsample(conf.channels, False, conf.dims)
        elif conf.down:
            self.h_upd = Downsample(conf.channels, False, conf.dims)
            self.x_upd = Downsample(conf.channels, False, conf.dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        if conf.use_condition:
            # time embedding -> (scale, shift)
            self.emb_layers = nn.Sequential(
                nn.SiLU(),
                linear(conf.emb_channels, 2 * conf.out_channels),
            )
            if conf.two_cond:
                # z_sem -> scale
                self.cond_emb_layers = nn.Sequential(
                    nn.SiLU(),
                    linear(conf.cond_emb_channels, conf.out_channels),
                )
            conv = conv_nd(conf.dims, conf.out_channels, conf.out_channels,
                           3, padding=1)
            if conf.use_zero_module:
                conv = zero_module(conv)
            self.out_layers = nn.Sequential(
                normalization(conf.out_channels),
                nn.SiLU(),
                nn.Dropout(p=conf.dropout),
                conv,
            )

        if conf.out_channels == conf.channels:
            self.skip_connection = nn.Identity()
        else:
            k = 3 if conf.use_conv else 1
            self.skip_connection = conv_nd(conf.dims, conf.channels,
                                           conf.out_channels, k,
                                           padding=k // 2)

    def forward(self, x, emb=None, cond=None, lateral=None):
        return torch_checkpoint(self._forward, (x, emb, cond, lateral),
                                self.conf.use_checkpoint)

    def _forward(self, x, emb=None, cond=None, lateral=None):
        if self.conf.has_lateral:
            assert lateral is not None, 'this decoder block needs a lateral'
            x = torch.cat([x, lateral], dim=1)

        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)

        if self.conf.use_condition:
            h = self._apply_conditions(h, emb, cond)
        return self.skip_connection(x) + h

    def _apply_conditions(self, h, emb, cond):
        norm, act, drop, conv = self.out_layers
        h = norm(h)
        # As in the reference, z_sem is only applied together with the time
        # condition (a block that gets no time embedding ignores z_sem).
        if emb is not None:
            scale, shift = self._expand(self.emb_layers(emb).type(h.dtype),
                                        h).chunk(2, dim=1)
            h = h * (1 + scale) + shift
            if self.conf.two_cond and cond is not None:
                s = self._expand(self.cond_emb_layers(cond).type(h.dtype), h)
                h = h * (1 + s)
        return conv(drop(act(h)))

    @staticmethod
    def _expand(v, like):
        return v.reshape(*v.shape, *([1] * (like.dim() - v.dim())))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, channels, self.out_channels, 3,
                                padding=1)

    def forward(self, x):
        assert x.shape[1] == self.channels
        if self.dims == 3:
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2),
                              mode='nearest')
        else:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    """x2 downsampling by a strided 3x3 conv or by average pooling."""

    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, channels, self.out_channels, 3,
                              stride=stride, padding=1)
        else:
            assert self.channels == self.out_channels
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x):
        assert x.shape[1] == self.channels
        return self.op(x)


class AttentionBlock(nn.Module):
    """Self-attention over spatial positions.

    The head split is the reference's "legacy" order: ``qkv`` (B, 3C, L) is
    viewed as (B*heads, 3C/heads, L) and then split into q, k, v. The product
    runs through ``scaled_dot_product_attention`` (scale 1/sqrt(ch), the same
    as the reference's 1/sqrt(sqrt(ch)) on q and k each).
    """

    def __init__(self, channels, num_heads=1, num_head_channels=-1,
                 use_checkpoint=False, use_new_attention_order=False):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0, (
                f'channels {channels} not divisible by num_head_channels '
                f'{num_head_channels}')
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        # split q, k, v before the heads (never used by the official
        # templates; kept for config compatibility)
        self.new_order = use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x):
        return torch_checkpoint(self._forward, (x, ), self.use_checkpoint)

    def _forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads,
                          self.new_order)
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


def qkv_attention(qkv: torch.Tensor, n_heads: int,
                  new_order: bool = False) -> torch.Tensor:
    """Attention of a packed (B, 3*H*C, L) tensor; returns (B, H*C, L)."""
    bs, width, length = qkv.shape
    assert width % (3 * n_heads) == 0
    ch = width // (3 * n_heads)
    if new_order:
        q, k, v = (t.reshape(bs * n_heads, ch, length)
                   for t in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    # (N, L, ch) layout for SDPA
    a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                       v.transpose(1, 2),
                                       scale=ch**-0.5)
    return a.transpose(1, 2).reshape(bs, -1, length)
