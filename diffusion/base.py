"""Gaussian diffusion (eps prediction as official; x_0 or v prediction and a
loss weighting over timesteps opt-in): the training loss, the posterior,
DDPM ancestral sampling, deterministic DDIM and its reverse (stochastic
encoding), and the same two with DPM-Solver++(2M) (diffusion/dpm_solver.py,
opt-in ``GenerativeType.dpmpp_2m``).

Port of the reference's ``GaussianDiffusionBeatGans`` (itself from Ho et al.
and guided-diffusion). The schedule is computed once in float64 (kept as
numpy arrays under the reference's attribute names) and moved to each device
once as float32 tensors, so the sampling loops do no host->device copies and
no host syncs.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from choices import (GenerativeType, LossType, ModelMeanType, ModelType,
                     ModelVarType)
from config_base import BaseConfig
from model.nn import mean_flat

from .dpm_solver import dpmpp_2m_coefficients, sample_dpmpp_2m
from .schedules import get_named_beta_schedule  # noqa: F401 (re-export)
from .weighting import loss_weights, perceptual_weights


@dataclass
class GaussianDiffusionBeatGansConfig(BaseConfig):
    gen_type: GenerativeType
    betas: Tuple[float]
    model_type: ModelType
    model_mean_type: ModelMeanType
    model_var_type: ModelVarType
    loss_type: LossType
    rescale_timesteps: bool
    fp16: bool
    train_pred_xstart_detach: bool = True
    # opt-in loss weighting over timesteps (diffusion/weighting.py);
    # 'none' is the official plain MSE
    loss_weighting: str = 'none'
    loss_weighting_gamma: float = None
    p2_k: float = 1.0
    # opt-in perceptual term (diffusion/weighting.py, perceptual_weights):
    # lpips_weight * LPIPS(x_0 estimate, x_0) added to the per-sample loss
    # at original timesteps t < lpips_t_max (None: every t); 0 is official
    lpips_weight: float = 0.0
    lpips_t_max: int = None

    def make_sampler(self):
        return GaussianDiffusionBeatGans(self)


# schedule arrays that the loops read, moved to each device once
_COEFS = (
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'alphas_cumprod_next',
    'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
    'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod',
    'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
    'posterior_log_variance_clipped', 'posterior_mean_coef1',
    'posterior_mean_coef2', 'model_variance', 'model_log_variance',
    'sqrt_alphas_cumprod_prev', 'sqrt_one_minus_alphas_cumprod_prev',
    'sqrt_alphas_cumprod_next', 'sqrt_one_minus_alphas_cumprod_next')


class GaussianDiffusionBeatGans:
    """Diffusion utilities for training and sampling.

    ``timestep_map[i]`` is the original timestep that this process's step
    ``i`` stands for (identity here; a spaced sampler sets it). The model is
    always called with the original timestep.
    """

    def __init__(self, conf: GaussianDiffusionBeatGansConfig,
                 timestep_map=None):
        self.conf = conf
        self.model_mean_type = conf.model_mean_type
        self.model_var_type = conf.model_var_type
        self.loss_type = conf.loss_type
        self.rescale_timesteps = conf.rescale_timesteps

        betas = np.array(conf.betas, dtype=np.float64)
        assert betas.ndim == 1, 'betas must be 1-D'
        assert (betas > 0).all() and (betas <= 1).all()
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        if timestep_map is None:
            timestep_map = list(range(self.num_timesteps))
        self.timestep_map = list(timestep_map)
        self.original_num_steps = (max(self.timestep_map) + 1
                                   if self.timestep_map else 0)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod -
                                                   1)
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = (betas * (1.0 - self.alphas_cumprod_prev) /
                                   (1.0 - self.alphas_cumprod))
        # clipped: the posterior variance is 0 at the start of the chain
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (betas * np.sqrt(self.alphas_cumprod_prev)
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) *
                                     np.sqrt(alphas) /
                                     (1.0 - self.alphas_cumprod))
        if self.model_var_type == ModelVarType.fixed_large:
            # beta_t, with the first step set to the posterior variance for a
            # better decoder likelihood
            self.model_variance = np.append(self.posterior_variance[1],
                                            betas[1:])
            self.model_log_variance = np.log(self.model_variance)
        elif self.model_var_type == ModelVarType.fixed_small:
            self.model_variance = self.posterior_variance
            self.model_log_variance = self.posterior_log_variance_clipped
        else:
            raise NotImplementedError(self.model_var_type)
        # DDIM coefficients
        self.sqrt_alphas_cumprod_prev = np.sqrt(self.alphas_cumprod_prev)
        self.sqrt_one_minus_alphas_cumprod_prev = np.sqrt(
            1.0 - self.alphas_cumprod_prev)
        self.sqrt_alphas_cumprod_next = np.sqrt(self.alphas_cumprod_next)
        self.sqrt_one_minus_alphas_cumprod_next = np.sqrt(
            1.0 - self.alphas_cumprod_next)
        # per-timestep weight of the training loss (None: plain MSE)
        self.loss_weight = loss_weights(conf.loss_weighting,
                                        self.alphas_cumprod,
                                        conf.model_mean_type,
                                        conf.loss_weighting_gamma, conf.p2_k)
        # per-timestep weight of the perceptual term (None: no term)
        self.lpips_weight = perceptual_weights(conf.lpips_weight,
                                               self.timestep_map,
                                               conf.lpips_t_max)
        self._device_coefs: Dict[torch.device, Dict[str, torch.Tensor]] = {}
        self._dpmpp_coefs = {}

    # ------------------------------------------------------------------
    # schedule lookup
    # ------------------------------------------------------------------
    def coefs(self, device) -> Dict[str, torch.Tensor]:
        """The schedule as float32 tensors on ``device`` (built once)."""
        device = torch.device(device)
        c = self._device_coefs.get(device)
        if c is None:
            c = {
                k: torch.as_tensor(getattr(self, k),
                                   dtype=torch.float64).float().to(device)
                for k in _COEFS
            }
            c['timestep_map'] = torch.as_tensor(self.timestep_map,
                                                dtype=torch.long,
                                                device=device)
            for name in ('loss_weight', 'lpips_weight'):
                if getattr(self, name) is not None:
                    c[name] = torch.as_tensor(
                        getattr(self, name),
                        dtype=torch.float64).float().to(device)
            self._device_coefs[device] = c
        return c

    def _extract(self, name: str, t: torch.Tensor, x: torch.Tensor):
        """``name``[t] shaped (N, 1, ..., 1) to broadcast against ``x``."""
        v = self.coefs(t.device)[name][t]
        return v.reshape(-1, *([1] * (x.dim() - 1)))

    def _scale_timesteps(self, t):
        """Timesteps as the model sees them: the original timestep, scaled
        to [0, 1000) when ``rescale_timesteps``."""
        t = self.coefs(t.device)['timestep_map'][t]
        if self.rescale_timesteps:
            return t.float() * (1000.0 / self.original_num_steps)
        return t

    def _call_model(self, model, x, t, model_kwargs):
        """Run ``model`` at this process's step ``t``; ``conf.fp16`` turns
        on float16 autocast on CUDA (as the official code) unless an outer
        autocast is already on: Lightning's ``bf16-mixed`` stays bf16
        (float16 inside it would run without a GradScaler)."""
        ctx = (torch.autocast('cuda', dtype=torch.float16)
               if self.conf.fp16 and x.device.type == 'cuda' and
               not torch.is_autocast_enabled('cuda') else nullcontext())
        with ctx:
            # through __call__ (the official code calls .forward, the same
            # computation): a compiled model (conf.compile) compiles it
            return model(x=x, t=self._scale_timesteps(t), **model_kwargs)

    # ------------------------------------------------------------------
    # forward process and posterior
    # ------------------------------------------------------------------
    def q_sample(self, x_start, t, noise=None):
        """Sample x_t ~ q(x_t | x_0)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        assert noise.shape == x_start.shape
        return (self._extract('sqrt_alphas_cumprod', t, x_start) * x_start +
                self._extract('sqrt_one_minus_alphas_cumprod', t, x_start) *
                noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        assert x_start.shape == x_t.shape
        mean = (self._extract('posterior_mean_coef1', t, x_t) * x_start +
                self._extract('posterior_mean_coef2', t, x_t) * x_t)
        variance = self._extract('posterior_variance', t, x_t)
        log_variance = self._extract('posterior_log_variance_clipped', t, x_t)
        return mean, variance.expand_as(x_t), log_variance.expand_as(x_t)

    def _predict_xstart_from_eps(self, x_t, t, eps):
        assert x_t.shape == eps.shape
        return (self._extract('sqrt_recip_alphas_cumprod', t, x_t) * x_t -
                self._extract('sqrt_recipm1_alphas_cumprod', t, x_t) * eps)

    def _predict_xstart(self, x_t, t, output):
        """x_0 from the network's output, whatever it predicts."""
        if self.model_mean_type == ModelMeanType.eps:
            return self._predict_xstart_from_eps(x_t, t, output)
        if self.model_mean_type == ModelMeanType.start_x:
            return output
        if self.model_mean_type == ModelMeanType.v:
            return (self._extract('sqrt_alphas_cumprod', t, x_t) * x_t -
                    self._extract('sqrt_one_minus_alphas_cumprod', t, x_t) *
                    output)
        raise NotImplementedError(self.model_mean_type)

    def _target(self, x_start, t, noise):
        """What the network is trained to output at x_t = q(x_start, t,
        noise)."""
        if self.model_mean_type == ModelMeanType.eps:
            return noise
        if self.model_mean_type == ModelMeanType.start_x:
            return x_start
        if self.model_mean_type == ModelMeanType.v:
            return (self._extract('sqrt_alphas_cumprod', t, x_start) * noise -
                    self._extract('sqrt_one_minus_alphas_cumprod', t,
                                  x_start) * x_start)
        raise NotImplementedError(self.model_mean_type)

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((self._extract('sqrt_recip_alphas_cumprod', t, x_t) * x_t -
                 pred_xstart) /
                self._extract('sqrt_recipm1_alphas_cumprod', t, x_t))

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def training_losses(self, model, x_start: torch.Tensor, t: torch.Tensor,
                        model_kwargs=None, noise: torch.Tensor = None,
                        perceptual=None):
        """Per-sample denoising loss at timesteps ``t``.

        Returns a dict with 'loss' and 'mse' (shape (N,)), 'x_t' and
        'pred_xstart'. For the autoencoder, gradients reach the encoder
        through the z_sem it computes from ``x_start``. With the opt-in
        perceptual term (``conf.lpips_weight > 0``), ``perceptual`` is the
        frozen LPIPS network, 'lpips' (N,) its distance and 'loss' gains
        ``lpips_weight[t] * lpips``.
        """
        if model_kwargs is None:
            model_kwargs = {}
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms = {'x_t': x_t}
        if self.loss_type not in (LossType.mse, LossType.l1):
            raise NotImplementedError(self.loss_type)
        model_forward = self._call_model(model, x_t.detach(), t,
                                         dict(x_start=x_start.detach(),
                                              **model_kwargs))
        model_output = model_forward.pred
        out = model_output.detach() if self.conf.train_pred_xstart_detach \
            else model_output
        terms['pred_xstart'] = self._predict_xstart(x_t, t,
                                                    out.type(x_t.dtype))
        target = self._target(x_start, t, noise)
        assert model_output.shape == target.shape == x_start.shape
        err = target - model_output
        if self.loss_type == LossType.mse:
            terms['mse'] = mean_flat(err**2)
        else:
            terms['mse'] = mean_flat(err.abs())
        if self.loss_weight is None:
            terms['loss'] = terms['mse']
        else:
            terms['loss'] = terms['mse'] * self.coefs(t.device)[
                'loss_weight'][t]
        if self.lpips_weight is not None:
            terms['lpips'] = self._perceptual_distance(perceptual, x_t, t,
                                                       model_output, x_start)
            terms['loss'] = terms['loss'] + self.coefs(t.device)[
                'lpips_weight'][t] * terms['lpips']
        return terms

    def _perceptual_distance(self, perceptual, x_t, t, model_output,
                             x_start):
        """(N,) ``perceptual(x_0 estimate, x_start)``: the estimate from
        the network's output (not detached, not clamped: clamping would
        stop the gradient of out-of-range pixels), both in float32 with
        autocast off (a bf16 LPIPS would drift from the metric's)."""
        if perceptual is None:
            raise ValueError('the perceptual loss term (lpips_weight > 0) '
                             'needs training_losses(..., perceptual=<the '
                             'LPIPS network>)')
        with torch.autocast(x_t.device.type, enabled=False):
            pred = self._predict_xstart(x_t.float(), t, model_output.float())
            return perceptual(pred, x_start.float()).reshape(len(x_t))

    # ------------------------------------------------------------------
    # reverse process
    # ------------------------------------------------------------------
    def p_mean_variance(self, model, x, t, clip_denoised=True,
                        model_kwargs=None):
        """p(x_{t-1} | x_t) and the model's prediction of x_0."""
        if model_kwargs is None:
            model_kwargs = {}
        assert t.shape == (x.shape[0], )
        model_forward = self._call_model(model, x, t, model_kwargs)
        pred_xstart = self._predict_xstart(x, t,
                                           model_forward.pred.type(x.dtype))
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            'mean': model_mean,
            'variance': self._extract('model_variance', t, x).expand_as(x),
            'log_variance': self._extract('model_log_variance', t,
                                          x).expand_as(x),
            'pred_xstart': pred_xstart,
            'model_forward': model_forward,
        }

    def pred_xstart(self, model, x, t, clip_denoised=True, model_kwargs=None):
        """The model's x_0 prediction at step ``t`` (one call; clamped to
        [-1, 1] when ``clip_denoised``), whatever the network predicts."""
        out = self._call_model(model, x, t, model_kwargs or {})
        pred = self._predict_xstart(x, t, out.pred.type(x.dtype))
        return pred.clamp(-1, 1) if clip_denoised else pred

    # one step of each sampler: (model, x, t, ...) -> {'sample',
    # 'pred_xstart'}
    def p_sample(self, model, x, t, clip_denoised=True, model_kwargs=None,
                 is_last=None):
        """One ancestral (DDPM) step x_t -> x_{t-1}. ``is_last`` (the step
        at t = 0, no noise) avoids a device sync when known."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised,
                                   model_kwargs=model_kwargs)
        noise = torch.randn_like(x)
        # no noise at t == 0
        if is_last is None:
            nonzero = (t != 0).float().reshape(-1, *([1] * (x.dim() - 1)))
        else:
            nonzero = 0.0 if is_last else 1.0
        sample = out['mean'] + nonzero * torch.exp(
            0.5 * out['log_variance']) * noise
        return {'sample': sample, 'pred_xstart': out['pred_xstart']}

    def ddim_sample(self, model, x, t, clip_denoised=True, model_kwargs=None,
                    eta=0.0):
        """One DDIM step x_t -> x_{t-1} (deterministic for eta = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised,
                                   model_kwargs=model_kwargs)
        # eps re-derived from the (clipped) x_0 prediction
        eps = self._predict_eps_from_xstart(x, t, out['pred_xstart'])
        if eta == 0:
            sample = (out['pred_xstart'] *
                      self._extract('sqrt_alphas_cumprod_prev', t, x) +
                      self._extract('sqrt_one_minus_alphas_cumprod_prev', t,
                                    x) * eps)
        else:
            abar = self._extract('alphas_cumprod', t, x)
            abar_prev = self._extract('alphas_cumprod_prev', t, x)
            sigma = (eta * torch.sqrt((1 - abar_prev) / (1 - abar)) *
                     torch.sqrt(1 - abar / abar_prev))
            mean_pred = (out['pred_xstart'] * torch.sqrt(abar_prev) +
                         torch.sqrt(1 - abar_prev - sigma**2) * eps)
            nonzero = (t != 0).float().reshape(-1, *([1] * (x.dim() - 1)))
            sample = mean_pred + nonzero * sigma * torch.randn_like(x)
        return {'sample': sample, 'pred_xstart': out['pred_xstart']}

    def ddim_reverse_sample(self, model, x, t, clip_denoised=True,
                            model_kwargs=None, eta=0.0):
        """One reverse DDIM step x_t -> x_{t+1} (the deterministic ODE)."""
        assert eta == 0.0, 'the reverse ODE is deterministic (eta = 0)'
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised,
                                   model_kwargs=model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out['pred_xstart'])
        mean_pred = (out['pred_xstart'] *
                     self._extract('sqrt_alphas_cumprod_next', t, x) +
                     self._extract('sqrt_one_minus_alphas_cumprod_next', t,
                                   x) * eps)
        return {'sample': mean_pred, 'pred_xstart': out['pred_xstart']}

    # one loop per sampler, all through _run_loop. ``callback(out)`` sees
    # every step: out = {'i', 't', 'sample', 'pred_xstart'} (the official
    # *_progressive generators' outputs).
    def p_sample_loop(self, model, shape=None, noise=None, clip_denoised=True,
                      model_kwargs=None, device=None, progress=False,
                      callback=None):
        """DDPM ancestral sampling from ``noise`` (or fresh noise of
        ``shape``); returns x_0."""
        def step(x, t, i):
            return self.p_sample(model, x, t, clip_denoised=clip_denoised,
                                 model_kwargs=model_kwargs, is_last=i == 0)

        return _run_loop(step, self._initial_noise(model, shape, noise,
                                                   device),
                         reversed(range(self.num_timesteps)), progress,
                         'DDPM', callback)

    def ddim_sample_loop(self, model, shape=None, noise=None,
                         clip_denoised=True, model_kwargs=None, device=None,
                         progress=False, eta=0.0, callback=None):
        """DDIM sampling from ``noise`` (x_T, or fresh noise of ``shape``)
        to x_0. ``model_kwargs`` may be a list: per-step kwargs, indexed by
        the step."""
        def step(x, t, i):
            kwargs = (model_kwargs[i] if isinstance(model_kwargs, list) else
                      model_kwargs)
            return self.ddim_sample(model, x, t, clip_denoised=clip_denoised,
                                    model_kwargs=kwargs, eta=eta)

        return _run_loop(step, self._initial_noise(model, shape, noise,
                                                   device),
                         reversed(range(self.num_timesteps)), progress,
                         'DDIM', callback)

    def ddim_reverse_sample_loop(self, model, x, clip_denoised=True,
                                 model_kwargs=None, eta=0.0, device=None,
                                 progress=False, callback=None):
        """Encode x_0 into the stochastic subcode x_T by running DDIM
        backwards. Returns {'sample': x_T, 'sample_t': [x_1 ... x_T],
        'xstart_t', 'T'} (``device`` is unused: ``x`` says where)."""
        def step(x, t, i):
            return self.ddim_reverse_sample(model, x, t,
                                            clip_denoised=clip_denoised,
                                            model_kwargs=model_kwargs,
                                            eta=eta)

        out, record = _recorded(callback)
        out['sample'] = _run_loop(step, x, range(self.num_timesteps),
                                  progress, 'encode', record)
        return out

    def dpmpp_2m_sample_loop(self, model, shape=None, noise=None,
                             clip_denoised=True, model_kwargs=None,
                             device=None, progress=False, callback=None):
        """DPM-Solver++(2M) from ``noise`` (x_T, or fresh noise of
        ``shape``) to x_0 on this process's steps (one model call each);
        ``model_kwargs`` and ``callback`` as in ddim_sample_loop."""
        x = self._initial_noise(model, shape, noise, device)
        return self._dpmpp_2m_loop(model, x, 'sample', clip_denoised,
                                   model_kwargs, progress, callback)

    def dpmpp_2m_reverse_sample_loop(self, model, x, clip_denoised=True,
                                     model_kwargs=None, device=None,
                                     progress=False, callback=None):
        """Encode x_0 into x_T with DPM-Solver++(2M) run towards the noise,
        on the steps of ddim_reverse_sample_loop; returns the same dict."""
        out, record = _recorded(callback)
        out['sample'] = self._dpmpp_2m_loop(model, x, 'reverse',
                                            clip_denoised, model_kwargs,
                                            progress, record)
        return out

    def dpmpp_2m_steps(self, direction: str):
        """(step indices in the order they run, their dpm_solver
        coefficients) towards x_0 (``'sample'``) or x_T (``'reverse'``)."""
        if direction not in self._dpmpp_coefs:
            if direction == 'sample':
                idx = np.arange(self.num_timesteps)[::-1]
                to = self.alphas_cumprod_prev[idx]
            elif direction == 'reverse':
                idx = np.arange(self.num_timesteps)
                to = self.alphas_cumprod_next[idx]
            else:
                raise ValueError(direction)
            self._dpmpp_coefs[direction] = (
                idx.tolist(),
                dpmpp_2m_coefficients(self.alphas_cumprod[idx], to))
        return self._dpmpp_coefs[direction]

    def _dpmpp_2m_loop(self, model, x, direction, clip_denoised,
                       model_kwargs, progress, callback):
        indices, coefs = self.dpmpp_2m_steps(direction)
        ts = {}

        def denoise(x, k):
            i = indices[k]
            ts[k] = t = torch.full((len(x), ), i, device=x.device,
                                   dtype=torch.long)
            kwargs = (model_kwargs[i] if isinstance(model_kwargs, list) else
                      model_kwargs)
            return self.pred_xstart(model, x, t, clip_denoised, kwargs)

        def report(out):
            k = out.pop('k')
            callback({'i': indices[k], 't': ts.pop(k), **out})

        with torch.no_grad():
            return sample_dpmpp_2m(
                denoise, x, coefs, report if callback is not None else None,
                progress, 'DPM-Solver++(2M)' if direction == 'sample' else
                'encode (DPM-Solver++(2M))')

    def reverse_sample_loop(self, model, x, clip_denoised=True,
                            model_kwargs=None, progress=False, callback=None):
        """Inversion x_0 -> x_T with this process's solver: DPM-Solver++(2M)
        for ``GenerativeType.dpmpp_2m``, else DDIM (the official
        stochastic encoding, also for a DDPM process)."""
        loop = (self.dpmpp_2m_reverse_sample_loop
                if self.conf.gen_type == GenerativeType.dpmpp_2m else
                self.ddim_reverse_sample_loop)
        return loop(model, x, clip_denoised=clip_denoised,
                    model_kwargs=model_kwargs, progress=progress,
                    callback=callback)

    def sample(self, model, shape=None, noise=None, cond=None, x_start=None,
               clip_denoised=True, model_kwargs=None, progress=False,
               callback=None):
        """Generate with this process's ``gen_type`` (DDPM, DDIM or
        DPM-Solver++(2M)).

        For the autoencoder, pass ``cond`` (z_sem) or ``x_start`` (an image
        to encode). ``callback`` as in the loops."""
        if model_kwargs is None:
            model_kwargs = {}
            if self.conf.model_type is not None and \
                    self.conf.model_type.has_autoenc():
                model_kwargs['x_start'] = x_start
                model_kwargs['cond'] = cond
        if self.conf.gen_type == GenerativeType.ddpm:
            loop = self.p_sample_loop
        elif self.conf.gen_type == GenerativeType.ddim:
            loop = self.ddim_sample_loop
        elif self.conf.gen_type == GenerativeType.dpmpp_2m:
            loop = self.dpmpp_2m_sample_loop
        else:
            raise NotImplementedError(self.conf.gen_type)
        return loop(model, shape=shape, noise=noise,
                    clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                    progress=progress, callback=callback)

    def _initial_noise(self, model, shape, noise, device):
        if noise is not None:
            return noise
        assert isinstance(shape, (tuple, list)), 'give noise or a shape'
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else 'cpu'
        return torch.randn(*shape, device=device)


def _recorded(callback):
    """({'sample_t', 'xstart_t', 'T'} lists, a callback that appends each
    step's sample, x_0 prediction and t to them, then calls ``callback``):
    what the reverse loops return besides x_T."""
    out = {'sample_t': [], 'xstart_t': [], 'T': []}

    def record(step):
        out['sample_t'].append(step['sample'])
        out['xstart_t'].append(step['pred_xstart'])
        out['T'].append(step['t'])
        if callback is not None:
            callback(step)
    return out, record


def _run_loop(step, x, indices, progress: bool, desc: str, callback=None):
    """Apply ``step(x, t, i) -> {'sample', 'pred_xstart'}`` for each step
    index ``i`` (``t`` is ``i`` for the whole batch), without gradients;
    returns the last sample."""
    if progress:
        indices = tqdm(list(indices), desc=desc, leave=False)
    for i in indices:
        t = torch.full((len(x), ), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = step(x, t, i)
        if callback is not None:
            callback({'i': i, 't': t, **out})
        x = out['sample']
    return x
