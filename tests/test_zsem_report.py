"""zsem_probe.zsem_decoding_report and manipulation_change_rate on stand-in
models whose behaviour is known: a decoder that ignores z_sem, one that
draws exactly what z_sem says, and one that draws only x_T's colour."""
import functools

import pytest
import torch

import zsem_probe
import shapes_data
from shapes_data import SHAPE_BACKGROUNDS, SHAPE_COLORS, SHAPES, render_shape

read = functools.partial(shapes_data.shape_attribute_classes,
                         value_range=(0, 1))
COLORS, BGS = list(SHAPE_COLORS), list(SHAPE_BACKGROUNDS)


def draw(code):
    """Image in [0, 1] of a code (4 colour scores, shape, background,
    size, x, y): the colour is the arg-max score."""
    img = render_shape(SHAPES[int(code[4])], COLORS[int(code[:4].argmax())],
                       BGS[int(code[5])], float(code[6]), float(code[7]),
                       float(code[8]), resolution=32)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


class CodeModel:
    """'Encodes' an image to its attribute code (looked up) and draws the
    code back, ignoring x_T: a perfectly semantic z_sem."""

    def __init__(self, images, codes):
        self.images, self.codes = images, codes

    def encode(self, x):
        idx = [int((self.images - xi).abs().flatten(1).sum(1).argmin())
               for xi in x]
        return self.codes[idx]

    def render(self, noise, cond, T=None):
        return torch.stack([draw(c) for c in cond])


class NoiseOnlyModel(CodeModel):
    """Ignores z_sem: draws the shape of the first image in a colour picked
    by x_T (the arg-max of its first four values)."""

    def render(self, noise, cond, T=None):
        code = self.codes[0].clone().repeat(len(cond), 1)
        code[:, :4] = noise.flatten(1)[:, :4]
        return torch.stack([draw(c) for c in code])


@pytest.fixture(scope='module')
def data():
    g = torch.Generator().manual_seed(0)
    n = 24
    codes = torch.zeros(n, 9)
    codes[torch.arange(n), torch.arange(n) % 4] = 1
    codes[:, 4] = torch.arange(n) % 3
    codes[:, 5] = (torch.arange(n) // 4) % 2
    codes[:, 6] = 0.26 + 0.14 * torch.rand(n, generator=g)
    codes[:, 7:9] = 0.35 + 0.3 * torch.rand(n, 2, generator=g)
    images = torch.stack([draw(c) for c in codes])
    return images * 2 - 1, codes


def test_a_perfectly_semantic_decoder_keeps_everything(data):
    x, codes = data
    r = zsem_probe.zsem_decoding_report(CodeModel(x, codes), x, read, T=1,
                                        seeds=3)
    assert set(r['kept']) == {'shape', 'color', 'large', 'left', 'top',
                              'light_background'}
    assert all(v == 1.0 for v in r['kept'].values()), r['kept']
    assert r['spread_across_xT'] == 0
    assert r['spread_across_z'] > 0.1
    # four equally frequent colours, decoded as they are: chance 1/4
    assert r['chance']['color'] == pytest.approx(0.25)
    assert r['kept_by_seed']['color'] == [1.0, 1.0, 1.0]
    assert (r['T'], r['seeds'], r['images']) == (1, 3, 24)
    assert 'decoded' not in r
    shown = zsem_probe.zsem_decoding_report(
        CodeModel(x, codes), x[:4], read, T=1, seeds=2,
        return_decoded=True)['decoded']
    # (draws, images, 3, H, W): every draw redraws the inputs exactly
    assert shown.shape == (2, 4, 3, 32, 32)
    torch.testing.assert_close(shown, ((x[:4] + 1) / 2)[None].expand(2, -1,
                                                                   -1, -1,
                                                                   -1))


def test_a_decoder_that_ignores_z_sem_keeps_only_chance(data):
    x, codes = data
    r = zsem_probe.zsem_decoding_report(NoiseOnlyModel(x, codes), x, read,
                                        T=1, seeds=8)
    # every image of one draw shares x_T: one picture per draw
    assert r['spread_across_z'] == 0
    assert r['spread_across_xT'] > 0
    # its colour follows x_T, agreeing with a quarter of the inputs (each
    # colour is a quarter of them) whatever the draw: the chance level
    assert r['kept']['color'] == pytest.approx(r['chance']['color'])
    assert r['kept']['color'] == pytest.approx(0.25)


def test_manipulation_change_rate_counts_images_moved_to_the_target(data):
    x, codes = data
    model = CodeModel(x, codes)
    cond = model.encode(x)
    red = torch.zeros(9)
    red[0] = 1
    r = zsem_probe.manipulation_change_rate(
        model, x, cond, torch.zeros_like(x), red, read, 'color', 0,
        amounts=(0.0, 0.1, 0.5), T=1)
    # 18 of 24 images are not red; the code's red score grows by
    # amount * sqrt(9): 0.3 stays below the own colour's 1, 1.5 beats it
    assert r['images'] == 18
    assert r['changed'] == {0.0: 0.0, 0.1: 0.0, 0.5: 1.0}
    # shape, size, position and background are untouched in the code; the
    # measurer reads them back from pixels, where a new colour changes the
    # contrast a little (1 of 90 image-attribute pairs flips here: a size
    # next to the 'large' threshold)
    assert r['others_kept'][0.0] == r['others_kept'][0.1] == 1.0
    assert r['others_kept'][0.5] >= 0.95


def test_the_probe_names_still_import_from_evaluation():
    """They moved to zsem_probe (CHANGELOG: every public name still
    imports from where it did)."""
    import evaluation
    for name in ('auroc', 'auroc_columns', 'fit_ridge_probes',
                 'linear_probe', 'manipulation_change_rate',
                 'zsem_decoding_report'):
        assert getattr(evaluation, name) is getattr(zsem_probe, name)
