"""Inference numerics (inference_precision.py, DiffAE's precision) and the
front-ends' solver defaults (cli.py, app_logic.Settings)."""
import pytest
import torch

import hardware
import inference_precision
from conftest import conf_from_recipe, golden, load_recipe
from inference import DiffAE, steps_matching_ddim


def tiny(precision='auto', solver=None):
    path = golden('tiny_autoenc')
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    return DiffAE.from_checkpoint(conf, path / 'last.ckpt',
                                  precision=precision, solver=solver)


def autocast_seen(model):
    """Render once; the autocast dtypes the UNet ran under."""
    seen = []
    real = model.ema_model.forward

    def spy(*a, **k):
        seen.append(torch.get_autocast_dtype('cpu')
                    if torch.is_autocast_enabled('cpu') else torch.float32)
        return real(*a, **k)
    model.ema_model.forward = spy
    cond = torch.zeros(1, model.conf.style_ch)
    out = model.render(torch.randn(1, 3, 32, 32), cond, T=2)
    return seen, out


def test_official_numerics_stay_float32_nchw():
    """precision=None (what LitModel's notebook methods use): no autocast,
    the weights keep their layout, nothing said."""
    model = tiny(precision=None)
    seen, out = autocast_seen(model)
    assert seen == [torch.float32] * 2 and out.dtype == torch.float32
    w = model.ema_model.input_blocks[0][0].weight
    assert w.is_contiguous()


def test_asked_bf16_runs_the_unet_in_bf16_channels_last(capsys):
    model = tiny(precision='bf16-mixed')
    seen, out = autocast_seen(model)
    assert seen == [torch.bfloat16] * 2
    # the solver's state and the result stay float32
    assert out.dtype == torch.float32
    assert model.encode(torch.zeros(1, 3, 32, 32)).dtype == torch.float32
    w = model.ema_model.input_blocks[0][0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    said = capsys.readouterr().out
    assert said.count('inference precision: bf16-mixed') == 1


def test_auto_takes_what_hardware_picks_for_training(monkeypatch):
    calls = []

    def pick(conf_precision, fp16, accelerator, precision=None):
        calls.append((fp16, accelerator))
        return '32-true', 'stand-in machine without bf16'
    monkeypatch.setattr(hardware, 'choose_precision', pick)
    model = tiny()                  # from_checkpoint's default: 'auto'
    seen, _ = autocast_seen(model)
    assert calls == [(model.conf.fp16, 'cpu')]
    assert seen == [torch.float32] * 2
    assert model.precision_chosen() == '32-true'


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="'fp8'.*bf16-mixed"):
        inference_precision.check_precision('fp8')


def test_cli_defaults_to_the_new_solver_at_matching_steps():
    import cli
    base = ['sample', '--template', 'shapes32_autoenc_latent']
    fast = cli.parse_args(base)
    assert (fast.solver, fast.precision) == ('dpmpp_2m', 'auto')
    assert (fast.T, fast.T_inv, fast.T_latent) == (
        steps_matching_ddim('dpmpp_2m', 20),
        steps_matching_ddim('dpmpp_2m', 100),
        steps_matching_ddim('dpmpp_2m', 20, latent=True))
    old = cli.parse_args(base + ['--solver', 'ddim'])
    assert (old.T, old.T_inv, old.T_latent) == (20, 100, 20)
    given = cli.parse_args(base + ['--T', '7'])
    assert given.T == 7


def test_web_page_defaults_keep_ddim_counts_for_ddim():
    import app_logic
    assert app_logic.Settings(solver='ddim').T_inv == 50
    s = app_logic.Settings()
    assert s.solver == 'dpmpp_2m' and s.precision == 'auto'
    assert (s.T, s.T_inv, s.T_latent) == (
        steps_matching_ddim('dpmpp_2m', 20), steps_matching_ddim(
            'dpmpp_2m', 50), steps_matching_ddim('dpmpp_2m', 50, True))


def test_solver_given_at_load_is_every_method_default():
    model = tiny(precision=None, solver='dpmpp_2m')
    assert model.sampler(4).conf.gen_type.value == 'dpmpp_2m'
    assert model.sampler(4, 'ddim').conf.gen_type.value == 'ddim'
