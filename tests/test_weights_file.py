"""The shareable weights file (issue 29): an official-format checkpoint
exported to .safetensors (EMA weights, z_sem statistics, the template in
the metadata) loads without its template and gives the numbers of the
.ckpt; altered files are refused with the keys / fields named."""
import ast
import dataclasses
import hashlib
import inspect
import json
import os
import pickle

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

import checkpoint_io
import weights_file
from conftest import (ROOT, conf_from_recipe, golden,
                      load_golden_ckpt, load_recipe)
from inference import DiffAE, export_weights


def _conf(name):
    conf = conf_from_recipe(load_recipe(golden(name))['recipe'])
    if (golden(name) / 'latent.pkl').exists():
        conf.latent_infer_path = str(golden(name, 'latent.pkl'))
    return conf


@pytest.fixture(scope='module', params=['tiny_autoenc', 'tiny_autoenc_latent'])
def exported(request, tmp_path_factory):
    """(name, conf, .ckpt path, .safetensors path, metadata)."""
    name = request.param
    out = tmp_path_factory.mktemp('export') / f'{name}.safetensors'
    ckpt = str(golden(name, 'last.ckpt'))
    meta = export_weights(_conf(name), out, ckpt)
    return name, _conf(name), ckpt, str(out), meta


def _pair(name, tmp_path):
    """The model of a golden .ckpt and of its export (loaded without its
    template)."""
    out = str(tmp_path / f'{name}.safetensors')
    ckpt = str(golden(name, 'last.ckpt'))
    export_weights(_conf(name), out, ckpt)
    return DiffAE.from_checkpoint(_conf(name), ckpt), DiffAE.from_checkpoint(
        out)


def _rewrite(src, dst, change=lambda t: t, meta_change=lambda m: m):
    with safetensors.safe_open(src, 'pt') as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(change(tensors), dst,
                                metadata=meta_change(meta))
    return dst


@torch.no_grad()
def test_encode_encode_stochastic_render_are_bit_identical(tmp_path):
    a, b = _pair('tiny_autoenc', tmp_path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x * 2 - 1
    cond = a.encode(x)
    assert torch.equal(b.encode(x), cond)
    xT = a.encode_stochastic(x, cond, T=2)
    assert torch.equal(b.encode_stochastic(x, cond, T=2), xT)
    assert torch.equal(b.render(xT, cond, T=2), a.render(xT, cond, T=2))


@torch.no_grad()
def test_latent_export_samples_bit_identically(tmp_path):
    a, b = _pair('tiny_autoenc_latent', tmp_path)
    torch.manual_seed(4)
    from_ckpt = a.sample(2, 'cpu', T=2, T_latent=3)
    torch.manual_seed(4)
    assert torch.equal(b.sample(2, 'cpu', T=2, T_latent=3), from_ckpt)


def test_file_holds_the_ema_weights_and_statistics_only(exported):
    name, conf, ckpt, out, _ = exported
    sd = load_golden_ckpt(ckpt)['state_dict']
    want = {k: v for k, v in sd.items() if k.startswith('ema_model.')}
    if conf.latent_infer_path:
        latents = torch.load(conf.latent_infer_path)
        want['conds_mean'] = latents['conds_mean'].reshape(1, -1)
        want['conds_std'] = latents['conds_std'].reshape(1, -1)
    got = safetensors.torch.load_file(out)
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    data = sum(v.numel() * v.element_size() for v in want.values())
    assert data < os.path.getsize(out) < data + 64_000


def test_metadata_names_template_target_and_source_hash(exported):
    name, conf, ckpt, out, meta = exported
    with safetensors.safe_open(out, 'pt') as f:
        stored = f.metadata()
    assert stored == meta
    assert stored['template'] == name
    assert stored['prediction_target'] == 'eps'
    with open(ckpt, 'rb') as f:
        assert stored['source_sha256'] == hashlib.sha256(f.read()
                                                         ).hexdigest()
    config = json.loads(stored['config'])
    assert config['img_size'] == 32 and config['net_ch'] == 32
    assert stored['latent_stats'] == ('yes' if conf.latent_infer_path
                                      else 'no')


def test_tampered_shape_is_refused_with_the_key(exported, tmp_path):
    key = 'ema_model.input_blocks.0.0.bias'

    def change(t):
        t[key] = torch.zeros(t[key].numel() + 1)
        return t
    bad = _rewrite(exported[3], str(tmp_path / 'bad.safetensors'), change)
    with pytest.raises(checkpoint_io.CheckpointMismatchError, match=key):
        DiffAE.from_checkpoint(bad)


def test_missing_key_is_refused_with_the_key(exported, tmp_path):
    key = 'ema_model.out.2.weight'

    def change(t):
        del t[key]
        return t
    bad = _rewrite(exported[3], str(tmp_path / 'bad.safetensors'), change)
    with pytest.raises(checkpoint_io.CheckpointMismatchError,
                       match=r'missing keys \(1\):\n  ' + key):
        DiffAE.from_checkpoint(bad)


def test_other_template_is_refused_with_the_fields(exported):
    other = _conf('tiny_autoenc' if exported[0] != 'tiny_autoenc' else
                  'tiny_autoenc_latent')
    with pytest.raises(weights_file.WeightsFileError) as e:
        DiffAE.from_checkpoint(other, exported[3])
    for field in ('train_mode', 'net_latent_net_type', 'name'):
        assert f'  {field}: file ' in str(e.value)


def test_metadata_of_another_template_does_not_fit_the_tensors(tmp_path):
    name = 'tiny_autoenc'
    out = str(tmp_path / 'a.safetensors')
    export_weights(_conf(name), out, str(golden(name, 'last.ckpt')))
    import templates
    shapes = weights_file.config_fields(templates.shapes32_autoenc())

    def meta(m):
        m['config'] = json.dumps(shapes)
        m['prediction_target'] = shapes['beatgans_model_mean_type']
        return m
    bad = _rewrite(out, str(tmp_path / 'b.safetensors'), meta_change=meta)
    with pytest.raises(checkpoint_io.CheckpointMismatchError,
                       match='shape mismatches'):
        DiffAE.from_checkpoint(bad)


class _Marker:
    def __reduce__(self):
        return (os.mkdir, (str(MARKER),))


MARKER = None


def test_a_pickle_under_the_name_is_refused_and_not_run(tmp_path):
    global MARKER
    MARKER = tmp_path / 'the_pickle_ran'
    evil = tmp_path / 'evil.safetensors'
    evil.write_bytes(pickle.dumps({'state_dict': _Marker()}))
    with pytest.raises(checkpoint_io.CheckpointLoadError,
                       match='evil.safetensors.*not a complete safetensors'):
        DiffAE.from_checkpoint(str(evil))
    assert not MARKER.exists()


def test_truncated_file_is_named(exported, tmp_path):
    data = open(exported[3], 'rb').read()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(checkpoint_io.CheckpointLoadError, match='cut.safe'):
        DiffAE.from_checkpoint(str(cut))


def test_size_formula_matches_the_written_file(exported):
    with safetensors.safe_open(exported[3], 'pt') as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        meta = f.metadata()
    assert checkpoint_io.safetensors_size(shapes, meta) == os.path.getsize(
        exported[3])


def _official_templates():
    import templates
    import templates_cls
    import templates_latent
    from config import TrainConfig
    out = {}
    for module in (templates, templates_latent, templates_cls):
        for n, fn in vars(module).items():
            if n.startswith('_') or not inspect.isfunction(fn) or any(
                    p.default is p.empty for p in
                    inspect.signature(fn).parameters.values()):
                continue
            conf = fn()
            if isinstance(conf, TrainConfig):
                out[n] = conf
    return out


def _plain(v):
    if dataclasses.is_dataclass(v):
        return {k: _plain(x) for k, x in vars(v).items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, set):
        return sorted(v)
    return v


def test_every_official_template_is_rebuilt_from_its_metadata():
    confs = _official_templates()
    assert len(confs) > 30 and 'ffhq256_autoenc' in confs
    for name, conf in confs.items():
        conf.make_model_conf()
        back = weights_file.conf_from_fields(weights_file.config_fields(conf))
        assert _plain(back.model_conf) == _plain(conf.model_conf), name
        assert _plain(back.make_eval_diffusion_conf()) == _plain(
            conf.make_eval_diffusion_conf()), name
        assert _plain(back.make_latent_eval_diffusion_conf()) == _plain(
            conf.make_latent_eval_diffusion_conf()), name
        assert back.train_mode == conf.train_mode, name


def test_config_fields_hold_every_field_the_factories_read():
    from config import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    tree = ast.parse((ROOT / 'config.py').read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef)
               and n.name == 'TrainConfig')
    read = set()
    for fn in cls.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in (
                'make_model_conf', 'make_diffusion_conf',
                'make_latent_diffusion_conf'):
            read |= {n.attr for n in ast.walk(fn) if isinstance(
                n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == 'self' and n.attr in fields
                and isinstance(n.ctx, ast.Load)}
    # derived: make_model_conf sets them (from model_name and the rest)
    read -= {'model_type', 'model_conf'}
    # training-only: the opt-in perceptual loss term (issue 26) shapes the
    # training loss, not the network or the sampler, so a weights file
    # does not record it (a model trained with it loads into the
    # official template)
    read -= {'lpips_loss_weight', 'lpips_loss_t_max'}
    assert read <= set(weights_file.CONFIG_FIELDS), sorted(
        read - set(weights_file.CONFIG_FIELDS))
    assert len(read) > 40


def _classifier_ckpt(tmp_path):
    """A shapes32_autoenc_cls checkpoint with seeded random weights and
    z_sem statistics (as demo_tree makes it)."""
    from experiment_classifier import ClsModel
    from templates_cls import shapes32_autoenc_cls
    g = torch.Generator().manual_seed(0)
    conf = shapes32_autoenc_cls()
    conds = torch.randn(16, conf.style_ch, generator=g)
    conf.latent_infer_path = str(tmp_path / 'latent.pkl')
    torch.save({'conds': conds, 'conds_mean': conds.mean(0),
                'conds_std': conds.std(0)}, conf.latent_infer_path)
    model = ClsModel(conf)
    with torch.no_grad():
        for p in list(model.classifier.parameters()) + list(
                model.ema_classifier.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    path = str(tmp_path / 'cls.ckpt')
    torch.save({'state_dict': model.state_dict()}, path)
    return conf, path


def test_classifier_export_loads_without_its_template(tmp_path):
    from experiment_classifier import ClsModel, export_classifier
    conf, ckpt = _classifier_ckpt(tmp_path)
    out = str(tmp_path / 'cls.safetensors')
    export_classifier(conf, out, ckpt)
    assert sorted(safetensors.torch.load_file(out)) == [
        'classifier.bias', 'classifier.weight', 'conds_mean', 'conds_std',
        'ema_classifier.bias', 'ema_classifier.weight']
    a, b = ClsModel.from_checkpoint(conf, ckpt), ClsModel.from_checkpoint(out)
    assert b.id_to_cls == a.id_to_cls
    z = torch.randn(3, conf.style_ch)
    assert torch.equal(b.normalize(z), a.normalize(z))
    assert torch.equal(b.direction('red'), a.direction('red'))
    with pytest.raises(weights_file.WeightsFileError,
                       match="'classifier' model.*ClsModel"):
        DiffAE.from_checkpoint(out)


def test_cli_exports_and_renders_from_the_file_without_template(
        tmp_path, monkeypatch, capsys):
    import cli
    from PIL import Image
    monkeypatch.setattr(cli, 'load_template', lambda name: _conf(name))
    out = str(tmp_path / 'tiny.safetensors')
    ckpt = str(golden('tiny_autoenc', 'last.ckpt'))
    cli.main(['export', '--template', 'tiny_autoenc', '--ckpt', ckpt, out])
    printed = capsys.readouterr().out
    assert f'wrote {out}: {os.path.getsize(out) / 1e6:.1f} MB' in printed
    assert f'last.ckpt: {os.path.getsize(ckpt) / 1e6:.1f} MB' in printed
    Image.new('RGB', (32, 32), 'red').save(tmp_path / 'a.png')
    cli.main(['autoencode', '--ckpt', out, '--T', '2', '--T-inv', '2',
              '--device', 'cpu', '--out', str(tmp_path / 'o'),
              str(tmp_path / 'a.png')])
    assert (tmp_path / 'o' / 'autoencode.png').exists()
    with pytest.raises(SystemExit, match='--template is needed'):
        cli.main(['autoencode', '--ckpt', str(golden('tiny_autoenc',
                                                     'last.ckpt')),
                  str(tmp_path / 'a.png')])


def test_web_page_loads_an_export_by_its_own_template(exported):
    import app_logic
    m = app_logic.load_models(app_logic.Settings(
        ckpt=exported[3], cls_template=None, latent_template=None))
    assert m.autoenc.conf.name == exported[0]
    assert m.autoenc.source == exported[3]


def test_training_model_refuses_the_file_and_says_what_loads_it(exported):
    from experiment import LitModel
    with pytest.raises(checkpoint_io.CheckpointLoadError,
                       match=r'EMA weights only.*DiffAE\.from_checkpoint'):
        LitModel.from_checkpoint(exported[1], exported[3])
