"""The BeatGANs UNet (unconditional DDIM backbone) and the half-UNet used as
the semantic encoder."""
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Sequence, Tuple

import torch
from torch import nn

from config_base import BaseConfig

from .blocks import (AttentionBlock, Downsample, ResBlockConfig,
                     TimestepEmbedSequential, Upsample)
from .nn import conv_nd, linear, normalization, timestep_embedding, zero_module


@dataclass
class BeatGANsUNetConfig(BaseConfig):
    image_size: int = 64
    in_channels: int = 3
    # base channels, multiplied by channel_mult per resolution level
    model_channels: int = 64
    # 3 = predict eps only (the variance is analytic)
    out_channels: int = 3
    # res-blocks per level; the decoder has one more per level
    num_res_blocks: int = 2
    # res-blocks per level on the encoding side (default: num_res_blocks)
    num_input_res_blocks: int = None
    # time (and z_sem) embedding channels
    embed_channels: int = 512
    # resolutions at which self-attention is applied
    attention_resolutions: Tuple[int] = (16, )
    # input channels of the time MLP (default: model_channels)
    time_embed_channels: int = None
    dropout: float = 0.1
    channel_mult: Tuple[int] = (1, 2, 4, 8)
    input_channel_mult: Tuple[int] = None
    conv_resample: bool = True
    dims: int = 2
    # class conditioning is not supported (legacy field)
    num_classes: int = None
    # gradient checkpointing of every block
    use_checkpoint: bool = False
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    # res-blocks (instead of plain convs/pools) for up/down-sampling
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    # condition each res-block on time and z_sem separately
    resnet_two_cond: bool = False
    resnet_cond_channels: int = None
    # zero-initialise the last conv of each res-block and of the output
    resnet_use_zero_module: bool = True
    # gradient checkpointing of the attention blocks only
    attn_checkpoint: bool = False

    def make_model(self):
        return BeatGANsUNetModel(self)


class Return(NamedTuple):
    pred: torch.Tensor


class DownPath(NamedTuple):
    """What ``build_down_path`` made."""
    blocks: nn.ModuleList
    # channels and resolution at the bottom
    channels: int
    resolution: int
    # per level, the output channels of each of its blocks (the UNet's
    # skip connections)
    skip_chans: List[List[int]]


def build_down_path(conf, res_kwargs: dict,
                    attention: Callable[[int], nn.Module],
                    channel_mult: Sequence[float], num_res_blocks: int,
                    n_levels: int) -> DownPath:
    """The encoding path shared by the UNet and the semantic encoder: an
    input conv, then per level ``num_res_blocks`` res-blocks (with
    ``attention`` at ``conf.attention_resolutions``) and, except after
    level ``n_levels - 1``, a down-sampler. Both models keep these blocks
    as ``input_blocks``, so the official state-dict keys stay the same."""
    ch = int(conf.channel_mult[0] * conf.model_channels)
    blocks = nn.ModuleList([
        TimestepEmbedSequential(
            conv_nd(conf.dims, conf.in_channels, ch, 3, padding=1))
    ])
    skip_chans = [[] for _ in range(n_levels)]
    skip_chans[0].append(ch)
    resolution = conf.image_size
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            out_ch = int(mult * conf.model_channels)
            layers = [
                ResBlockConfig(ch, out_channels=out_ch,
                               **res_kwargs).make_model()
            ]
            ch = out_ch
            if resolution in conf.attention_resolutions:
                layers.append(attention(ch))
            blocks.append(TimestepEmbedSequential(*layers))
            skip_chans[level].append(ch)
        if level != n_levels - 1:
            resolution //= 2
            if conf.resblock_updown:
                down = ResBlockConfig(ch, out_channels=ch, down=True,
                                      **res_kwargs).make_model()
            else:
                down = Downsample(ch, conf.conv_resample, dims=conf.dims,
                                  out_channels=ch)
            blocks.append(TimestepEmbedSequential(down))
            skip_chans[level + 1].append(ch)
    return DownPath(blocks, ch, resolution, skip_chans)


def build_middle_block(ch: int, res_kwargs: dict,
                       attention: Callable[[int], nn.Module]):
    """res-block, attention, res-block at the bottom resolution."""
    return TimestepEmbedSequential(
        ResBlockConfig(ch, **res_kwargs).make_model(),
        attention(ch),
        ResBlockConfig(ch, **res_kwargs).make_model(),
    )


def _attention_factory(conf, use_checkpoint: bool):
    def attention(channels, heads=conf.num_heads):
        return AttentionBlock(
            channels,
            use_checkpoint=use_checkpoint,
            num_heads=heads,
            num_head_channels=conf.num_head_channels,
            use_new_attention_order=conf.use_new_attention_order)
    return attention


class BeatGANsUNetModel(nn.Module):
    def __init__(self, conf: BeatGANsUNetConfig):
        super().__init__()
        self.conf = conf
        self.num_heads_upsample = (conf.num_heads
                                   if conf.num_heads_upsample == -1 else
                                   conf.num_heads_upsample)
        self.dtype = torch.float32
        self.time_emb_channels = (conf.time_embed_channels
                                  or conf.model_channels)
        self.time_embed = nn.Sequential(
            linear(self.time_emb_channels, conf.embed_channels),
            nn.SiLU(),
            linear(conf.embed_channels, conf.embed_channels),
        )
        if conf.num_classes is not None:
            self.label_emb = nn.Embedding(conf.num_classes,
                                          conf.embed_channels)
        res_kwargs = dict(
            emb_channels=conf.embed_channels,
            dropout=conf.dropout,
            dims=conf.dims,
            use_checkpoint=conf.use_checkpoint,
            use_condition=True,
            two_cond=conf.resnet_two_cond,
            use_zero_module=conf.resnet_use_zero_module,
            cond_emb_channels=conf.resnet_cond_channels,
        )
        attention = _attention_factory(
            conf, conf.use_checkpoint or conf.attn_checkpoint)
        down = build_down_path(
            conf, res_kwargs, attention,
            conf.input_channel_mult or conf.channel_mult,
            conf.num_input_res_blocks or conf.num_res_blocks,
            n_levels=len(conf.channel_mult))
        self.input_blocks = down.blocks
        # number of encoder blocks per resolution level
        self.input_num_blocks = [len(c) for c in down.skip_chans]
        self.middle_block = build_middle_block(down.channels, res_kwargs,
                                               attention)
        ch = self._build_up_path(res_kwargs, attention, down)
        input_ch = int(conf.channel_mult[0] * conf.model_channels)
        out_conv = conv_nd(conf.dims, input_ch, conf.out_channels, 3,
                           padding=1)
        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(out_conv) if conf.resnet_use_zero_module else out_conv,
        )

    def _build_up_path(self, res_kwargs, attention, down: DownPath) -> int:
        """The decoder (``output_blocks``), taking the down path's skips
        level by level in reverse; returns its output channels."""
        conf = self.conf
        skip_chans = [list(c) for c in down.skip_chans]
        ch, resolution = down.channels, down.resolution
        self.output_blocks = nn.ModuleList([])
        # number of decoder blocks per resolution level
        self.output_num_blocks = [0] * len(conf.channel_mult)
        for level, mult in reversed(list(enumerate(conf.channel_mult))):
            for i in range(conf.num_res_blocks + 1):
                # when the decoder has more blocks than the encoder produced
                # skips, the remaining blocks get no lateral
                ich = skip_chans[level].pop() if skip_chans[level] else 0
                out_ch = int(conf.model_channels * mult)
                layers = [
                    ResBlockConfig(ch + ich, out_channels=out_ch,
                                   has_lateral=ich > 0,
                                   **res_kwargs).make_model()
                ]
                ch = out_ch
                if resolution in conf.attention_resolutions:
                    layers.append(attention(ch, self.num_heads_upsample))
                if level and i == conf.num_res_blocks:
                    resolution *= 2
                    if conf.resblock_updown:
                        layers.append(
                            ResBlockConfig(ch, out_channels=ch, up=True,
                                           **res_kwargs).make_model())
                    else:
                        layers.append(
                            Upsample(ch, conf.conv_resample, dims=conf.dims,
                                     out_channels=ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
                self.output_num_blocks[level] += 1
        return ch

    def run_unet(self, x, emb, cond=None):
        """Encoder, middle and decoder of the UNet, returning the output
        feature map before ``self.out``. Skips are taken per level and popped
        in reverse; a block finds no lateral once its level runs out."""
        n_levels = len(self.input_num_blocks)
        hs = [[] for _ in range(n_levels)]
        h = x.type(self.dtype)
        k = 0
        for level in range(n_levels):
            for _ in range(self.input_num_blocks[level]):
                h = self.input_blocks[k](h, emb=emb, cond=cond)
                hs[level].append(h)
                k += 1
        h = self.middle_block(h, emb=emb, cond=cond)
        k = 0
        for i in range(n_levels):
            for _ in range(self.output_num_blocks[i]):
                lateral = hs[-i - 1].pop() if hs[-i - 1] else None
                h = self.output_blocks[k](h, emb=emb, cond=cond,
                                          lateral=lateral)
                k += 1
        return h

    def forward(self, x, t, y=None, **kwargs):
        """Predict eps for ``x`` at timesteps ``t`` (a 1-D tensor)."""
        assert (y is not None) == (self.conf.num_classes is not None), (
            'must specify y if and only if the model is class-conditional')
        if self.conf.num_classes is not None:
            raise NotImplementedError('class conditioning')
        emb = self.time_embed(timestep_embedding(t, self.time_emb_channels))
        h = self.run_unet(x, emb)
        return Return(pred=self.out(h.type(x.dtype)))


@dataclass
class BeatGANsEncoderConfig(BaseConfig):
    image_size: int
    in_channels: int
    model_channels: int
    out_hid_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: Tuple[int]
    dropout: float = 0
    channel_mult: Tuple[int] = (1, 2, 4, 8)
    use_time_condition: bool = True
    conv_resample: bool = True
    dims: int = 2
    use_checkpoint: bool = False
    num_heads: int = 1
    num_head_channels: int = -1
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    pool: str = 'adaptivenonzero'

    def make_model(self):
        return BeatGANsEncoderModel(self)


class BeatGANsEncoderModel(nn.Module):
    """Half UNet: the semantic encoder x0 -> z_sem."""

    def __init__(self, conf: BeatGANsEncoderConfig):
        super().__init__()
        self.conf = conf
        self.dtype = torch.float32
        if conf.use_time_condition:
            time_embed_dim = conf.model_channels * 4
            self.time_embed = nn.Sequential(
                linear(conf.model_channels, time_embed_dim),
                nn.SiLU(),
                linear(time_embed_dim, time_embed_dim),
            )
        else:
            time_embed_dim = None
        res_kwargs = dict(emb_channels=time_embed_dim,
                          dropout=conf.dropout,
                          dims=conf.dims,
                          use_condition=conf.use_time_condition,
                          use_checkpoint=conf.use_checkpoint)
        attention = _attention_factory(conf, conf.use_checkpoint)
        down = build_down_path(conf, res_kwargs, attention,
                               conf.channel_mult, conf.num_res_blocks,
                               n_levels=len(conf.channel_mult))
        self.input_blocks = down.blocks
        ch = down.channels
        self.middle_block = build_middle_block(ch, res_kwargs, attention)
        if conf.pool == 'adaptivenonzero':
            self.out = nn.Sequential(
                normalization(ch),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                conv_nd(conf.dims, ch, conf.out_channels, 1),
                nn.Flatten(),
            )
        else:
            raise NotImplementedError(
                f"encoder pooling '{conf.pool}' is not supported "
                "(the official models use 'adaptivenonzero')")

    def forward(self, x, t=None, return_2d_feature=False):
        """(N, C, H, W) image in [-1, 1] -> (N, out_channels) z_sem."""
        if self.conf.use_time_condition:
            emb = self.time_embed(
                timestep_embedding(t, self.conf.model_channels))
        else:
            emb = None
        h = x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb=emb)
        h = self.middle_block(h, emb=emb).type(x.dtype)
        h_2d = h
        h = self.out(h)
        if return_2d_feature:
            return h, h_2d
        return h
