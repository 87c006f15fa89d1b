"""The built-in scenes dataset: generation, labels, measuring, errors and
the config hook."""
import numpy as np
import pytest
import torch

import scenes_data as S
import shapes_data
import templates
from conftest import attr_dataset_and_images, check_deterministic_lmdb
from dataset_util import LMDBFormatError
from lmdb_writer import LMDBImageWriter

# measured on the 200-image fixture (seed 0, 32x32): every attribute
# agrees on every image (sun_left on the 100 with a sun) except
# high_horizon on one image (199/200) whose horizon is 1e-5 from the 0.55
# threshold; horizon errors are at most 0.05 rows
MIN_AGREEMENT = {name: 1.0 for name in S.SCENE_LABELS}
MIN_AGREEMENT['high_horizon'] = 0.99


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    """200 images at the default resolution, read at 32x32."""
    path = tmp_path_factory.mktemp('scenes') / 'scenes.lmdb'
    return attr_dataset_and_images(S.ScenesAttrDataset, path, 200)


def test_deterministic_bytes(tmp_path):
    check_deterministic_lmdb(S.make_scenes_lmdb, tmp_path)


def test_attributes_and_labels(scenes):
    ds, imgs = scenes
    assert len(ds) == 200
    assert ds.meta['format'] == 'diffae-scenes'
    assert ds.meta['num_images'] == 200 and ds.meta['seed'] == 0
    assert ds.meta['resolution'] == 64
    rec = ds.attributes
    assert set(rec['sky']) == set(S.SCENE_SKIES)
    assert set(rec['ground']) == set(S.SCENE_GROUNDS)
    assert 0.35 < min(rec['horizon']) and max(rec['horizon']) < 0.75
    assert sum(rec['sun']) == 100
    for sun, x, y, h in zip(rec['sun'], rec['sun_x'], rec['sun_y'],
                            rec['horizon']):
        if sun:
            assert 0.2 < x < 0.8
            assert S.SUN_RADIUS < y < h - S.SUN_RADIUS  # in the sky
        else:
            assert x is None and y is None
    K = len(S.SCENE_LABELS)
    assert ds.id_to_cls == S.SCENE_LABELS
    assert ds.labels.shape == (200, K) and ds.labels.dtype == torch.int64
    assert set(ds.labels.unique().tolist()) == {-1, 1}
    on = ds.labels == 1
    assert (on[:, :4].sum(1) == 1).all() and (on[:, 4:7].sum(1) == 1).all()
    ids = S.ScenesAttrDataset.cls_to_id
    sun = torch.tensor(rec['sun'])
    assert torch.equal(on[:, ids['sun']], sun)
    assert not on[~sun, ids['sun_left']].any()  # -1 without a sun
    assert torch.equal(on[:, ids['high_horizon']],
                       torch.tensor(rec['horizon']) < 0.55)
    for name in S.SCENE_LABELS:
        assert ds.pos_count(name) > 10 and ds.neg_count(name) > 10, name
    item = ds[7]
    assert set(item) == {'img', 'index', 'labels'}
    assert item['img'].shape == (3, 32, 32) and item['index'] == 7
    assert torch.equal(item['labels'], ds.labels[7])
    assert imgs.min() >= -1 and imgs.max() <= 1


def test_measurer_recovers_the_labels(scenes):
    ds, imgs = scenes
    s = S.scene_attribute_scores(imgs)
    assert s['labels'].shape == ds.labels.shape
    agree = s['labels'] == ds.labels
    sun = torch.tensor(ds.attributes['sun'])
    ids = S.ScenesAttrDataset.cls_to_id
    for name in S.SCENE_LABELS:
        col = agree[:, ids[name]]
        if name == 'sun_left':
            col = col[sun]
        assert col.float().mean() >= MIN_AGREEMENT[name], name
    # the measurements themselves
    err = (s['horizon'] - torch.tensor(ds.attributes['horizon'])).abs()
    assert err.max() < 0.5 / 32  # under half a row
    xs = torch.tensor([x if x is not None else 0.5
                       for x in ds.attributes['sun_x']])
    assert (s['sun_x'] - xs)[sun].abs().max() < 0.5 / 32
    assert torch.equal(s['sun'], sun)
    # [0, 1] input gives the same numbers
    s01 = S.scene_attribute_scores((imgs + 1) / 2, value_range=(0, 1))
    torch.testing.assert_close(s01['label_scores'], s['label_scores'])
    with pytest.raises(ValueError, match='N, 3, H, W'):
        S.scene_attribute_scores(imgs[0])


def test_classes_agree_with_the_labels(scenes):
    ds, imgs = scenes
    c = S.scene_attribute_classes(imgs)
    rec = ds.attributes
    sky = torch.tensor([list(S.SCENE_SKIES).index(v) for v in rec['sky']])
    ground = torch.tensor([list(S.SCENE_GROUNDS).index(v)
                           for v in rec['ground']])
    assert set(c) == {'sky', 'ground', 'high_horizon', 'sun'}
    assert all(v.dtype == torch.int64 and v.shape == (200, )
               for v in c.values())
    assert torch.equal(c['sky'], sky)
    assert torch.equal(c['ground'], ground)
    assert torch.equal(c['sun'], torch.tensor(rec['sun']).long())
    high = (torch.tensor(rec['horizon']) < 0.55).long()
    assert ((c['high_horizon'] == high).float().mean()
            >= MIN_AGREEMENT['high_horizon'])


def test_measurer_on_rendered_scenes():
    # a sun moving right; the sky and ground fixed
    xs = [0.3, 0.4, 0.5, 0.6, 0.7]
    imgs = np.stack([S.render_scene('day', 'grass', 0.6, True, x, 0.3,
                                    resolution=32) for x in xs])
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    s = S.scene_attribute_scores(t, value_range=(0, 1))
    torch.testing.assert_close(s['sun_x'], torch.tensor(xs), atol=0.01,
                               rtol=0)
    torch.testing.assert_close(s['horizon'], torch.full((5, ), 0.6),
                               atol=0.01, rtol=0)
    left = s['label_scores'][:, S.ScenesAttrDataset.cls_to_id['sun_left']]
    assert (left.diff() < 0).all()
    # noise and flat images are measured without errors
    odd = torch.cat([torch.rand(2, 3, 16, 16) * 2 - 1,
                     torch.zeros(1, 3, 16, 16)])
    assert torch.isfinite(S.scene_attribute_scores(odd)['label_scores']).all()


def test_errors_name_the_path(tmp_path):
    shapes = tmp_path / 'shapes.lmdb'
    shapes_data.make_shapes_lmdb(str(shapes), num_images=4)
    with pytest.raises(LMDBFormatError, match='not a scenes LMDB') as e:
        S.ScenesDataset(str(shapes), image_size=16)
    assert str(shapes) in str(e.value)
    plain = tmp_path / 'plain.lmdb'
    with LMDBImageWriter(str(plain), format='png', zfill=5,
                         key_prefix='64') as w:
        w.put_images(torch.rand(2, 3, 8, 8))
    with pytest.raises(LMDBFormatError, match="no 'attributes' key") as e:
        S.ScenesDataset(str(plain), image_size=16)
    assert str(plain) in str(e.value)
    path = tmp_path / 'data' / 'scenes.lmdb'
    ds = S.ScenesDataset(str(path), image_size=16, num_images=20)
    assert len(ds) == 20 and path.is_dir()
    assert set(ds[0]) == {'img', 'index'}
    assert len(S.ScenesDataset(str(path), image_size=16)) == 20  # reused
    with pytest.raises(ValueError, match='num_images=20') as e:
        S.ScenesDataset(str(path), image_size=16, num_images=30)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match='seed=0'):
        S.ScenesDataset(str(path), image_size=16, seed=1)


def test_config_makes_a_scenes_dataset(tmp_path):
    conf = templates.shapes32_autoenc()
    conf.data_name = 'scenes'
    conf.data_dir = str(tmp_path / 'scenes.lmdb')
    ds = conf.make_dataset(num_images=10)
    assert isinstance(ds, S.ScenesDataset) and len(ds) == 10
    assert ds[9]['img'].shape == (3, 32, 32)
    assert ds.meta['format'] == 'diffae-scenes'
