"""The core (model + diffusion) reproduces the reference's own numbers.

Every fixture folder in tests/golden with a recipe.json is checked, so
new fixtures of the same kind are picked up without code changes."""
import pytest
import torch

from conftest import (ATOL_FORWARD, ATOL_LOOP, conf_from_recipe, golden,
                      golden_dirs, load_golden_ckpt, load_recipe,
                      submodel_state)

MODEL_DIRS = golden_dirs()


def test_golden_fixtures_present():
    for name in ('tiny_autoenc', 'tiny_autoenc_latent', 'tiny_ddpm'):
        for f in ('recipe.json', 'last.ckpt', 'io.pt'):
            golden(name, f)
    assert {p.name for p in MODEL_DIRS} >= {
        'tiny_autoenc', 'tiny_autoenc_latent', 'tiny_ddpm'}


def _setup(path):
    recipe = load_recipe(path)
    conf = conf_from_recipe(recipe['recipe'])
    model = conf.make_model_conf().make_model()
    ckpt = load_golden_ckpt(path / 'last.ckpt')
    model.load_state_dict(submodel_state(ckpt['state_dict'], 'model.'),
                          strict=True)
    model.eval()
    io = torch.load(path / 'io.pt')
    return recipe, conf, model, ckpt, io


def _close(actual, expected, atol, name):
    assert actual.shape == expected.shape, (name, actual.shape,
                                            expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= atol, f'{name}: max abs error {err:.3g} > {atol}'


@pytest.fixture(scope='module', params=MODEL_DIRS, ids=lambda p: p.name)
def fixture(request):
    with torch.no_grad():
        yield _setup(request.param)


def test_param_count(fixture):
    recipe, conf, model, ckpt, io = fixture
    n = sum(p.numel() for p in model.parameters())
    assert n == recipe['num_params_model']
    if 'num_params_latent_net' in recipe:
        assert sum(p.numel() for p in model.latent_net.parameters()
                   ) == recipe['num_params_latent_net']


def test_ema_weights_load_strict(fixture):
    recipe, conf, model, ckpt, io = fixture
    ema = conf.make_model_conf().make_model()
    ema.load_state_dict(submodel_state(ckpt['state_dict'], 'ema_model.'),
                        strict=True)


@torch.no_grad()
def test_forward_outputs(fixture):
    recipe, conf, model, ckpt, io = fixture
    if 'x_start' not in io:
        pytest.skip('latent-only fixture')
    sampler = conf.make_diffusion_conf().make_sampler()
    x_t = sampler.q_sample(io['x_start'], io['t'], noise=io['noise'])
    _close(x_t, io['x_t'], ATOL_FORWARD, 'x_t')
    if conf.model_type.has_autoenc():
        cond = model.encoder(io['x_start'])
        _close(cond, io['cond'], ATOL_FORWARD, 'cond')
        _close(model(x=io['x_t'], t=io['t'], cond=io['cond']).pred,
               io['pred_with_cond'], ATOL_FORWARD, 'pred_with_cond')
        _close(model(x=io['x_t'], t=io['t'], x_start=io['x_start']).pred,
               io['pred_with_x_start'], ATOL_FORWARD, 'pred_with_x_start')
        if 'stylespace' in io:
            _close(model.encode_stylespace(io['x_start']), io['stylespace'],
                   ATOL_FORWARD, 'stylespace')
    else:
        _close(model(x=io['x_t'], t=io['t']).pred, io['pred'], ATOL_FORWARD,
               'pred')


@pytest.mark.parametrize('loss', ['mse', 'l1'])
@torch.no_grad()
def test_training_losses(fixture, loss):
    recipe, conf, model, ckpt, io = fixture
    key = f'loss_{loss}'
    if key not in io:
        pytest.skip(f'no {key} in this fixture')
    from choices import LossType
    conf = conf.clone()
    conf.beatgans_loss_type = LossType(loss)
    sampler = conf.make_diffusion_conf().make_sampler()
    out = sampler.training_losses(model, io['x_start'], io['t'],
                                  noise=io['noise'])
    _close(out['loss'], io[key], ATOL_FORWARD, key)


@torch.no_grad()
def test_sampling_loops(fixture):
    recipe, conf, model, ckpt, io = fixture
    checked = 0
    for key in io:
        if key.startswith('timestep_map_T'):
            T = int(key[len('timestep_map_T'):])
            sampler = conf._make_diffusion_conf(T).make_sampler()
            assert sampler.timestep_map == io[key].tolist()
            checked += 1
        elif key.startswith('render_T'):
            T = int(key[len('render_T'):])
            sampler = conf._make_diffusion_conf(T).make_sampler()
            out = sampler.sample(model, noise=io['x_T'], cond=io['cond'])
            _close(out, io[key], ATOL_LOOP, key)
            checked += 1
        elif key.startswith('encode_stochastic_T'):
            T = int(key[len('encode_stochastic_T'):])
            sampler = conf._make_diffusion_conf(T).make_sampler()
            out = sampler.ddim_reverse_sample_loop(
                model, io['x_start'], model_kwargs={'cond': io['cond']})
            _close(out['sample'], io[key], ATOL_LOOP, key)
            checked += 1
        elif key.startswith('sample_T'):
            T = int(key[len('sample_T'):])
            sampler = conf._make_diffusion_conf(T).make_sampler()
            _close(sampler.sample(model, noise=io['x_T']), io[key], ATOL_LOOP,
                   key)
            checked += 1
    if 'x_start' in io:
        assert checked > 0, 'fixture has no sampling outputs'


@torch.no_grad()
def test_latent_net(fixture):
    recipe, conf, model, ckpt, io = fixture
    if 'latent_pred' not in io:
        pytest.skip('no latent net in this fixture')
    net = model.latent_net
    _close(net(io['z'], io['t']).pred, io['latent_pred'], ATOL_FORWARD,
           'latent_pred')
    sampler = conf.make_latent_diffusion_conf().make_sampler()
    assert torch.equal(torch.from_numpy(sampler.betas),
                       io['latent_betas_full'])
    loss = sampler.training_losses(net, io['z'], io['t'],
                                   noise=io['z_noise'])['loss']
    _close(loss, io['latent_loss'], ATOL_FORWARD, 'latent_loss')
    for key in io:
        if key.startswith('latent_sample_T'):
            T = int(key[len('latent_sample_T'):])
            s = conf._make_latent_diffusion_conf(T).make_sampler()
            out = s.sample(net, noise=io['z_noise'],
                           clip_denoised=conf.latent_clip_sample)
            _close(out, io[key], ATOL_LOOP, key)


def test_official_hyper_parameters_load_into_a_config():
    """An official checkpoint's hyper_parameters (compatibility-only names
    such as ``parallel`` and ``fid_use_torch`` included) load strictly into
    a TrainConfig and give back the run's settings."""
    from config import COMPAT_ONLY_FIELDS, TrainConfig
    for path in MODEL_DIRS:
        hp = load_golden_ckpt(path / 'last.ckpt')['hyper_parameters']
        assert COMPAT_ONLY_FIELDS & set(hp), 'fixture lost the official names'
        conf = TrainConfig()
        conf.from_dict(hp, strict=True)
        want = load_recipe(path)['recipe']['set']
        for k in ('name', 'img_size', 'net_ch', 'style_ch', 'T_eval'):
            assert getattr(conf, k) == want[k], k
        assert not COMPAT_ONLY_FIELDS & set(conf.__dict__)


def test_compat_only_names_are_accepted_and_ignored():
    """Official-style code that sets e.g. ``conf.parallel = True`` keeps
    running; the name has no effect and reading it says why."""
    from config import COMPAT_ONLY_FIELDS, TrainConfig
    conf = TrainConfig()
    for name in COMPAT_ONLY_FIELDS:
        setattr(conf, name, True)
        assert name not in conf.__dict__
        with pytest.raises(AttributeError, match='compatibility-only'):
            getattr(conf, name)
    assert conf.clone().as_dict_jsonable() == TrainConfig().as_dict_jsonable()
    with pytest.raises(ValueError, match='unknown config key'):
        conf.from_dict({'not_a_field': 1}, strict=True)
