"""The latent DPM network: an MLP with skip connections from its input."""
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Tuple

import torch
from torch import nn
from torch.nn import init

from choices import Activation
from config_base import BaseConfig

from .nn import timestep_embedding


class LatentNetType(Enum):
    none = 'none'
    # MLP whose hidden layers also see the input z (the paper's latent DPM)
    skip = 'skip'


class LatentNetReturn(NamedTuple):
    pred: torch.Tensor = None


@dataclass
class MLPSkipNetConfig(BaseConfig):
    num_channels: int
    skip_layers: Tuple[int]
    num_hid_channels: int
    num_layers: int
    num_time_emb_channels: int = 64
    activation: Activation = Activation.silu
    use_norm: bool = True
    condition_bias: float = 1
    dropout: float = 0
    last_act: Activation = Activation.none
    num_time_layers: int = 2
    time_last_act: bool = False

    def make_model(self):
        return MLPSkipNet(self)


class MLPSkipNet(nn.Module):
    """eps-prediction network for z_sem.

    Every layer listed in ``skip_layers`` concatenates the ORIGINAL input z
    to its input. Conditioned layers: linear -> x*(condition_bias + t_emb)
    -> LayerNorm -> act; the last layer is a plain linear.
    """

    def __init__(self, conf: MLPSkipNetConfig):
        super().__init__()
        self.conf = conf
        layers = []
        for i in range(conf.num_time_layers):
            a = conf.num_time_emb_channels if i == 0 else conf.num_channels
            layers.append(nn.Linear(a, conf.num_channels))
            if i < conf.num_time_layers - 1 or conf.time_last_act:
                layers.append(conf.activation.get_act())
        self.time_embed = nn.Sequential(*layers)

        self.layers = nn.ModuleList([])
        for i in range(conf.num_layers):
            last = i == conf.num_layers - 1
            a = conf.num_channels if i == 0 else conf.num_hid_channels
            b = conf.num_channels if last else conf.num_hid_channels
            if i in conf.skip_layers:
                a += conf.num_channels
            self.layers.append(
                MLPLNAct(
                    a,
                    b,
                    norm=False if last else conf.use_norm,
                    activation=Activation.none if last else conf.activation,
                    cond_channels=conf.num_channels,
                    use_cond=not last,
                    condition_bias=conf.condition_bias,
                    dropout=0 if last else conf.dropout,
                ))
        self.last_act = conf.last_act.get_act()

    def forward(self, x, t, **kwargs):
        cond = self.time_embed(
            timestep_embedding(t, self.conf.num_time_emb_channels))
        h = x
        for i, layer in enumerate(self.layers):
            if i in self.conf.skip_layers:
                h = torch.cat([h, x], dim=1)
            h = layer(x=h, cond=cond)
        return LatentNetReturn(self.last_act(h))


class MLPLNAct(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm: bool,
                 use_cond: bool, activation: Activation, cond_channels: int,
                 condition_bias: float = 0, dropout: float = 0):
        super().__init__()
        self.activation = activation
        self.condition_bias = condition_bias
        self.use_cond = use_cond
        self.linear = nn.Linear(in_channels, out_channels)
        self.act = activation.get_act()
        if use_cond:
            self.linear_emb = nn.Linear(cond_channels, out_channels)
            # the same Linear, registered twice as in the official keys
            self.cond_layers = nn.Sequential(self.act, self.linear_emb)
        self.norm = nn.LayerNorm(out_channels) if norm else nn.Identity()
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        for module in self.modules():
            if not isinstance(module, nn.Linear):
                continue
            if self.activation in (Activation.relu, Activation.silu):
                init.kaiming_normal_(module.weight, a=0, nonlinearity='relu')
            elif self.activation == Activation.lrelu:
                init.kaiming_normal_(module.weight, a=0.2,
                                     nonlinearity='leaky_relu')

    def forward(self, x, cond=None):
        x = self.linear(x)
        if self.use_cond:
            x = x * (self.condition_bias + self.cond_layers(cond))
        x = self.norm(x)
        x = self.act(x)
        return self.dropout(x)
