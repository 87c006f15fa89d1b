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


def bf16_machine(monkeypatch):
    monkeypatch.setattr(hardware, 'choose_precision',
                        lambda *a, **k: ('bf16-mixed', 'stand-in bf16 CPU'))


def test_auto_runs_small_cpu_calls_in_float32(monkeypatch, capsys):
    """On a CPU, bf16 does not pay for a call of one 32x32 image (0.92x
    measured, inference_precision.CPU_BF16_MIN_PIXELS): 'auto' runs it in
    float32, and a batch of 4 (4096 pixels) in bf16; it says so once."""
    bf16_machine(monkeypatch)
    model = tiny()
    seen, _ = autocast_seen(model)           # one 32x32 image
    assert seen == [torch.float32] * 2
    seen.clear()
    model.render(torch.randn(4, 3, 32, 32),
                 torch.zeros(4, model.conf.style_ch), T=2)
    assert seen == [torch.bfloat16] * 2
    said = capsys.readouterr().out
    assert said.count('inference precision: bf16-mixed') == 1
    assert '32-true for calls under 4096 pixels' in said
    assert model.precision_chosen() == 'bf16-mixed'
    assert model.precision_chosen(pixels=1024) == '32-true'


def test_the_small_call_rule_counts_every_operation(monkeypatch):
    bf16_machine(monkeypatch)
    model = tiny()
    seen, _ = autocast_seen(model)
    seen.clear()
    model.encode_stochastic(torch.zeros(1, 3, 32, 32),
                            torch.zeros(1, model.conf.style_ch), T=2)
    assert seen == [torch.float32] * 2
    seen.clear()
    cond = torch.zeros(1, model.conf.style_ch)
    xT = torch.zeros(1, 3, 32, 32)
    model.interpolate(cond, xT, cond, xT, torch.linspace(0, 1, 4), T=2)
    assert seen == [torch.bfloat16] * 2


def test_explicit_bf16_and_the_gpu_ignore_the_small_call_rule():
    for_call = inference_precision.for_call
    assert for_call('bf16-mixed', 'bf16-mixed', 'cpu', 1024) == 'bf16-mixed'
    assert for_call('bf16-mixed', 'auto', 'cuda', 1024) == 'bf16-mixed'
    assert for_call('16-mixed', 'auto', 'cuda', 1) == '16-mixed'
    assert for_call('bf16-mixed', 'auto', 'cpu', 4095) == '32-true'
    assert for_call('bf16-mixed', 'auto', 'cpu', 4096) == 'bf16-mixed'
    assert for_call('bf16-mixed', 'auto', 'cpu', None) == 'bf16-mixed'


def test_front_end_steps_match_the_measured_ddim_quality():
    """docs/solver.md: DPM-Solver++(2M) at 7 / 17 / 34 steps was at least as
    close to the converged image as DDIM at 20 / 50 / 100 on both trained
    models; at 5 it was not as close as DDIM at 10 (scenes), so never
    below 7; the latent DPM keeps its count."""
    got = [steps_matching_ddim('dpmpp_2m', n) for n in (5, 10, 20, 50, 100)]
    assert got == [5, 7, 7, 17, 34]
    assert steps_matching_ddim('dpmpp_2m', 50, latent=True) == 50
    assert steps_matching_ddim('ddim', 20) == 20


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
