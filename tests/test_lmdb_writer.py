"""The LMDB writer, the folder -> LMDB converter and the data_resize_*
scripts."""
import os
from io import BytesIO

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

import data_resize_bedroom
import data_resize_celeba
import data_resize_celebahq
import data_resize_ffhq
import data_resize_folder
import data_resize_horse
from dataset import Bedroom_lmdb, CelebAlmdb, CelebHQlmdb, FFHQlmdb, Horse_lmdb
from dataset_util import CorruptImageError, use_cached_dataset_path
from lmdb_writer import (LMDBImageReader, LMDBImageWriter, convert,
                         folder_to_lmdb)


def _rand_img(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _lmdb_items(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return items


def _format(data: bytes):
    return Image.open(BytesIO(data)).format


def _leftovers(folder, name):
    """Temporary folders a writer left next to its target."""
    return [p for p in os.listdir(folder)
            if p.startswith(name + '.') and p != name]


def test_convert_png_is_exact():
    rng = np.random.default_rng(0)
    arr = _rand_img(rng, 8, 6)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    out = np.asarray(Image.open(BytesIO(convert(x, 'png'))))
    np.testing.assert_array_equal(out, arr)
    # jpg is accepted as a name for jpeg
    assert _format(convert(x, 'jpg', quality=90)) == 'JPEG'
    assert _format(convert(x, 'webp')) == 'WEBP'


def test_convert_rounds_and_clamps_like_the_reference():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 5).repeat(3, 1,
                                                                        1)
    out = np.asarray(Image.open(BytesIO(convert(x, 'png'))))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    imgs = torch.from_numpy(rng.integers(0, 256, (5, 3, 8, 8))).float() / 255
    path = tmp_path / 'out.lmdb'
    with LMDBImageWriter(path, format='png', zfill=7) as w:
        assert isinstance(w, LMDBImageWriter)
        w.put_images(imgs[:3])
        assert not path.exists()  # nothing at the target until the end
        w.put_images(imgs[3:])
    items = _lmdb_items(path)
    assert items[b'length'] == b'5'
    assert sorted(items) == [b'0000000', b'0000001', b'0000002',
                             b'0000003', b'0000004', b'length']
    reader = LMDBImageReader(str(path), zfill=7)
    assert len(reader) == 5
    for i in range(5):
        got = torch.from_numpy(np.array(reader[i])).permute(2, 0, 1)
        assert torch.equal(got, (imgs[i] * 255).round().to(torch.uint8))
    with pytest.raises(IndexError):
        reader[5]
    assert _leftovers(tmp_path, 'out.lmdb') == []


def test_writer_failure_keeps_the_old_lmdb(tmp_path):
    path = tmp_path / 'out.lmdb'
    with LMDBImageWriter(path, format='png') as w:
        w.put_images(torch.zeros(2, 3, 4, 4))
    with pytest.raises(RuntimeError, match='boom'):
        with LMDBImageWriter(path, format='png') as w:
            w.put_images(torch.ones(3, 3, 4, 4))
            raise RuntimeError('boom')
    assert _lmdb_items(path)[b'length'] == b'2'
    assert _leftovers(tmp_path, 'out.lmdb') == []
    # a successful write replaces it
    with LMDBImageWriter(path, format='png') as w:
        w.put_images(torch.ones(3, 3, 4, 4))
    assert _lmdb_items(path)[b'length'] == b'3'
    assert _leftovers(tmp_path, 'out.lmdb') == []


def test_writer_grows_its_map(tmp_path, monkeypatch):
    import lmdb_writer
    monkeypatch.setattr(lmdb_writer, '_INITIAL_MAP_SIZE', 64 * 1024)
    rng = np.random.default_rng(2)
    # incompressible: ~50 KB each, well over the 64 KB map
    imgs = torch.from_numpy(rng.integers(0, 256, (6, 3, 128, 128))) / 255.
    with LMDBImageWriter(tmp_path / 'big.lmdb', format='png') as w:
        w.put_images(imgs)
    assert len(LMDBImageReader(str(tmp_path / 'big.lmdb'))) == 6


def _make_folder(root, names, size=(20, 16), seed=0):
    rng = np.random.default_rng(seed)
    arrs = {}
    for name in names:
        arr = _rand_img(rng, *size)
        _save(os.path.join(root, name), arr)
        arrs[name] = arr
    return arrs


def test_folder_to_lmdb_png_round_trip(tmp_path):
    src = tmp_path / 'imgs'
    arrs = _make_folder(src, ['b.png', 'a.png', 'sub/c.png'])
    out = tmp_path / 'out.lmdb'
    n = folder_to_lmdb(src, out, size=None, key_prefix='32', zfill=7,
                       format='png', exts=['png'], progress=False)
    assert n == 3
    items = _lmdb_items(out)
    assert sorted(items) == [b'32-0000000', b'32-0000001', b'32-0000002',
                             b'length']
    # sorted by relative path: a.png, b.png, sub/c.png
    for i, name in enumerate(['a.png', 'b.png', 'sub/c.png']):
        got = np.asarray(Image.open(BytesIO(items[f'32-{i:07d}'.encode()])))
        np.testing.assert_array_equal(got, arrs[name])
    # a dataset class reads the result (same format as the LSUN LMDBs);
    # 20x16 images, image_size 16: resize is the identity, crop the middle
    ds = Horse_lmdb(str(out), image_size=16, original_resolution=32,
                    do_augment=False)
    assert len(ds) == 3
    want = torch.from_numpy(arrs['a.png'][2:18]).permute(2, 0, 1) / 255.
    assert torch.allclose(ds[0]['img'], want * 2 - 1, atol=1e-6)


def test_folder_to_lmdb_resizes_and_crops(tmp_path):
    src = tmp_path / 'imgs'
    _make_folder(src, ['x.jpg', 'y.png'], size=(40, 64))
    out = tmp_path / 'out.lmdb'
    folder_to_lmdb(src, out, size=24, zfill=5, format='jpeg',
                   exts=['jpg', 'png'], progress=False)
    items = _lmdb_items(out)
    assert b'24-00000' in items and b'24-00001' in items
    img = Image.open(BytesIO(items[b'24-00000']))
    assert img.format == 'JPEG' and img.size == (24, 24)


def test_folder_to_lmdb_index_order(tmp_path):
    src = tmp_path / 'imgs'
    arrs = _make_folder(src, ['2.png', '0.png', '10/1.png'])
    out = tmp_path / 'out.lmdb'
    folder_to_lmdb(src, out, size=None, key_prefix='x', zfill=5,
                   format='png', exts=['png'], order='index',
                   progress=False)
    items = _lmdb_items(out)
    for i, name in enumerate(['0.png', '10/1.png', '2.png']):
        got = np.asarray(Image.open(BytesIO(items[f'x-{i:05d}'.encode()])))
        np.testing.assert_array_equal(got, arrs[name])


def test_folder_to_lmdb_index_order_errors(tmp_path):
    src = tmp_path / 'gap'
    _make_folder(src, ['0.png', '2.png'])
    with pytest.raises(ValueError, match='0..1.*sorted'):
        folder_to_lmdb(src, tmp_path / 'o.lmdb', order='index',
                       exts=['png'], progress=False)
    src = tmp_path / 'names'
    _make_folder(src, ['0.png', 'cat.png'])
    with pytest.raises(ValueError, match='cat.png'):
        folder_to_lmdb(src, tmp_path / 'o.lmdb', order='index',
                       exts=['png'], progress=False)
    assert not (tmp_path / 'o.lmdb').exists()


def test_folder_to_lmdb_refuses_to_overwrite(tmp_path):
    src = tmp_path / 'imgs'
    _make_folder(src, ['a.png'])
    out = tmp_path / 'out.lmdb'
    folder_to_lmdb(src, out, size=8, exts=['png'], progress=False)
    _make_folder(src, ['b.png'], seed=1)
    with pytest.raises(FileExistsError, match='overwrite'):
        folder_to_lmdb(src, out, size=8, exts=['png'], progress=False)
    assert _lmdb_items(out)[b'length'] == b'1'
    folder_to_lmdb(src, out, size=8, exts=['png'], overwrite=True,
                   progress=False)
    assert _lmdb_items(out)[b'length'] == b'2'


def test_folder_to_lmdb_errors_name_the_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere'):
        folder_to_lmdb(tmp_path / 'nothere', tmp_path / 'o.lmdb')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*\['png'\]"):
        folder_to_lmdb(empty, tmp_path / 'o.lmdb', exts=['png'])
    src = tmp_path / 'imgs'
    _make_folder(src, ['a.png'])
    (src / 'bad.png').write_bytes(b'not a png at all')
    with pytest.raises(CorruptImageError, match='bad.png'):
        folder_to_lmdb(src, tmp_path / 'o.lmdb', size=8, exts=['png'],
                       progress=False)
    assert not (tmp_path / 'o.lmdb').exists()
    assert _leftovers(tmp_path, 'o.lmdb') == []


def test_folder_to_lmdb_with_worker_processes(tmp_path):
    src = tmp_path / 'imgs'
    _make_folder(src, [f'{i}.png' for i in range(12)])
    a, b = tmp_path / 'a.lmdb', tmp_path / 'b.lmdb'
    folder_to_lmdb(src, a, size=8, exts=['png'], workers=2, batch_size=5,
                   progress=False)
    folder_to_lmdb(src, b, size=8, exts=['png'], workers=0, progress=False)
    assert _lmdb_items(a) == _lmdb_items(b)
    assert _lmdb_items(a)[b'length'] == b'12'


def _make_lsun_lmdb(path, arrs):
    env = lmdb.open(str(path), map_size=2**24)
    with env.begin(write=True) as txn:
        for key, arr in arrs.items():
            buf = BytesIO()
            Image.fromarray(arr).save(buf, format='webp', lossless=True)
            txn.put(key, buf.getvalue())
    env.close()


def test_lsun_lmdb_input_in_key_order(tmp_path):
    rng = np.random.default_rng(3)
    arrs = {b'zz': _rand_img(rng, 12, 10), b'aa': _rand_img(rng, 12, 10)}
    _make_lsun_lmdb(tmp_path / 'lsun', arrs)
    out = tmp_path / 'horse.lmdb'
    data_resize_horse.main(['--in', str(tmp_path / 'lsun'), '--out',
                            str(out), '--workers', '0', '--size', '8'])
    items = _lmdb_items(out)
    assert items[b'length'] == b'2'
    assert _format(items[b'8-0000000']) == 'WEBP'
    ds = Horse_lmdb(str(out), image_size=8, original_resolution=8,
                    do_augment=False)
    # key order: aa first; lossy webp, so compare loosely
    want = torch.from_numpy(arrs[b'aa'][1:11, :]).float()
    small = torch.nn.functional.interpolate(
        want.permute(2, 0, 1)[None], size=8, mode='area')[0] / 127.5 - 1
    other = torch.from_numpy(arrs[b'zz'][1:11, :]).float()
    small_other = torch.nn.functional.interpolate(
        other.permute(2, 0, 1)[None], size=8, mode='area')[0] / 127.5 - 1
    err = (ds[0]['img'] - small).abs().mean()
    assert err < (ds[0]['img'] - small_other).abs().mean()


def test_resize_scripts_make_the_official_formats(tmp_path):
    rng = np.random.default_rng(4)
    ffhq = tmp_path / 'ffhq'
    for i in range(3):
        _save(str(ffhq / f'{i:05d}.png'), _rand_img(rng, 40, 40))
    out = tmp_path / 'ffhq256.lmdb'
    assert data_resize_ffhq.main(['--in', str(ffhq), '--out', str(out),
                                  '--workers', '0']) == 3
    items = _lmdb_items(out)
    assert _format(items[b'256-00002']) == 'JPEG'
    ds = FFHQlmdb(str(out), image_size=32, do_augment=False)
    assert len(ds) == 3 and ds[2]['img'].shape == (3, 32, 32)

    hq = tmp_path / 'celebahq'
    for i in range(2):
        _save(str(hq / f'{i}.jpg'), _rand_img(rng, 30, 30))
    out = tmp_path / 'celebahq256.lmdb'
    data_resize_celebahq.main(['--in', str(hq), '--out', str(out),
                               '--workers', '0', '--size', '16'])
    assert _format(_lmdb_items(out)[b'16-00001']) == 'JPEG'
    ds = CelebHQlmdb(str(out), image_size=16, original_resolution=16)
    assert len(ds) == 2

    celeba = tmp_path / 'celeba'
    for i in range(2):
        _save(str(celeba / f'{i + 1:06d}.jpg'), _rand_img(rng, 218, 178))
    out = tmp_path / 'celeba.lmdb'
    data_resize_celeba.main(['--in', str(celeba), '--out', str(out),
                             '--workers', '0'])
    items = _lmdb_items(out)
    assert sorted(items) == [b'None-0000000', b'None-0000001', b'length']
    img = Image.open(BytesIO(items[b'None-0000000']))
    assert img.format == 'WEBP' and img.size == (178, 218)
    ds = CelebAlmdb(str(out), image_size=64, original_resolution=None,
                    crop_d2c=True, do_augment=False)
    assert ds[1]['img'].shape == (3, 64, 64)

    bed = tmp_path / 'bedroom'
    _save(str(bed / 'a.jpg'), _rand_img(rng, 30, 40))
    out = tmp_path / 'bedroom256.lmdb'
    data_resize_bedroom.main(['--in', str(bed), '--out', str(out),
                              '--workers', '0', '--size', '16'])
    assert _format(_lmdb_items(out)[b'16-0000000']) == 'WEBP'
    ds = Bedroom_lmdb(str(out), image_size=16, original_resolution=16)
    assert type(ds) is Bedroom_lmdb and len(ds) == 1

    out = tmp_path / 'mine.lmdb'
    data_resize_folder.main(['--in', str(bed), '--out', str(out),
                             '--workers', '0', '--size', '12', '--zfill',
                             '5', '--format', 'png'])
    items = _lmdb_items(out)
    assert _format(items[b'12-00000']) == 'PNG'


def test_use_cached_dataset_path(tmp_path):
    src = tmp_path / 'src'
    _make_folder(src, ['a.png'])
    cache = tmp_path / 'cache' / 'ds'
    assert use_cached_dataset_path(str(src), str(cache)) == str(cache)
    assert (cache / 'a.png').exists()
    # an existing cache is used as is
    (src / 'a.png').unlink()
    use_cached_dataset_path(str(src), str(cache))
    assert (cache / 'a.png').exists()
    with pytest.raises(FileNotFoundError, match='missing'):
        use_cached_dataset_path(str(tmp_path / 'missing'),
                                str(tmp_path / 'c2'))
