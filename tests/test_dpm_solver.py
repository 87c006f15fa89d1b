"""DPM-Solver++(2M) (diffusion/dpm_solver.py, GenerativeType.dpmpp_2m)
against answers that do not come from it:

- Gaussian data x0 ~ N(MU, S^2): the probability-flow ODE keeps the
  standardised value z = (x - sqrt(a) MU) / sqrt(a S^2 + 1 - a) of every
  coordinate (a = alpha_bar), so the exact solution between any two noise
  levels is closed-form; the Bayes-optimal predictor is test_diffusion's
  Oracle. Errors must fall at second order as the steps double (DDIM's at
  first order) when sampling and when inverting.
- diffusers' DPMSolverMultistepScheduler (algorithm_type='dpmsolver++',
  solver_order=2), an independent implementation, on the same discrete
  timesteps and the same model function, for eps, x_0 and v outputs.
"""
import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_dpmsolver_multistep import \
    DPMSolverMultistepScheduler

from choices import (GenerativeType, LossType, ModelMeanType, ModelType,
                     ModelVarType)
from conftest import conf_from_recipe, golden, load_recipe
from diffusion import (SpacedDiffusionBeatGansConfig, get_named_beta_schedule,
                       space_timesteps)
from diffusion.base import GaussianDiffusionBeatGans
from model.unet import Return
from test_diffusion import MU, S, Oracle

BETAS = get_named_beta_schedule('linear', 1000)
ABAR = np.cumprod(1 - BETAS)


def process(spacing, gen_type=GenerativeType.dpmpp_2m,
            mean_type=ModelMeanType.eps):
    return SpacedDiffusionBeatGansConfig(
        gen_type=gen_type, betas=BETAS, model_type=ModelType.ddpm,
        model_mean_type=mean_type, model_var_type=ModelVarType.fixed_large,
        loss_type=LossType.mse, rescale_timesteps=False, fp16=False,
        use_timesteps=space_timesteps(1000, spacing)).make_sampler()


def exact_flow(x, a_from, a_to):
    """The probability-flow ODE's solution for Gaussian data."""
    z = (x - a_from**0.5 * MU) / (a_from * S**2 + 1 - a_from)**0.5
    return a_to**0.5 * MU + (a_to * S**2 + 1 - a_to)**0.5 * z


def orders(errors):
    """Observed orders: log2 of the error ratio at each doubling."""
    e = np.array(errors)
    return np.log2(e[:-1] / e[1:])


def sampling_errors(gen_type, steps=(10, 20, 40, 80)):
    """Max error of x_0 from x_T over a grid of x_T, per step count, on
    the quadratic steps. The reference is the exact flow down to t = 0
    (the last point where the model is called) followed by the same last
    x_0 prediction that both solvers end with."""
    xT = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    errors = []
    for n in steps:
        sampler = process(f'quad{n}', gen_type)
        oracle = Oracle(ABAR)
        out = sampler.sample(oracle, noise=xT, clip_denoised=False)
        x_t0 = exact_flow(xT, sampler.alphas_cumprod[-1],
                          sampler.alphas_cumprod[0])
        ref = sampler.pred_xstart(oracle, x_t0, torch.zeros(
            len(xT), dtype=torch.long), clip_denoised=False)
        errors.append((out - ref).abs().max().item())
    return errors


def test_dpmpp_2m_sampling_converges_at_second_order():
    assert (orders(sampling_errors(GenerativeType.dpmpp_2m)) > 1.7).all()


def test_ddim_sampling_converges_at_first_order_on_the_same_steps():
    o = orders(sampling_errors(GenerativeType.ddim))
    assert ((o > 0.8) & (o < 1.2)).all()


@pytest.mark.parametrize('gen_type,low,high', [
    (GenerativeType.dpmpp_2m, 1.7, 3.0), (GenerativeType.ddim, 0.8, 1.2)])
def test_inversion_converges_at_the_solver_order(gen_type, low, high):
    """x_0 -> x_T (the process ends at alpha_bar = 0, where the exact
    flow gives z itself) through reverse_sample_loop."""
    x0 = torch.linspace(MU - 3 * S, MU + 3 * S, 61,
                        dtype=torch.float64)[:, None]
    errors = []
    for n in (10, 20, 40, 80):
        sampler = process(f'quad{n}', gen_type)
        xT = sampler.reverse_sample_loop(Oracle(ABAR), x0,
                                         clip_denoised=False)['sample']
        exact = exact_flow(x0, sampler.alphas_cumprod[0], 0.0)
        errors.append((xT - exact).abs().max().item())
    o = orders(errors)
    assert ((o > low) & (o < high)).all(), (errors, o)


class Smooth(torch.nn.Module):
    """A fixed nonlinear model of (x, original timestep)."""

    def forward(self, x, t, **kwargs):
        s = (t.to(x.dtype) / 1000).reshape(-1, *([1] * (x.dim() - 1)))
        return Return(pred=torch.tanh(x * (1 + s)) * 0.8 + 0.1 * s)


@pytest.mark.parametrize('mean_type,prediction_type', [
    (ModelMeanType.eps, 'epsilon'), (ModelMeanType.start_x, 'sample'),
    (ModelMeanType.v, 'v_prediction')])
@pytest.mark.parametrize('spacing', ['ddim10', 'quad7'])
def test_sampling_equals_diffusers_dpmsolver_pp_2m(mean_type,
                                                   prediction_type, spacing):
    sampler = process(spacing, mean_type=mean_type)
    model = Smooth()
    torch.manual_seed(0)
    xT = torch.randn(4, 3, 5, 5)
    ours = sampler.sample(model, noise=xT, clip_denoised=False)

    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=BETAS.tolist(),
        algorithm_type='dpmsolver++', solver_order=2, solver_type='midpoint',
        prediction_type=prediction_type, final_sigmas_type='zero',
        lower_order_final=True)
    sched.set_timesteps(timesteps=sorted(sampler.timestep_map, reverse=True))
    x = xT.clone()
    for t in sched.timesteps:
        out = model(x, t.repeat(len(x))).pred
        x = sched.step(out, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-5)


def test_one_model_call_and_no_host_copy_per_step(monkeypatch):
    sampler = process('quad6')
    calls = []

    class Counting(Smooth):
        def forward(self, x, t, **kwargs):
            calls.append(t)
            return super().forward(x, t)

    model = Counting()
    sampler.sample(model, shape=(2, 3))            # coefficients built
    calls.clear()
    copies = []
    real = torch.as_tensor
    monkeypatch.setattr(torch, 'as_tensor',
                        lambda *a, **k: copies.append(1) or real(*a, **k))
    sampler.sample(model, shape=(2, 3))
    assert copies == []
    assert [c[0].item() for c in calls] == sorted(sampler.timestep_map,
                                                  reverse=True)


def test_callback_sees_every_step_and_the_result():
    sampler = process('quad5')
    seen = []
    out = sampler.sample(Smooth(), noise=torch.ones(2, 3),
                         callback=seen.append)
    assert [s['i'] for s in seen] == [4, 3, 2, 1, 0]
    assert all(torch.equal(s['t'], torch.full((2, ), s['i'])) for s in seen)
    assert torch.equal(seen[-1]['sample'], out)


def tiny_model(name):
    """A golden tiny model: the LitModel of tiny_autoenc (the notebook
    API), the DiffAE of tiny_autoenc_latent (it has the latent DPM)."""
    import checkpoint_io
    from experiment import LitModel
    from inference import DiffAE
    path = golden(name)
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    if name == 'tiny_autoenc_latent':
        return DiffAE.from_checkpoint(conf, path / 'last.ckpt')
    lit = LitModel(conf)
    lit.load_state_dict(checkpoint_io.load_checkpoint(path / 'last.ckpt')[
        'state_dict'])
    return lit.eval()


@pytest.fixture
def loops_seen(monkeypatch):
    """(loop name, the process's timesteps) of every sampling loop run."""
    seen = []
    for name in ('dpmpp_2m_sample_loop', 'dpmpp_2m_reverse_sample_loop',
                 'ddim_sample_loop', 'ddim_reverse_sample_loop'):
        real = getattr(GaussianDiffusionBeatGans, name)

        def spy(self, *a, _name=name, _real=real, **k):
            seen.append((_name, tuple(self.timestep_map)))
            return _real(self, *a, **k)
        monkeypatch.setattr(GaussianDiffusionBeatGans, name, spy)
    return seen


QUAD2 = tuple(sorted(space_timesteps(1000, 'quad2')))
QUAD3 = tuple(sorted(space_timesteps(1000, 'quad3')))


def test_solver_argument_reaches_the_loops(loops_seen):
    """LitModel's encode_stochastic / render / interpolate (through
    DiffAE's) with solver='dpmpp_2m' run the new loops on the quadratic
    steps of T (2 here); no solver keeps the config's DDIM."""
    model = tiny_model('tiny_autoenc')
    x = torch.rand(1, 3, model.conf.img_size, model.conf.img_size) * 2 - 1
    cond = model.encode(x)
    xT = model.encode_stochastic(x, cond, T=2, solver='dpmpp_2m')
    model.render(xT, cond, T=2, solver=GenerativeType.dpmpp_2m)
    model.interpolate(cond, xT, cond, xT, [0.5], T=2, solver='dpmpp_2m')
    model.render(xT, cond, T=2)
    assert loops_seen == [('dpmpp_2m_reverse_sample_loop', QUAD2)] + [
        ('dpmpp_2m_sample_loop', QUAD2)] * 2 + [
        ('ddim_sample_loop', (0, 500))]


def test_sample_solver_reaches_the_latent_dpm(loops_seen):
    model = tiny_model('tiny_autoenc_latent')
    model.conf.latent_znormalize = False   # no latent.pkl statistics here
    model.sample(1, 'cpu', T=2, T_latent=3, solver='dpmpp_2m')
    # the latent DPM first, then the image
    assert loops_seen == [('dpmpp_2m_sample_loop', QUAD3),
                          ('dpmpp_2m_sample_loop', QUAD2)]


def test_unknown_solver_names_the_choices():
    model = tiny_model('tiny_autoenc_latent')
    with pytest.raises(ValueError, match="'dpm'.*dpmpp_2m"):
        model.render(torch.zeros(1, 3, 32, 32), None, T=2, solver='dpm')
