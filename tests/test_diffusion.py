"""Behaviour of the diffusion process that the golden fixtures do not pin
down, checked against closed forms.

For Gaussian data x0 ~ N(mu, s^2) the optimal eps-predictor is analytic:
E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a), a = alpha_bar.
A sampler driven by this oracle must reproduce N(mu, s^2)."""
import math

import numpy as np
import pytest
import torch

from choices import (GenerativeType, LossType, ModelMeanType, ModelType,
                     ModelVarType)
from diffusion import (SpacedDiffusionBeatGansConfig, get_named_beta_schedule,
                       space_timesteps)
from model.unet import Return

MU, S = 0.3, 0.5


class Oracle(torch.nn.Module):
    """Bayes-optimal eps prediction for x0 ~ N(MU, S^2), per coordinate."""

    def __init__(self, alphas_cumprod_full):
        super().__init__()
        self.abar = torch.tensor(alphas_cumprod_full, dtype=torch.float64)

    def forward(self, x, t, **kwargs):
        a = self.abar[t].reshape(-1, *([1] * (x.dim() - 1))).to(x)
        eps = (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)
        return Return(pred=eps)


def make_sampler(steps, gen_type=GenerativeType.ddim,
                 var=ModelVarType.fixed_large, schedule='linear'):
    betas = get_named_beta_schedule(schedule, 1000)
    counts = f'ddim{steps}' if gen_type == GenerativeType.ddim else [steps]
    conf = SpacedDiffusionBeatGansConfig(
        gen_type=gen_type, betas=betas, model_type=ModelType.ddpm,
        model_mean_type=ModelMeanType.eps, model_var_type=var,
        loss_type=LossType.mse, rescale_timesteps=False, fp16=False,
        use_timesteps=space_timesteps(1000, counts))
    return conf.make_sampler(), np.cumprod(1 - betas)


@pytest.mark.parametrize('var', [ModelVarType.fixed_large,
                                 ModelVarType.fixed_small])
def test_ddpm_sampling_reproduces_the_data_distribution(var):
    torch.manual_seed(0)
    sampler, abar = make_sampler(100, GenerativeType.ddpm, var)
    x = sampler.sample(Oracle(abar), shape=(8000, 1), clip_denoised=False)
    assert abs(x.mean().item() - MU) < 0.02
    # fixed_large adds a little extra variance with few steps
    assert abs(x.std().item() - S) < 0.05


def test_ddim_sampling_reproduces_the_data_distribution():
    errors = []
    for steps in (50, 250):
        torch.manual_seed(0)
        sampler, abar = make_sampler(steps)
        x = sampler.sample(Oracle(abar), shape=(20000, 1),
                           clip_denoised=False)
        assert abs(x.mean().item() - MU) < 0.02
        errors.append(abs(x.std().item() - S))
    # deterministic DDIM: the discretisation error shrinks with more steps
    assert errors[1] < 0.015 and errors[1] < errors[0]


def test_ddim_inversion_round_trip():
    """Reverse DDIM then DDIM returns (nearly) the starting point."""
    torch.manual_seed(0)
    sampler, abar = make_sampler(250)
    model = Oracle(abar)
    x0 = MU + S * torch.randn(256, 4)
    xT = sampler.ddim_reverse_sample_loop(model, x0,
                                          clip_denoised=False)['sample']
    back = sampler.ddim_sample_loop(model, noise=xT, clip_denoised=False)
    assert (back - x0).abs().mean().item() < 0.015
    # and x_T looks like standard noise
    assert abs(xT.std().item() - 1) < 0.1


def test_spaced_process_keeps_the_cumulative_alphas():
    sampler, abar = make_sampler(10)
    np.testing.assert_allclose(sampler.alphas_cumprod,
                               abar[sampler.timestep_map], rtol=1e-12)
    assert sampler.timestep_map == list(range(0, 1000, 100))
    assert sampler.num_timesteps == 10


def test_spacing_leaves_the_config_untouched():
    sampler, _ = make_sampler(10)
    assert len(sampler.conf.betas) == 10
    betas = get_named_beta_schedule('linear', 1000)
    conf = SpacedDiffusionBeatGansConfig(
        gen_type=GenerativeType.ddim, betas=betas, model_type=ModelType.ddpm,
        model_mean_type=ModelMeanType.eps,
        model_var_type=ModelVarType.fixed_large, loss_type=LossType.mse,
        rescale_timesteps=False, fp16=False,
        use_timesteps=space_timesteps(1000, 'ddim10'))
    conf.make_sampler()
    assert len(conf.betas) == 1000


def test_q_sample_moments():
    torch.manual_seed(0)
    sampler, abar = make_sampler(1000)
    x0 = torch.full((50000, 1), 2.0)
    t = torch.full((50000, ), 300)
    xt = sampler.q_sample(x0, t)
    assert abs(xt.mean().item() - 2 * math.sqrt(abar[300])) < 0.01
    assert abs(xt.var().item() - (1 - abar[300])) < 0.01


def test_training_loss_is_zero_for_the_true_noise_and_l1_is_abs():
    sampler, abar = make_sampler(1000)

    class Echo(torch.nn.Module):
        def forward(self, x, t, **kw):
            return Return(pred=self.noise)

    echo = Echo()
    x0 = torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 10, 500, 999])
    noise = torch.randn_like(x0)
    echo.noise = noise
    assert sampler.training_losses(echo, x0, t, noise=noise)['loss'].abs(
    ).max() == 0
    echo.noise = noise + 0.5
    mse = sampler.training_losses(echo, x0, t, noise=noise)['loss']
    torch.testing.assert_close(mse, torch.full((4, ), 0.25))
    sampler.loss_type = LossType.l1
    l1 = sampler.training_losses(echo, x0, t, noise=noise)['loss']
    torch.testing.assert_close(l1, torch.full((4, ), 0.5))


def test_sampling_loop_does_no_host_copies_per_step(monkeypatch):
    """The schedule moves to the device once; the loop then only indexes
    device tensors (no numpy->tensor conversion per step)."""
    sampler, abar = make_sampler(10)
    model = Oracle(abar)
    sampler.sample(model, shape=(2, 1))
    calls = []
    real = torch.as_tensor
    monkeypatch.setattr(torch, 'as_tensor',
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    sampler.sample(model, shape=(2, 1))
    assert calls == []


@pytest.mark.parametrize('loop', ['p_sample_loop', 'ddim_sample_loop'])
def test_loop_callback_sees_every_step_in_order(loop):
    """The per-step hook replaces the official *_progressive generators:
    it sees each step from T-1 down to 0, and the last sample it sees is
    what the loop returns (the hook does not change the result)."""
    sampler, abar = make_sampler(5, GenerativeType.ddpm if loop ==
                                 'p_sample_loop' else GenerativeType.ddim)
    model = Oracle(abar)
    xT = torch.randn(3, 2)
    seen = []
    torch.manual_seed(0)
    out = getattr(sampler, loop)(model, noise=xT, clip_denoised=False,
                                 callback=seen.append)
    torch.manual_seed(0)
    plain = getattr(sampler, loop)(model, noise=xT, clip_denoised=False,
                                   progress=True)
    assert torch.equal(out, plain)
    assert [s['i'] for s in seen] == [4, 3, 2, 1, 0]
    assert all(torch.equal(s['t'], torch.full((3, ), s['i'])) for s in seen)
    assert torch.equal(seen[-1]['sample'], out)
    assert all(s['pred_xstart'].shape == xT.shape for s in seen)


def test_reverse_loop_records_each_step_and_calls_back():
    sampler, abar = make_sampler(4)
    model = Oracle(abar)
    x0 = torch.randn(3, 2)
    seen = []
    out = sampler.ddim_reverse_sample_loop(model, x0, clip_denoised=False,
                                           callback=seen.append)
    assert [s['i'] for s in seen] == [0, 1, 2, 3]
    assert len(out['sample_t']) == len(out['xstart_t']) == len(out['T']) == 4
    for s, xt, t in zip(seen, out['sample_t'], out['T']):
        assert torch.equal(s['sample'], xt) and torch.equal(s['t'], t)
    assert torch.equal(out['sample'], out['sample_t'][-1])


def test_ddim_loop_takes_per_step_model_kwargs():
    """A list of model_kwargs gives each step its own (official
    behaviour)."""
    sampler, abar = make_sampler(3)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, tag=None, **kwargs):
            seen.append(tag)
            return Return(pred=torch.zeros_like(x))

    sampler.ddim_sample_loop(Spy(), noise=torch.zeros(1, 1),
                             model_kwargs=[{'tag': k} for k in 'abc'])
    assert seen == ['c', 'b', 'a']
