"""Eval-program grammar, the rendering helpers (interpolation,
manipulation) and the linear probe."""
import math

import pytest
import torch

import evaluation
import zsem_probe
import renderer
from conftest import ATOL_LOOP, conf_from_recipe, golden, load_recipe


@pytest.mark.parametrize('text, kind, T, T_latent', [
    ('infer', 'infer', None, None),
    ('infer+render20', 'infer+render', 20, None),
    ('fid10', 'fid', 10, None),
    ('fid(10,10)', 'fid_latent', 10, 10),
    ('fid(20, 100)', 'fid_latent', 20, 100),
    ('fidclip(10,20)', 'fidclip', 10, 20),
    ('recon100', 'recon', 100, None),
    ('inv250', 'inv', 250, None),
])
def test_every_program_form_parses(text, kind, T, T_latent):
    p = evaluation.parse_program(text)
    assert (p.kind, p.T, p.T_latent) == (kind, T, T_latent)


def test_typos_are_rejected_with_the_grammar():
    for bad in ['infer+render', 'fid', 'fid()', 'fid(0,10)', 'FID10',
                'recon 10', 'lpips10', '']:
        with pytest.raises(ValueError, match='Valid forms'):
            evaluation.parse_program(bad)


def test_auroc_matches_pairwise_definition():
    torch.manual_seed(0)
    s = torch.randn(200)
    y = (torch.rand(200) < 0.3).long() * 2 - 1
    s[:10] = 0.5  # ties
    pos, neg = s[y > 0], s[y < 0]
    pairs = (pos[:, None] > neg[None]).double() + 0.5 * (
        pos[:, None] == neg[None]).double()
    assert zsem_probe.auroc(s, y) == pytest.approx(pairs.mean().item())
    assert zsem_probe.auroc(torch.arange(4.), torch.tensor([-1, -1, 1, 1])
                            ) == 1.0


def test_ridge_probes_solve_the_normal_equations():
    # every (strength, column) equals its own regularised least-squares
    # solve: [x 1] [w; b] ~ y with lam * n * |w|^2 (bias not penalised)
    torch.manual_seed(0)
    x = torch.randn(50, 4, dtype=torch.float64)
    y = (torch.rand(50, 3) > 0.5).double()
    weight, bias = zsem_probe.fit_ridge_probes(x, y, [0.0, 0.1])
    for s, lam in enumerate([0.0, 0.1]):
        a = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1)
        reg = torch.diag(torch.tensor([lam * 50] * 4 + [0.0],
                                      dtype=torch.float64))
        for k in range(3):
            want = torch.linalg.solve(a.T @ a + reg, a.T @ y[:, k])
            torch.testing.assert_close(weight[s, :, k], want[:4])
            torch.testing.assert_close(bias[s, k], want[4])


def test_linear_probe_finds_linear_attributes_only():
    torch.manual_seed(0)
    z = torch.randn(600, 8)
    labels = torch.stack([(z[:, 0] + z[:, 1] > 0).long() * 2 - 1,
                          (torch.rand(600) > 0.5).long() * 2 - 1], 1)
    out = zsem_probe.linear_probe(z, labels, ['linear', 'noise'])
    assert out['linear'] > 0.97
    assert 0.35 < out['noise'] < 0.65
    assert set(out['strength']) == {'linear', 'noise'}


def test_linear_probe_attributes_are_independent_probes():
    # each attribute's probe (and its chosen L2 strength) is the same
    # whether it is fitted alone or beside others
    torch.manual_seed(0)
    z = torch.randn(500, 6)
    a = (z[:, 0] - z[:, 2] + 0.5 * torch.randn(500) > 0).long() * 2 - 1
    b = (z[:, 3] + 2 * torch.randn(500) > 0).long() * 2 - 1
    both = zsem_probe.linear_probe(z, torch.stack([a, b], 1), ['a', 'b'])
    alone = zsem_probe.linear_probe(z, a[:, None], ['a'])
    assert both['a'] == pytest.approx(alone['a'], abs=1e-6)
    assert both['strength']['a'] == alone['strength']['a']


def test_linear_probe_never_lets_held_out_rows_choose():
    # the L2 strength is cross-validated on the training rows: scrambling
    # the held-out labels changes the reported AUROC, never the choice
    torch.manual_seed(0)
    n, dims = 300, 40
    z = torch.randn(n, dims)
    y = (z[:, 0] + torch.randn(n) > 0).long() * 2 - 1
    out = zsem_probe.linear_probe(z, y[:, None], ['y'], splits=1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    held = perm[int(n * 0.8):]
    y2 = y.clone()
    y2[held] = -y2[held]
    out2 = zsem_probe.linear_probe(z, y2[:, None], ['y'], splits=1)
    assert out2['strength'] == out['strength']
    assert out2['y'] == pytest.approx(1 - out['y'])
    # 240 rows, 40 dims, one informative: some regularisation wins
    assert out['strength']['y'][0] > 0


def test_linear_probe_averages_over_splits():
    torch.manual_seed(0)
    z = torch.randn(300, 5)
    y = (z[:, 0] + torch.randn(300) > 0).long() * 2 - 1
    out = zsem_probe.linear_probe(z, y[:, None], ['y'], splits=3)
    alone = [zsem_probe.linear_probe(z, y[:, None], ['y'], splits=1,
                                     seed=k)['y'] for k in range(3)]
    assert out['mean_by_split'] == pytest.approx(alone)
    assert out['y'] == pytest.approx(sum(alone) / 3)
    assert len(set(alone)) == 3  # the splits differ


def test_slerp_endpoints_and_norm():
    torch.manual_seed(0)
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(renderer.slerp(a, b, 0.0), a)
    torch.testing.assert_close(renderer.slerp(a, b, 1.0), b)
    mid = renderer.slerp(a, b, 0.5)
    # between two (nearly) equal-norm vectors slerp keeps the norm
    b = b / b.norm() * a.norm()
    assert renderer.slerp(a, b, 0.3).norm() == pytest.approx(
        a.norm().item(), rel=1e-5)
    assert mid.shape == a.shape


def tiny_lit():
    from experiment import LitModel
    path = golden('tiny_autoenc')
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    lit = LitModel(conf)
    import checkpoint_io
    lit.load_state_dict(checkpoint_io.load_checkpoint(path / 'last.ckpt')[
        'state_dict'])
    return lit.eval(), torch.load(path / 'io.pt')


def tiny_inverted():
    """The tiny golden model, z_sem and inverted x_T (10 steps) of its
    golden input images."""
    lit, io = tiny_lit()
    cond = lit.encode(io['x_start'])
    return lit, cond, lit.encode_stochastic(io['x_start'], cond, T=10)


@torch.no_grad()
def test_interpolation_endpoints_decode_exactly_the_inputs():
    """alpha 0 and 1 hand the decoder exactly (z_sem, x_T) of the two
    images, bit for bit (lerp and slerp are exact at their ends)."""
    lit, cond, xT = tiny_inverted()
    seen = {}

    class Spy:
        def sample(self, model, noise, model_kwargs, progress):
            seen.update(noise=noise, cond=model_kwargs['cond'])
            return noise

    renderer.interpolate(lit.ema_model, Spy(), cond[:1], xT[:1], cond[1:],
                         xT[1:], [0.0, 0.5, 1.0])
    assert torch.equal(seen['noise'][0], xT[0])
    assert torch.equal(seen['noise'][2], xT[1])
    assert torch.equal(seen['cond'][0], cond[0])
    assert torch.equal(seen['cond'][2], cond[1])
    assert not torch.equal(seen['cond'][1], cond[0])


@torch.no_grad()
def test_interpolation_endpoints_reproduce_the_inputs():
    """Rendered, the endpoints equal the reconstructions up to float
    round-off. Tolerance: the golden README's for 10-step loops (ATOL_LOOP).
    The interpolation decodes a batch of 3, the reconstruction a batch of
    2, and oneDNN blocks a convolution differently per batch size: the same
    image decoded alone vs in a batch of 2 differs by 9e-5 after 10 steps
    on AVX-512 and 1.7e-4 with AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2), so
    the former atol=1e-4 failed on some CPUs although the inputs are exact
    (test above)."""
    lit, cond, xT = tiny_inverted()
    sampler = lit.inference.sampler(10)
    out = renderer.interpolate(lit.ema_model, sampler, cond[:1], xT[:1],
                               cond[1:], xT[1:], [0.0, 0.5, 1.0])
    recon = sampler.sample(lit.ema_model, noise=xT, cond=cond)
    torch.testing.assert_close(out[0], recon[0], atol=ATOL_LOOP, rtol=0)
    torch.testing.assert_close(out[2], recon[1], atol=ATOL_LOOP, rtol=0)
    # the midpoint is another image (measured max difference 2.0)
    assert (out[1] - recon[0]).abs().max() > 100 * ATOL_LOOP


@torch.no_grad()
def test_manipulation_amount_zero_is_the_reconstruction():
    lit, cond, xT = tiny_inverted()
    mean, std = cond.mean(0, keepdim=True), cond.std(0, keepdim=True) + 1
    direction = torch.randn(cond.shape[1])

    def norm(c):
        return (c - mean) / std

    def denorm(c):
        return c * std + mean

    same = renderer.manipulate_cond(cond, direction, 0.0, norm, denorm)
    torch.testing.assert_close(same, cond, atol=1e-6, rtol=1e-6)
    # (up to the normalise/denormalise round-off, through 10 steps)
    torch.testing.assert_close(lit.render(xT, same, T=10),
                               lit.render(xT, cond, T=10), atol=1e-3,
                               rtol=0)
    moved = renderer.manipulate_cond(cond, direction, 0.3, norm, denorm)
    step = norm(moved) - norm(cond)
    # 0.3 * sqrt(C) along the unit direction, as the official notebook
    assert step.norm(dim=1).tolist() == pytest.approx(
        [0.3 * math.sqrt(cond.shape[1])] * 2, rel=1e-4)
    assert (lit.render(xT, moved, T=10) -
            lit.render(xT, cond, T=10)).abs().max() > 1e-3


def _lit_due_for_eval(tmp_path, monkeypatch):
    from experiment import LitModel
    lit, io = tiny_lit()
    lit.conf.base_dir = str(tmp_path)
    lit.conf.eval_num_images = 4
    lit.conf.batch_size_eval = 2
    lit.conf.eval_every_samples = lit.conf.eval_ema_every_samples = 8
    lit.conf.work_cache_dir = str(tmp_path / 'cache')
    monkeypatch.setattr(LitModel, 'num_samples', property(lambda self: 8))
    data = [{'img': x, 'index': i} for i, x in
            enumerate(torch.cat([io['x_start']] * 2))]
    lit.train_data = lit.val_data = data
    lit.eval_sampler = lit.conf._make_diffusion_conf(2).make_sampler()
    return lit


def test_periodic_eval_skips_with_one_warning_without_weights(
        tmp_path, monkeypatch):
    import warnings
    import metrics
    lit = _lit_due_for_eval(tmp_path, monkeypatch)
    monkeypatch.setattr(metrics, 'missing_weights',
                        lambda conf: 'weights x not found')
    monkeypatch.setattr(evaluation, '_warned_no_weights', False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        evaluation.evaluate_during_training(lit)
        evaluation.evaluate_during_training(lit)
    msgs = [str(x.message) for x in w if 'FID' in str(x.message)]
    assert len(msgs) == 1 and 'weights x not found' in msgs[0]
    assert not (tmp_path / lit.conf.name / 'eval.txt').exists()


def test_periodic_eval_runs_fid_and_lpips_when_weights_exist(
        tmp_path, monkeypatch):
    import metrics
    lit = _lit_due_for_eval(tmp_path, monkeypatch)
    monkeypatch.setattr(metrics, 'missing_weights', lambda conf: '')
    real_fid = metrics.load_fid_inception
    real_lpips = metrics.load_lpips
    monkeypatch.setattr(
        metrics, 'load_fid_inception',
        lambda *a, **k: real_fid(random_init=True, device=k.get('device')))
    monkeypatch.setattr(
        metrics, 'load_lpips',
        lambda *a, **k: real_lpips(random_init=True, device=k.get('device')))
    evaluation.evaluate_during_training(lit)
    lines = (tmp_path / lit.conf.name / 'eval.txt').read_text().splitlines()
    import json
    keys = [set(json.loads(line)) for line in lines]
    assert {'FID', 'num_samples'} in keys
    assert {'FID_ema', 'num_samples'} in keys
