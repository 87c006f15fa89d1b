"""The built-in shapes demo dataset: generation, attributes, measuring."""
import multiprocessing
import warnings
import os

import numpy as np
import pytest
import torch

import scenes_data
import shapes_data as S
from conftest import attr_dataset_and_images, check_deterministic_lmdb
from dataset_util import LMDBFormatError


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    """300 images at the default resolution, read at 32x32."""
    path = tmp_path_factory.mktemp('shapes') / 'shapes.lmdb'
    return attr_dataset_and_images(S.ShapesAttrDataset, path, 300)


def test_deterministic_bytes(tmp_path):
    check_deterministic_lmdb(S.make_shapes_lmdb, tmp_path)


def test_attributes_recorded(shapes):
    ds, imgs = shapes
    assert len(ds) == 300
    meta = ds.meta
    assert meta['num_images'] == 300 and meta['seed'] == 0
    assert meta['resolution'] == 64
    rec = ds.attributes
    for k in ('shape', 'color', 'background', 'size', 'x', 'y'):
        assert len(rec[k]) == 300
    assert set(rec['shape']) == set(S.SHAPES)
    assert set(rec['color']) == set(S.SHAPE_COLORS)
    assert set(rec['background']) == {'dark', 'light'}
    lo, hi = S.SHAPE_SIZE_RANGE
    assert lo <= min(rec['size']) and max(rec['size']) <= hi
    # labels: +1/-1, exactly one shape and one colour each
    K = len(S.ShapesAttrDataset.id_to_cls)
    assert ds.labels.shape == (300, K) and ds.labels.dtype == torch.int64
    assert set(ds.labels.unique().tolist()) == {-1, 1}
    on = ds.labels == 1
    assert (on[:, :3].sum(1) == 1).all() and (on[:, 3:7].sum(1) == 1).all()
    wavy = S.ShapesAttrDataset.cls_to_id['triangle']
    assert ds.labels[:, wavy].eq(1).sum() == rec['shape'].count('triangle')
    left = S.ShapesAttrDataset.cls_to_id['left']
    assert torch.equal(ds.labels[:, left] == 1,
                       torch.tensor(rec['x']) < 0.5)
    # every class is present and absent somewhere (a probe can learn it)
    for name in S.ShapesAttrDataset.id_to_cls:
        assert ds.pos_count(name) > 10 and ds.neg_count(name) > 10, name


def test_items(shapes):
    ds, imgs = shapes
    item = ds[7]
    assert set(item) == {'img', 'index', 'labels'}
    assert item['img'].shape == (3, 32, 32) and item['index'] == 7
    assert torch.equal(item['labels'], ds.labels[7])
    assert imgs.min() >= -1 and imgs.max() <= 1
    # no flips by default ('left' would break)
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert 'RandomHorizontalFlip' not in names


def _corr(a, b):
    return float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1])


def test_scores_recover_attributes(shapes):
    ds, imgs = shapes
    s = S.shape_attribute_scores(imgs)
    rec = ds.attributes
    assert s['found'].all()
    assert _corr(s['size'], rec['size']) > 0.97
    assert (s['size'] - torch.tensor(rec['size'])).abs().mean() < 0.02
    assert _corr(s['x'], rec['x']) > 0.995
    assert _corr(s['y'], rec['y']) > 0.995
    acc = (s['labels'] == ds.labels).float().mean(0)
    ids = S.ShapesAttrDataset.cls_to_id
    for name in list(S.SHAPE_COLORS) + ['light_background']:
        assert acc[ids[name]] == 1, name
    for name in S.SHAPES:
        assert acc[ids[name]] > 0.97, name
    for name in ['large', 'left', 'top']:
        assert acc[ids[name]] > 0.95, name
    # [0, 1] input gives the same numbers
    s01 = S.shape_attribute_scores((imgs + 1) / 2, value_range=(0, 1))
    torch.testing.assert_close(s01['label_scores'], s['label_scores'])


def test_scores_follow_a_moving_shape():
    xs = [0.3, 0.4, 0.5, 0.6, 0.7]
    imgs = np.stack([S.render_shape('circle', 'blue', 'dark', 0.3, x, 0.5,
                                    resolution=32) for x in xs])
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    s = S.shape_attribute_scores(t, value_range=(0, 1))
    left = s['label_scores'][:, S.ShapesAttrDataset.cls_to_id['left']]
    assert (left.diff() < 0).all()
    torch.testing.assert_close(s['x'], torch.tensor(xs), atol=0.02, rtol=0)
    blue = torch.tensor(S.SHAPE_COLORS['blue']) / 255.
    torch.testing.assert_close(s['fg_rgb'], blue.expand(5, 3), atol=0.03,
                               rtol=0)
    assert (s['bg_brightness'] < 0.2).all()
    with pytest.raises(ValueError, match='N, 3, H, W'):
        S.shape_attribute_scores(t[0])


def test_generated_on_first_use_and_reused(tmp_path):
    path = tmp_path / 'data' / 'shapes.lmdb'
    ds = S.ShapesDataset(str(path), image_size=16, num_images=20)
    assert path.is_dir() and len(ds) == 20
    assert set(ds[0]) == {'img', 'index'}
    assert os.listdir(tmp_path / 'data') == ['shapes.lmdb']  # no leftovers
    stamp = os.stat(path / 'data.mdb').st_mtime_ns
    again = S.ShapesDataset(str(path), image_size=16)
    assert len(again) == 20
    assert os.stat(path / 'data.mdb').st_mtime_ns == stamp
    with pytest.raises(ValueError, match='num_images=20'):
        S.ShapesDataset(str(path), image_size=16, num_images=30)


def test_an_older_default_copy_with_another_count_is_named(tmp_path,
                                                          monkeypatch):
    """The demo's own LMDB made by an older version (4,000 images before
    issue #12) is used, with a warning naming it and the new count; an
    LMDB elsewhere may hold any count without one."""
    monkeypatch.chdir(tmp_path)
    S.make_shapes_lmdb(S.ShapesDataset.default_path, num_images=5)
    with pytest.warns(UserWarning, match=f"'datasets/shapes.lmdb' holds 5 "
                      f'shapes images; the default is now '
                      f'{S.SHAPES_DEFAULT_COUNT}'):
        assert len(S.ShapesDataset(image_size=16)) == 5
    S.make_shapes_lmdb('elsewhere.lmdb', num_images=5)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(S.ShapesDataset('elsewhere.lmdb', image_size=16)) == 5


def test_another_generated_format_is_refused(tmp_path):
    path = tmp_path / 'scenes.lmdb'
    scenes_data.make_scenes_lmdb(str(path), num_images=4)
    with pytest.raises(LMDBFormatError,
                       match='unknown attributes format') as e:
        S.ShapesDataset(str(path), image_size=16)
    assert str(path) in str(e.value)


def _make(path):
    S.ShapesDataset(path, image_size=16, num_images=50)


def test_two_processes_generating_at_once(tmp_path):
    path = str(tmp_path / 'shapes.lmdb')
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_make, args=(path, )) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert os.listdir(tmp_path) == ['shapes.lmdb']
    assert len(S.ShapesDataset(path, image_size=16)) == 50


def test_config_shapes_dataset(tmp_path):
    from config import TrainConfig
    conf = TrainConfig(data_name='shapes', img_size=32,
                       data_dir=str(tmp_path / 'shapes.lmdb'))
    ds = conf.make_dataset(num_images=10)
    assert isinstance(ds, S.ShapesDataset) and len(ds) == 10
    assert ds[9]['img'].shape == (3, 32, 32)


def test_demo_retrains_stages_whose_latents_were_reinferred(tmp_path):
    # after more autoencoder steps latent.pkl is re-inferred; the latent
    # DPM / classifier runs trained on the old one must not resume as done
    import run_shapes
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'last.ckpt').write_bytes(b'old')
    latents = tmp_path / 'latent.pkl'
    latents.write_bytes(b'z')
    os.utime(run / 'last.ckpt', (1000, 1000))
    os.utime(latents, (2000, 2000))
    run_shapes.set_aside_if_stale(str(run), str(latents))
    assert not run.exists()
    assert (tmp_path / 'run.old' / 'last.ckpt').read_bytes() == b'old'
    # a run newer than its latents stays where it is
    run.mkdir()
    (run / 'last.ckpt').write_bytes(b'new')
    run_shapes.set_aside_if_stale(str(run), str(latents))
    assert (run / 'last.ckpt').read_bytes() == b'new'

