"""Eval-program grammar, the rendering helpers (interpolation,
manipulation) and the linear probe."""
import math

import pytest
import torch

import evaluation
import renderer
from conftest import conf_from_recipe, golden_dirs, load_recipe


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
    assert evaluation.auroc(s, y) == pytest.approx(pairs.mean().item())
    assert evaluation.auroc(torch.arange(4.), torch.tensor([-1, -1, 1, 1])
                            ) == 1.0


def test_linear_probe_finds_linear_attributes_only():
    torch.manual_seed(0)
    z = torch.randn(600, 8)
    labels = torch.stack([(z[:, 0] + z[:, 1] > 0).long() * 2 - 1,
                          (torch.rand(600) > 0.5).long() * 2 - 1], 1)
    out = evaluation.linear_probe(z, labels, ['linear', 'noise'])
    assert out['linear'] > 0.97
    assert 0.35 < out['noise'] < 0.65


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
    path = [p for p in golden_dirs() if p.name == 'tiny_autoenc'][0]
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    lit = LitModel(conf)
    import checkpoint_io
    lit.load_state_dict(checkpoint_io.load_checkpoint(path / 'last.ckpt')[
        'state_dict'])
    return lit.eval(), torch.load(path / 'io.pt')


@torch.no_grad()
def test_interpolation_endpoints_reproduce_the_inputs():
    lit, io = tiny_lit()
    x = io['x_start']
    cond = lit.encode(x)
    xT = lit.encode_stochastic(x, cond, T=10)
    sampler = lit._sampler(10)
    out = renderer.interpolate(lit.ema_model, sampler, cond[:1], xT[:1],
                               cond[1:], xT[1:], [0.0, 0.5, 1.0])
    recon = sampler.sample(lit.ema_model, noise=xT, cond=cond)
    torch.testing.assert_close(out[0], recon[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], recon[1], atol=1e-4, rtol=0)
    assert (out[1] - recon[0]).abs().max() > 1e-3


@torch.no_grad()
def test_manipulation_amount_zero_is_the_reconstruction():
    lit, io = tiny_lit()
    x = io['x_start']
    cond = lit.encode(x)
    xT = lit.encode_stochastic(x, cond, T=10)
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
