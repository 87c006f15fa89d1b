"""metrics.py: FID math, the feature networks (random-weight stand-ins,
no downloads), SSIM/PSNR, and the evaluate_* pipelines on tiny models."""
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import linalg, ndimage
from torch import nn

import evaluation
import metrics
from conftest import conf_from_recipe, golden, load_recipe


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------
def _tiny_extractor(dims=4, seed=0):
    """A fast random feature network (stands in for Inception)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, dims, 3, stride=2), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _dataset(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{'img': torch.rand(3, size, size, generator=g) * 2 - 1,
             'index': i} for i in range(n)]


def _tiny(name, tmp_path, n_images=6):
    path = golden(name)
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    conf.eval_num_images = n_images
    conf.batch_size_eval = 4
    conf.num_workers = 0
    conf.work_cache_dir = str(tmp_path / 'cache')
    torch.manual_seed(0)
    model = conf.make_model_conf().make_model()
    sampler = conf._make_diffusion_conf(2).make_sampler()
    return conf, model, sampler


class _DeterministicSampler:
    """A stand-in sampler whose output depends only on z_sem (no noise),
    so that FID is a deterministic function of the image set."""

    def sample(self, model, noise, model_kwargs=None, **kwargs):
        cond = model_kwargs['cond']
        level = torch.tanh(cond[:, :3])[:, :, None, None]
        return level.expand_as(noise).contiguous()


# ----------------------------------------------------------------------
# FID math
# ----------------------------------------------------------------------
def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = (np.sum((mu1 - mu2)**2)
                + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))
    got = metrics.calculate_frechet_distance(mu1, np.diag(s1), mu2,
                                             np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_frechet_distance_random_covariances_vs_scipy():
    rng = np.random.default_rng(1)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    direct = (np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
              - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
    got = metrics.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float)
    assert got == pytest.approx(direct, rel=1e-8)
    # symmetric in its two distributions
    assert metrics.calculate_frechet_distance(mu2, s2, mu1, s1) == \
        pytest.approx(got, rel=1e-8)


def test_fid_self_zero_and_grows_with_shift():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(200, 8))
    assert abs(metrics.fid_from_features(feats, feats)) < 1e-6
    fids = [metrics.fid_from_features(feats, feats + s)
            for s in (0.1, 0.5, 1.0)]
    # a shift by s in every one of 8 dims adds exactly 8 s^2
    assert fids == pytest.approx([8 * 0.01, 8 * 0.25, 8.0], rel=1e-6)


def test_activation_statistics_matches_numpy():
    feats = torch.randn(30, 5)
    mu, sigma = metrics.activation_statistics(feats)
    assert mu.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, feats.double().mean(0).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats.double().numpy().T),
                               atol=1e-12)


def test_to_unit_range_is_the_png_quantisation():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0, 1.5])
    q = metrics.to_unit_range(x)
    expected = torch.tensor([0, 64, 128, 166, 255, 255]) / 255
    torch.testing.assert_close(q, expected.float())


# ----------------------------------------------------------------------
# FID Inception network
# ----------------------------------------------------------------------
def test_fid_inception_matches_pytorch_fid(tmp_path, monkeypatch):
    """Our no-download build equals pytorch_fid.InceptionV3 with the same
    weights, and the weight-file path loads them strictly."""
    import pytorch_fid.inception as pfi
    torch.manual_seed(0)
    ours = metrics.load_fid_inception(random_init=True)
    assert ours.cache_tag == 'random-init'
    # the weights file: a random state dict of the full network
    net = metrics._fid_inception_net()
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    for name, b in net.named_buffers():
        if name.endswith('running_var'):
            b.uniform_(0.5, 1.5)
    path = tmp_path / metrics.FID_WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    loaded = metrics.load_fid_inception(path=str(path))
    assert loaded.cache_tag == metrics.FID_WEIGHTS_FILE

    monkeypatch.setattr(pfi, 'load_state_dict_from_url',
                        lambda *a, **k: torch.load(path))
    reference = pfi.InceptionV3([3]).eval()
    x = torch.rand(2, 3, 32, 32)
    got = metrics.extract_features(loaded, x)
    assert got.shape == (2, 2048)
    # (pytorch_fid's module, which returns a list, is accepted as well)
    want = metrics.extract_features(reference, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert got.abs().max() > 1e-3
    # the random stand-in does not hold the file's weights
    first = ours.blocks[0].conv.weight
    assert not torch.equal(first, loaded.blocks[0].conv.weight)


def test_missing_fid_weights_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(metrics.WeightsNotFoundError) as e:
        metrics.load_fid_inception()
    msg = str(e.value)
    assert metrics.FID_WEIGHTS_FILE in msg
    assert metrics.FID_WEIGHTS_URL in msg
    assert 'conf.fid_weights_path' in msg and 'DIFFAE_FID_WEIGHTS' in msg
    assert os.path.join('checkpoints', metrics.FID_WEIGHTS_FILE) in msg
    # an explicit (config or env) path that does not exist is named
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(tmp_path / 'x.pth'))
    with pytest.raises(FileNotFoundError, match='x.pth'):
        metrics.load_fid_inception()
    conf = SimpleNamespace(fid_weights_path=str(tmp_path / 'y.pth'))
    with pytest.raises(FileNotFoundError, match='y.pth'):
        metrics.load_fid_inception(conf=conf)


def test_weights_found_in_default_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.ALEXNET_WEIGHTS_ENV, raising=False)
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    (hub / 'checkpoints').mkdir(parents=True)
    f = hub / 'checkpoints' / metrics.ALEXNET_WEIGHTS_FILE
    f.write_bytes(b'')
    find = metrics.find_weights
    args = (metrics.ALEXNET_WEIGHTS_FILE, metrics.ALEXNET_WEIGHTS_URL)
    assert find(*args, env=metrics.ALEXNET_WEIGHTS_ENV) == str(f)
    (tmp_path / 'checkpoints').mkdir()
    (tmp_path / 'checkpoints' / metrics.ALEXNET_WEIGHTS_FILE).write_bytes(b'')
    assert find(*args, env=metrics.ALEXNET_WEIGHTS_ENV) == os.path.join(
        'checkpoints', metrics.ALEXNET_WEIGHTS_FILE)


# ----------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------
def test_missing_alexnet_weights_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.ALEXNET_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(metrics.WeightsNotFoundError) as e:
        metrics.load_lpips()
    msg = str(e.value)
    assert metrics.ALEXNET_WEIGHTS_FILE in msg
    assert metrics.ALEXNET_WEIGHTS_URL in msg
    assert 'DIFFAE_ALEXNET_WEIGHTS' in msg


def test_lpips_loads_alexnet_file_and_packaged_linear_layers(tmp_path):
    import lpips
    import torchvision
    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    path = tmp_path / metrics.ALEXNET_WEIGHTS_FILE
    torch.save(alex.state_dict(), path)
    fn = metrics.load_lpips(path=str(path))
    feats = alex.features
    for i, k in [(0, 'slice1'), (3, 'slice2'), (6, 'slice3'), (8, 'slice4'),
                 (10, 'slice5')]:
        conv = dict(getattr(fn.net, k).named_children())[str(i)]
        assert torch.equal(conv.weight, feats[i].weight)
        assert torch.equal(conv.bias, feats[i].bias)
    # the calibrated linear layers ship with the lpips package
    packaged = torch.load(os.path.join(os.path.dirname(lpips.__file__),
                                       'weights', 'v0.1', 'alex.pth'),
                          map_location='cpu')
    assert torch.equal(fn.lin0.model[1].weight,
                       packaged['lin0.model.1.weight'])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d_same = fn(x, x).view(-1)
    d_other = fn(x, x.flip(0)).view(-1)
    assert torch.all(d_same.abs() < 1e-6) and torch.all(d_other > 0)
    # a wrong file is refused
    torch.save({'features.0.weight': torch.zeros(1)}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='AlexNet'):
        metrics.load_lpips(path=str(tmp_path / 'bad.pth'))


# ----------------------------------------------------------------------
# SSIM / PSNR / MSE
# ----------------------------------------------------------------------
def test_ssim_identity_and_monotone_in_noise():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 24, 24)
    assert metrics.ssim(img, img).item() == pytest.approx(1.0, abs=1e-6)
    per_image = metrics.ssim(img, img, size_average=False)
    assert per_image.shape == (2, )
    noise = torch.randn_like(img)
    values = [metrics.ssim(img, (img + s * noise).clamp(0, 1)).item()
              for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[0] < 1


def test_ssim_matches_direct_numpy():
    """The official formula with zero-padded Gaussian (sigma 1.5) means."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=(2, 1, 3, 12, 12))
    k = 5
    x = np.arange(k) - k // 2
    g = np.exp(-x**2 / (2 * 1.5**2))
    w = np.outer(g, g) / g.sum()**2

    def blur(z):
        return ndimage.correlate(z, w, mode='constant', cval=0.0)

    maps = []
    for c in range(3):
        p, q = a[0, c], b[0, c]
        m1, m2 = blur(p), blur(q)
        s1, s2 = blur(p * p) - m1**2, blur(q * q) - m2**2
        s12 = blur(p * q) - m1 * m2
        c1, c2 = 0.01**2, 0.03**2
        maps.append((2 * m1 * m2 + c1) * (2 * s12 + c2) /
                    ((m1**2 + m2**2 + c1) * (s1 + s2 + c2)))
    expected = np.mean(maps)
    got = metrics.ssim(torch.tensor(a).float(), torch.tensor(b).float(),
                       window_size=k)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_ssim_known_value_for_constant_images():
    # constant images: sigma terms vanish, SSIM = (2ab + C1)/(a^2+b^2+C1)
    # in the interior; zero padding changes the borders, so use a window
    # of size 1 (no padding) for the closed form
    a, b = 0.2, 0.6
    x, y = torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(x, y, window_size=1).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_psnr_and_mse():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.full_like(x, 0.1)
    torch.testing.assert_close(metrics.mse(x, y), torch.full((2, ), 0.01))
    # mse 0.01 -> 20 log10(1 / 0.1) = 20 dB
    torch.testing.assert_close(metrics.psnr(x, y), torch.full((2, ), 20.))
    assert math.isinf(metrics.psnr(x, x)[0].item())


# ----------------------------------------------------------------------
# pipelines on tiny models
# ----------------------------------------------------------------------
def test_real_statistics_cached(tmp_path):
    conf, _, _ = _tiny('tiny_autoenc', tmp_path, n_images=6)
    val = _dataset(8)
    ext = _tiny_extractor()
    mu, sigma = metrics.real_statistics(conf, val, ext)
    assert os.path.isfile(conf.fid_cache + '.npz')

    class Boom(nn.Module):
        cache_tag = 'Sequential'  # same tag as the tiny extractor

        def forward(self, x):
            raise AssertionError('cache not used')

    mu2, sigma2 = metrics.real_statistics(conf, val, Boom())
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    # another count (or another network) recomputes
    conf.eval_num_images = 7
    with pytest.raises(AssertionError, match='cache not used'):
        metrics.real_statistics(conf, val, Boom())
    conf.eval_num_images = 6
    ext.cache_tag = 'other'
    mu3, _ = metrics.real_statistics(conf, val, ext)
    np.testing.assert_allclose(mu3, mu)
    # too few validation images is a clear error
    conf.eval_num_images = 9
    with pytest.raises(ValueError, match='eval_num_images'):
        metrics.real_statistics(conf, val, ext)


@pytest.mark.parametrize('name', ['tiny_autoenc', 'tiny_ddpm',
                                  'tiny_autoenc_latent'])
def test_evaluate_fid_end_to_end(name, tmp_path):
    conf, model, sampler = _tiny(name, tmp_path, n_images=6)
    latent_sampler = conds_mean = conds_std = None
    if conf.train_mode.is_latent_diffusion():
        latent_sampler = conf._make_latent_diffusion_conf(2).make_sampler()
        conds_mean = torch.zeros(conf.style_ch)
        conds_std = torch.ones(conf.style_ch)
    model.train()
    torch.manual_seed(1)
    fid = metrics.evaluate_fid(sampler, model, conf, 'cpu',
                               train_data=_dataset(8, seed=1),
                               val_data=_dataset(8, seed=2),
                               latent_sampler=latent_sampler,
                               conds_mean=conds_mean, conds_std=conds_std,
                               inception=_tiny_extractor())
    assert isinstance(fid, float) and math.isfinite(fid) and fid > 0
    assert model.training, 'the model mode is restored'
    assert os.path.isfile(conf.fid_cache + '.npz')


def test_evaluate_fid_zero_for_identical_sets(tmp_path, monkeypatch):
    """Autoencoder path with a sampler that returns its input image: the
    generated set is the train subset; with val == train, FID ~ 0."""
    conf, model, _ = _tiny('tiny_autoenc', tmp_path, n_images=8)

    class Identity:
        def sample(self, model, noise, model_kwargs=None, **kwargs):
            return self.x

    data = _dataset(8)
    sampler = Identity()
    orig = evaluation.render_condition

    def render(conf, model, x_T, sampler, x_start=None, cond=None):
        sampler.x = x_start
        return orig(conf, model, x_T, sampler, x_start=x_start, cond=cond)

    monkeypatch.setattr(evaluation, 'render_condition', render)
    fid = metrics.evaluate_fid(sampler, model, conf, 'cpu', data, data,
                               inception=_tiny_extractor())
    brighter = [{'img': (d['img'] + 1).clamp(-1, 1), 'index': d['index']}
                for d in data]
    fid_shift = metrics.evaluate_fid(sampler, model, conf, 'cpu', brighter,
                                     data, inception=_tiny_extractor())
    assert abs(fid) < 1e-6
    assert fid_shift > 1e-2, fid_shift


@pytest.mark.parametrize('inverted', [False, True])
def test_evaluate_lpips_end_to_end(inverted, tmp_path):
    conf, model, sampler = _tiny('tiny_autoenc', tmp_path, n_images=5)
    lpips_fn = metrics.load_lpips(random_init=True)
    model.train()
    scores = metrics.evaluate_lpips(sampler, model, conf, 'cpu',
                                    _dataset(6), use_inverted_noise=inverted,
                                    lpips_fn=lpips_fn)
    assert set(scores) == {'lpips', 'mse', 'ssim', 'psnr'}
    assert all(isinstance(v, float) and math.isfinite(v)
               for v in scores.values())
    assert scores['mse'] > 0 and scores['lpips'] >= 0
    assert -1 <= scores['ssim'] < 1
    assert model.training


def test_evaluate_lpips_ddpm_needs_inversion(tmp_path):
    conf, model, sampler = _tiny('tiny_ddpm', tmp_path, n_images=2)
    lpips_fn = metrics.load_lpips(random_init=True)
    with pytest.raises(AssertionError, match='use_inverted_noise'):
        metrics.evaluate_lpips(sampler, model, conf, 'cpu', _dataset(2),
                               lpips_fn=lpips_fn)
    scores = metrics.evaluate_lpips(sampler, model, conf, 'cpu', _dataset(2),
                                    use_inverted_noise=True,
                                    lpips_fn=lpips_fn)
    assert math.isfinite(scores['psnr'])


def test_reconstruction_scores_perfect():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    fn = metrics.load_lpips(random_init=True)
    s = metrics.reconstruction_scores(x, x, fn)
    assert torch.all(s['mse'] == 0) and torch.all(torch.isinf(s['psnr']))
    torch.testing.assert_close(s['ssim'], torch.ones(3))
    assert torch.all(s['lpips'].abs() < 1e-6)


# ----------------------------------------------------------------------
# torch.distributed (2 CPU processes, gloo)
# ----------------------------------------------------------------------
def _fid_run(tmp_dir):
    conf, model, _ = _tiny('tiny_autoenc', tmp_dir, n_images=7)
    return metrics.evaluate_fid(_DeterministicSampler(), model, conf, 'cpu',
                                train_data=_dataset(8, seed=1),
                                val_data=_dataset(8, seed=2),
                                inception=_tiny_extractor())


def _dist_worker(rank, world, tmp_path):
    from torch import distributed
    torch.set_num_threads(1)
    distributed.init_process_group(
        'gloo', init_method=f'file://{tmp_path}/rendezvous', rank=rank,
        world_size=world)
    try:
        # uneven shares: 3 + 2 rows
        x = (torch.arange(3 - rank) + 10 * rank).float().view(-1, 1)
        rows = metrics.all_gather_rows(x)
        fid = _fid_run(tmp_path / 'dist')
        torch.save({'rows': rows, 'fid': fid}, tmp_path / f'out{rank}.pt')
    finally:
        distributed.destroy_process_group()


def test_distributed_matches_single_process(tmp_path):
    import torch.multiprocessing as mp
    single = _fid_run(tmp_path / 'single')
    mp.spawn(_dist_worker, args=(2, tmp_path), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f'out{r}.pt') for r in range(2)]
    expected_rows = torch.tensor([[0.], [1.], [2.], [10.], [11.]])
    for out in outs:
        torch.testing.assert_close(out['rows'], expected_rows)
        assert out['fid'] == pytest.approx(single, rel=1e-5, abs=1e-8)
    assert single > 0


def test_missing_weights_reports_how_to_install(tmp_path, monkeypatch):
    import metrics
    from conftest import conf_from_recipe, load_recipe
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    path = golden('tiny_autoenc')
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    msg = metrics.missing_weights(conf)
    assert metrics.FID_WEIGHTS_FILE in msg and metrics.FID_WEIGHTS_URL in msg
    fid = tmp_path / 'inception.pth'
    alex = tmp_path / 'alex.pth'
    fid.write_bytes(b'')
    conf.fid_weights_path = str(fid)
    assert metrics.ALEXNET_WEIGHTS_FILE in metrics.missing_weights(conf)
    alex.write_bytes(b'')
    conf.alexnet_weights_path = str(alex)
    assert metrics.missing_weights(conf) == ''
