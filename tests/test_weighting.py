"""The opt-in training recipes of issue #12: loss weightings over timesteps,
x_0 / v prediction and the high-noise timestep sampler. Expected numbers
are worked out by hand in the comments; the official recipe must stay the
plain eps MSE, bit for bit."""
import math

import numpy as np
import pytest
import torch

from choices import (GenerativeType, LossType, ModelMeanType, ModelType,
                     ModelVarType)
from diffusion import (PowerSampler, SpacedDiffusionBeatGansConfig,
                       UniformSampler, get_named_beta_schedule,
                       space_timesteps)
from diffusion.weighting import loss_weights, snr
from model.unet import Return
from templates import shapes32_autoenc
from test_diffusion import MU, S, Oracle

# betas 0.1, 0.5, 0.9 -> alphas 0.9, 0.5, 0.1
# -> alpha_bar 0.9, 0.45, 0.045 -> SNR 9, 9/11, 9/191
BETAS = np.array([0.1, 0.5, 0.9])
ABAR = np.cumprod(1 - BETAS)
SNR = np.array([9.0, 9 / 11, 9 / 191])


def test_snr_of_the_hand_worked_schedule():
    np.testing.assert_allclose(ABAR, [0.9, 0.45, 0.045], rtol=1e-12)
    np.testing.assert_allclose(snr(ABAR), SNR, rtol=1e-12)


def test_p2_weights_at_given_t():
    # 1 / (1 + SNR): 1/10, 11/20, 191/200
    w = loss_weights('p2', ABAR, ModelMeanType.eps)
    np.testing.assert_allclose(w, [0.1, 0.55, 0.955], rtol=1e-12)
    # gamma 0.5, k 2: 1 / sqrt(2 + SNR)
    w = loss_weights('p2', ABAR, ModelMeanType.eps, gamma=0.5, k=2.0)
    np.testing.assert_allclose(
        w, [1 / math.sqrt(11), 1 / math.sqrt(2 + 9 / 11),
            1 / math.sqrt(2 + 9 / 191)], rtol=1e-12)


def test_min_snr_weights_at_given_t_for_each_target():
    # eps: min(SNR, 5) / SNR = 5/9, 1, 1
    np.testing.assert_allclose(
        loss_weights('min_snr', ABAR, ModelMeanType.eps), [5 / 9, 1, 1],
        rtol=1e-12)
    # x0: min(SNR, 5) = 5, 9/11, 9/191
    np.testing.assert_allclose(
        loss_weights('min_snr', ABAR, ModelMeanType.start_x),
        [5, 9 / 11, 9 / 191], rtol=1e-12)
    # v: min(SNR, 5) / (SNR + 1) = 1/2, 9/20, 9/200 (= alpha_bar below 5)
    np.testing.assert_allclose(
        loss_weights('min_snr', ABAR, ModelMeanType.v), [0.5, 0.45, 0.045],
        rtol=1e-12)
    # gamma 1: eps 1/9, 1, 1
    np.testing.assert_allclose(
        loss_weights('min_snr', ABAR, ModelMeanType.eps, gamma=1.0),
        [1 / 9, 1, 1], rtol=1e-12)


def test_none_is_no_weighting_and_unknown_names_are_refused():
    assert loss_weights('none', ABAR, ModelMeanType.v) is None
    with pytest.raises(ValueError, match="'snr'.*'none', 'p2', 'min_snr'"):
        loss_weights('snr', ABAR, ModelMeanType.eps)


def diffusion(mean_type=ModelMeanType.eps, weighting='none', betas=None,
              steps=None):
    betas = get_named_beta_schedule('linear', 1000) if betas is None \
        else betas
    n = len(betas)
    return SpacedDiffusionBeatGansConfig(
        gen_type=GenerativeType.ddim, betas=betas, model_type=ModelType.ddpm,
        model_mean_type=mean_type, model_var_type=ModelVarType.fixed_large,
        loss_type=LossType.mse, rescale_timesteps=False, fp16=False,
        loss_weighting=weighting,
        use_timesteps=space_timesteps(n, f'ddim{steps}' if steps else [n]),
    ).make_sampler()


class Fixed(torch.nn.Module):
    """Returns a fixed output whatever it is given."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, **kwargs):
        return Return(pred=self.out)


def x0_prediction_as(mean_type, x_t, t, x0_hat):
    """The network output of ``mean_type`` that means x_0 = ``x0_hat``."""
    a = torch.as_tensor(ABAR)[t].reshape(-1, 1, 1, 1)
    eps_hat = (x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()
    return {ModelMeanType.eps: eps_hat, ModelMeanType.start_x: x0_hat,
            ModelMeanType.v: a.sqrt() * eps_hat - (1 - a).sqrt() * x0_hat
            }[mean_type]


@pytest.mark.parametrize('weighting', ['none', 'p2', 'min_snr'])
def test_weighted_objective_is_the_same_whatever_the_target(weighting):
    """One x_0 guess costs the same weighted loss whether the network
    states it as eps, x_0 or v (for 'none' the eps-space loss is compared:
    the plain MSE of each target is a different objective, by design)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((3, 2, 4, 4), generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    guess = x0 + 0.3 * torch.randn(x0.shape, generator=g,
                                   dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    losses = {}
    for mt in ModelMeanType:
        d = diffusion(mt, weighting, BETAS)
        x_t = d.q_sample(x0, t, noise)
        out = d.training_losses(
            Fixed(x0_prediction_as(mt, x_t, t, guess)), x0, t, noise=noise)
        torch.testing.assert_close(out['pred_xstart'], guess)
        loss = out['loss']
        if weighting == 'none':
            loss = loss * torch.as_tensor({
                ModelMeanType.eps: np.ones(3), ModelMeanType.start_x: SNR,
                ModelMeanType.v: SNR / (1 + SNR)}[mt])
        losses[mt] = loss
    torch.testing.assert_close(losses[ModelMeanType.start_x],
                               losses[ModelMeanType.eps])
    torch.testing.assert_close(losses[ModelMeanType.v],
                               losses[ModelMeanType.eps])


def test_weighted_loss_is_the_mse_times_the_weight_of_each_t():
    d = diffusion(ModelMeanType.eps, 'min_snr', BETAS)
    x0 = torch.zeros(3, 1, 2, 2)
    noise = torch.ones(3, 1, 2, 2)
    out = d.training_losses(Fixed(torch.zeros(3, 1, 2, 2)), x0,
                            torch.tensor([0, 1, 2]), noise=noise)
    # eps target 1 everywhere, prediction 0: mse 1, loss = weight
    torch.testing.assert_close(out['mse'], torch.ones(3))
    torch.testing.assert_close(out['loss'],
                               torch.tensor([5 / 9, 1.0, 1.0]))


def test_official_recipe_loss_is_the_plain_mse():
    d = diffusion()
    assert d.loss_weight is None
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn((4, 3, 8, 8), generator=g)
    out = d.training_losses(Fixed(torch.zeros_like(x0)), x0,
                            torch.tensor([0, 10, 500, 999]),
                            noise=torch.ones_like(x0))
    assert torch.equal(out['loss'], out['mse'])
    assert torch.equal(out['mse'], torch.ones(4))


@pytest.mark.parametrize('mean_type', [ModelMeanType.start_x,
                                       ModelMeanType.v])
def test_x0_and_v_oracles_sample_like_the_eps_oracle(mean_type):
    """The Bayes-optimal predictor for Gaussian data, stated as x_0 or v,
    drives DDIM to the same samples as stated as eps."""
    d_eps = diffusion(steps=50)
    d_alt = diffusion(mean_type, steps=50)
    abar = np.cumprod(1 - get_named_beta_schedule('linear', 1000))
    eps_oracle = Oracle(abar)

    class Restated(torch.nn.Module):
        def forward(self, x, t, **kwargs):
            eps = eps_oracle(x.double(), t).pred
            a = eps_oracle.abar[t].reshape(-1, 1)
            x0 = (x.double() - (1 - a).sqrt() * eps) / a.sqrt()
            out = x0 if mean_type == ModelMeanType.start_x else (
                a.sqrt() * eps - (1 - a).sqrt() * x0)
            return Return(pred=out.float())

    noise = torch.randn((4000, 1), generator=torch.Generator().manual_seed(2))
    a = d_eps.sample(eps_oracle, noise=noise, clip_denoised=False)
    b = d_alt.sample(Restated(), noise=noise, clip_denoised=False)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
    # (50 DDIM steps shrink the spread a little, as for eps, see
    # test_diffusion)
    assert abs(b.mean().item() - MU) < 0.02
    assert abs(b.std().item() - S) < 0.05


def test_power_sampler_probabilities_and_draws():
    s = PowerSampler(4, power=2.0)
    # P(t = i) = ((i + 1) / 4)^2 - (i / 4)^2 = (2i + 1) / 16
    torch.testing.assert_close(
        s.weights(), torch.tensor([1, 3, 5, 7], dtype=torch.float64) / 16)
    t, w = s.sample(40_000, 'cpu', torch.Generator().manual_seed(0))
    freq = torch.bincount(t, minlength=4).double() / len(t)
    torch.testing.assert_close(freq, s.weights(), atol=0.01, rtol=0)
    assert torch.equal(w, torch.ones(40_000))
    # power 1 is uniform
    torch.testing.assert_close(PowerSampler(5, 1.0).weights(),
                               torch.full((5, ), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError, match='T_sampler_power'):
        PowerSampler(4, 0)


def test_config_fields_reach_the_processes_and_default_to_official():
    conf = shapes32_autoenc()
    conf.loss_weighting, conf.beatgans_model_mean_type = 'min_snr', \
        ModelMeanType.v
    conf.T_sampler = 'high_noise'
    d = conf.make_diffusion_conf().make_sampler()
    np.testing.assert_allclose(
        d.loss_weight, loss_weights('min_snr', d.alphas_cumprod,
                                    ModelMeanType.v))
    assert isinstance(conf.make_T_sampler(), PowerSampler)
    # the latent DPM keeps the plain loss
    assert conf.make_latent_diffusion_conf().make_sampler().loss_weight \
        is None
    conf.T_sampler = 'beta'
    with pytest.raises(ValueError, match="'uniform'"):
        conf.make_T_sampler()


def test_official_templates_keep_the_official_recipe():
    import templates
    demo = ('shapes32_autoenc', 'pretrain_shapes32', 'scenes32_autoenc')
    for name in templates.TEMPLATES:
        conf = getattr(templates, name)()
        if name in demo:
            # this project's demos use the study's winner (README)
            assert conf.beatgans_model_mean_type == ModelMeanType.start_x
            continue
        assert conf.loss_weighting == 'none', name
        assert conf.T_sampler == 'uniform', name
        assert conf.beatgans_model_mean_type == ModelMeanType.eps, name
        assert isinstance(conf.make_T_sampler(), UniformSampler), name


def test_a_checkpoint_of_another_prediction_target_is_refused():
    import validation
    eps = shapes32_autoenc()
    eps.beatgans_model_mean_type = ModelMeanType.eps
    state = {'hyper_parameters': eps.as_dict_jsonable()}
    v = shapes32_autoenc()
    v.beatgans_model_mean_type = ModelMeanType.v
    # (an official or older checkpoint has no prediction_target: eps)
    with pytest.raises(ValueError, match=r"old\.ckpt holds a decoder trained "
                       r"to predict 'eps', but conf 'shapes32_autoenc' "
                       r"predicts 'v' \(conf\.beatgans_model_mean_type\)"):
        validation.warn_if_hparams_differ(state, v, 'checkpoint old.ckpt')
    state_v = dict(state, prediction_target='v')
    assert validation.warn_if_hparams_differ(state_v, v, 'new.ckpt') == []
    with pytest.raises(ValueError, match="predict 'v'"):
        validation.warn_if_hparams_differ(state_v, eps, 'new.ckpt')
    # another loss weighting only warns (the weights still mean eps)
    w = shapes32_autoenc()
    w.beatgans_model_mean_type = ModelMeanType.eps
    w.loss_weighting = 'min_snr'
    with pytest.warns(UserWarning, match="loss_weighting: checkpoint 'none'"):
        validation.warn_if_hparams_differ(state, w, 'checkpoint old.ckpt')
