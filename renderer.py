"""Rendering with a trained model: decoding (z_sem, x_T) into images,
unconditional sampling through the latent DPM, interpolation and attribute
manipulation. Images are in [-1, 1] unless a docstring says otherwise."""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from choices import TrainMode
from config import TrainConfig
from diffusion import Sampler
from tensor_util import zdenormalize
from validation import missing_latents_message


def render_uncondition(conf: TrainConfig, model, x_T: torch.Tensor,
                       sampler: Sampler, latent_sampler: Optional[Sampler],
                       conds_mean=None, conds_std=None,
                       clip_latent_noise: bool = False,
                       latent_noise: torch.Tensor = None,
                       progress: bool = False):
    """Unconditional samples from ``x_T``.

    A DDIM model samples directly. A latent model first samples z_sem with
    the latent DPM (from ``latent_noise``, fresh noise if None), de-normalises
    it with ``conds_mean``/``conds_std`` when trained z-normalised, then
    decodes (z_sem, x_T)."""
    if conf.train_mode == TrainMode.diffusion:
        assert conf.model_type.can_sample(), (
            'an autoencoder cannot sample unconditionally without a latent '
            'DPM: use a *_autoenc_latent template')
        return sampler.sample(model=model, noise=x_T, progress=progress)
    if conf.train_mode.is_latent_diffusion():
        cond = sample_latent(conf, model, len(x_T), latent_sampler,
                             conds_mean, conds_std, x_T.device,
                             clip_latent_noise, latent_noise, progress)
        return sampler.sample(model=model, noise=x_T, cond=cond,
                              progress=progress)
    raise NotImplementedError(conf.train_mode)


def sample_latent(conf: TrainConfig, model, n: int, latent_sampler: Sampler,
                  conds_mean=None, conds_std=None, device=None,
                  clip_latent_noise: bool = False,
                  latent_noise: torch.Tensor = None, progress: bool = False):
    """``n`` z_sem drawn from the latent DPM (de-normalised)."""
    if latent_noise is None:
        latent_noise = torch.randn(n, conf.style_ch, device=device)
    if clip_latent_noise:
        latent_noise = latent_noise.clip(-1, 1)
    cond = latent_sampler.sample(model=model.latent_net, noise=latent_noise,
                                 clip_denoised=conf.latent_clip_sample,
                                 progress=progress)
    if conf.latent_znormalize:
        if conds_mean is None or conds_std is None:
            raise ValueError('this latent DPM was trained on z-normalised '
                             'z_sem, without its statistics: '
                             + missing_latents_message(conf))
        cond = zdenormalize(cond, conds_mean, conds_std)
    return cond


def render_condition(conf: TrainConfig, model, x_T: torch.Tensor,
                     sampler: Sampler, x_start=None, cond=None,
                     progress: bool = False):
    """Decode (z_sem, x_T); z_sem is ``cond`` or the encoding of
    ``x_start``."""
    if not conf.model_type.has_autoenc():
        raise NotImplementedError(
            'render_condition needs an autoencoder template')
    if cond is None:
        cond = model.encoder(x_start)
    return sampler.sample(model=model, noise=x_T,
                          model_kwargs={'cond': cond}, progress=progress)


def encode_stochastic(model, sampler: Sampler, x: torch.Tensor,
                      cond: torch.Tensor, progress: bool = False):
    """Invert the sampler (DDIM, or DPM-Solver++(2M) for a dpmpp_2m
    process): the x_T that decodes (with ``cond``) back into ``x``."""
    return sampler.reverse_sample_loop(model, x, model_kwargs={'cond': cond},
                                       progress=progress)['sample']


def slerp(a: torch.Tensor, b: torch.Tensor, alpha):
    """Spherical interpolation between same-shaped (N, ...) tensors over
    all non-batch dims; ``alpha`` is a float or an (N,) tensor."""
    assert a.shape == b.shape, (a.shape, b.shape)
    alpha = torch.as_tensor(alpha, dtype=a.dtype,
                            device=a.device).reshape(-1, 1)
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (F.normalize(fa, dim=1) * F.normalize(fb, dim=1)).sum(
        1, keepdim=True).clamp(-1, 1)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    # (nearly) parallel vectors: fall back to linear interpolation
    small = sin.abs() < 1e-6
    sin = torch.where(small, torch.ones_like(sin), sin)
    w_a = torch.where(small, 1 - alpha, torch.sin((1 - alpha) * theta) / sin)
    w_b = torch.where(small, alpha.expand_as(theta),
                      torch.sin(alpha * theta) / sin)
    return (w_a * fa + w_b * fb).reshape(a.shape)


def interpolate(model, sampler: Sampler, cond_a, xT_a, cond_b, xT_b,
                alphas: Sequence[float], progress: bool = False):
    """Images along the path between two encoded images: z_sem is
    interpolated linearly, x_T spherically (the paper's choice). Returns
    (len(alphas), C, H, W) in [-1, 1]; alphas 0 and 1 give the two
    reconstructions."""
    alpha = torch.tensor(list(alphas), dtype=cond_a.dtype,
                         device=cond_a.device)
    cond = torch.lerp(cond_a.expand(len(alpha), -1),
                      cond_b.expand(len(alpha), -1), alpha[:, None])
    xT = slerp(xT_a.expand(len(alpha), *xT_a.shape[1:]),
               xT_b.expand(len(alpha), *xT_b.shape[1:]), alpha)
    return sampler.sample(model=model, noise=xT,
                          model_kwargs={'cond': cond}, progress=progress)


def manipulate_cond(cond, direction, amount: float, normalize=None,
                    denormalize=None):
    """Move z_sem along a classifier direction: in the classifier's
    normalised space, add ``amount * sqrt(C)`` times the unit direction
    (the official notebook's recipe, C = z_sem channels)."""
    direction = F.normalize(direction.reshape(1, -1).to(cond), dim=1)
    z = normalize(cond) if normalize is not None else cond
    z = z + amount * math.sqrt(cond.shape[1]) * direction
    return denormalize(z) if denormalize is not None else z
