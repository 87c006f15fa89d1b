"""The dataset readers: parity with the reference on the golden LMDBs,
errors, image-mode conversion and the attribute datasets."""
import os
import pickle

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import dataset as D
from conftest import GOLDEN, golden
from dataset_util import CorruptImageError, LMDBFormatError, to_rgb
from lmdb_writer import LMDBImageWriter, folder_to_lmdb

LMDB_DIR = GOLDEN / 'lmdb'


class _Expected(dict):
    """The reference readers' outputs, loaded on first use (a missing
    file fails the tests that need it, with the fixture's name)."""

    def __missing__(self, key):
        if not self:
            self.update(torch.load(golden('lmdb', 'expected.pt')))
        return dict.__getitem__(self, key)


EXPECTED = _Expected()

# how the reference built each expected tensor
GOLDEN_READERS = {
    'ffhqlmdb256_64': lambda: D.FFHQlmdb(
        str(LMDB_DIR / 'ffhq256.lmdb'), image_size=64, do_augment=False),
    'celebalmdb_d2c_64': lambda: D.CelebAlmdb(
        str(LMDB_DIR / 'celeba.lmdb'), image_size=64,
        original_resolution=None, crop_d2c=True, do_augment=False),
    'horse256_128': lambda: D.Horse_lmdb(
        str(LMDB_DIR / 'horse256.lmdb'), image_size=128, do_augment=False),
}


def _stack(ds, n=6):
    return torch.stack([ds[i]['img'] for i in range(n)])


def test_golden_fixture_present():
    for name in ('expected.pt', 'ffhq256.lmdb', 'celeba.lmdb',
                 'horse256.lmdb'):
        golden('lmdb', name)
    assert set(torch.load(golden('lmdb', 'expected.pt'))) == set(
        GOLDEN_READERS)


@pytest.mark.parametrize('name', sorted(GOLDEN_READERS))
def test_golden_lmdb_matches_reference(name):
    ds = GOLDEN_READERS[name]()
    want = EXPECTED[name]
    assert len(ds) == len(want)
    item = ds[0]
    assert set(item) == {'img', 'index'} and item['index'] == 0
    got = _stack(ds, len(want))
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_transform_is_replaceable():
    ds = GOLDEN_READERS['ffhqlmdb256_64']()
    # what the trainer does when inferring latents (square images: the
    # extra CenterCrop is a no-op)
    ds.transform = D.make_transform(64, flip_prob=0)
    torch.testing.assert_close(_stack(ds), EXPECTED['ffhqlmdb256_64'],
                               atol=1e-6, rtol=0)
    ds.transform = None
    assert isinstance(ds[0]['img'], Image.Image)


def test_augment_flips_only_horizontally():
    ds = D.FFHQlmdb(str(LMDB_DIR / 'ffhq256.lmdb'), image_size=64)
    want = EXPECTED['ffhqlmdb256_64'][0]
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        img = ds[0]['img']
        if torch.equal(img, want):
            seen.add('same')
        else:
            torch.testing.assert_close(img, want.flip(-1), atol=1e-6,
                                       rtol=0)
            seen.add('flipped')
    assert seen == {'same', 'flipped'}


def test_config_make_dataset_reads_golden():
    from config import TrainConfig
    conf = TrainConfig(data_name='celebalmdb', img_size=64,
                       data_dir=str(LMDB_DIR / 'celeba.lmdb'))
    ds = conf.make_dataset(do_augment=False)
    assert isinstance(ds, D.CelebAlmdb) and ds.crop_d2c
    torch.testing.assert_close(_stack(ds), EXPECTED['celebalmdb_d2c_64'],
                               atol=1e-6, rtol=0)


def test_dataloader_workers_and_pickling():
    ds = GOLDEN_READERS['horse256_128']()
    want = EXPECTED['horse256_128']
    # a second reader of the same LMDB in this process shares its env
    again = GOLDEN_READERS['horse256_128']()
    torch.testing.assert_close(again[5]['img'], want[5], atol=1e-6, rtol=0)
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[3]['img'], want[3], atol=1e-6, rtol=0)
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    got = torch.cat([b['img'] for b in loader])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_d2c_crop_box():
    crop = D.d2c_crop()
    assert (crop.x1, crop.x2, crop.y1, crop.y2) == (57, 185, 25, 153)
    arr = np.random.default_rng(0).integers(0, 256, (218, 178, 3),
                                            dtype=np.uint8)
    out = np.asarray(crop(Image.fromarray(arr)))
    np.testing.assert_array_equal(out, arr[57:185, 25:153])


def test_ffhq_splits():
    path = str(LMDB_DIR / 'ffhq256.lmdb')
    assert len(D.FFHQlmdb(path, 64, split='test')) == 6
    with pytest.raises(ValueError, match='10000'):
        D.FFHQlmdb(path, 64, split='train')
    with pytest.raises(NotImplementedError, match='val'):
        D.FFHQlmdb(path, 64, split='val')


def test_index_out_of_range():
    ds = GOLDEN_READERS['ffhqlmdb256_64']()
    with pytest.raises(IndexError):
        ds[6]
    assert len(list(iter(ds))) == 6


def test_subset_and_repeat():
    ds = GOLDEN_READERS['ffhqlmdb256_64']()
    sub = D.SubsetDataset(ds, 4)
    assert len(sub) == 4 and sub[3]['index'] == 3
    with pytest.raises(IndexError):
        sub[4]
    with pytest.raises(ValueError, match='7'):
        D.SubsetDataset(ds, 7)
    rep = D.Repeat(sub, 10)
    assert len(rep) == 10 and rep[9]['index'] == 1


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('cls,script', [
    (D.FFHQlmdb, 'data_resize_ffhq.py'),
    (D.CelebAlmdb, 'data_resize_celeba.py'),
    (D.CelebHQlmdb, 'data_resize_celebahq.py'),
    (D.Horse_lmdb, 'data_resize_horse.py'),
    (D.Bedroom_lmdb, 'data_resize_bedroom.py'),
])
def test_missing_lmdb_names_path_and_script(tmp_path, cls, script):
    path = str(tmp_path / 'nope.lmdb')
    with pytest.raises(FileNotFoundError) as e:
        cls(path, image_size=64)
    assert path in str(e.value) and script in str(e.value)


def test_missing_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nofolder'):
        D.ImageDataset(str(tmp_path / 'nofolder'), image_size=32)


def test_empty_image_folder_names_folder_and_exts(tmp_path):
    (tmp_path / 'notes.txt').write_text('no images here')
    with pytest.raises(FileNotFoundError) as e:
        D.ImageDataset(str(tmp_path), image_size=32, exts=['jpg', 'png'])
    assert str(tmp_path) in str(e.value)
    assert "'jpg'" in str(e.value) and "'png'" in str(e.value)


def _write_lmdb(path, items):
    env = lmdb.open(str(path), map_size=2**24)
    with env.begin(write=True) as txn:
        for k, v in items.items():
            txn.put(k.encode(), v)
    env.close()


def _png(arr):
    from io import BytesIO
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format='png')
    return buf.getvalue()


def test_lmdb_without_length(tmp_path):
    path = tmp_path / 'nolen.lmdb'
    _write_lmdb(path, {'256-00000': _png(np.zeros((4, 4, 3), np.uint8))})
    with pytest.raises(LMDBFormatError) as e:
        D.FFHQlmdb(str(path), image_size=4)
    msg = str(e.value)
    assert str(path) in msg and "'length'" in msg
    assert "'256-00000'" in msg  # the keys found


def test_lmdb_with_other_key_format(tmp_path):
    # the horse LMDB has 7-digit keys; FFHQ expects 5
    path = str(LMDB_DIR / 'horse256.lmdb')
    with pytest.raises(LMDBFormatError) as e:
        D.FFHQlmdb(path, image_size=64)
    msg = str(e.value)
    assert path in msg
    assert "'256-00000'" in msg            # expected
    assert "'256-0000000'" in msg          # found
    assert '--zfill 7' in msg              # the guess
    assert '--prefix 256 --zfill 5' in msg  # the converter flags that fix it
    assert 'original_resolution' not in msg  # no config field of that name


def test_corrupt_record_names_key(tmp_path):
    path = tmp_path / 'bad.lmdb'
    good = _png(np.full((8, 8, 3), 100, np.uint8))
    _write_lmdb(path, {'256-0000000': good, '256-0000001': b'garbage',
                       'length': b'2'})
    ds = D.Horse_lmdb(str(path), image_size=8, do_augment=False)
    assert ds[0]['img'].shape == (3, 8, 8)
    with pytest.raises(CorruptImageError) as e:
        ds[1]
    assert "'256-0000001'" in str(e.value) and str(path) in str(e.value)
    # a 'length' beyond the records is found when the dataset is built
    # (not as a KeyError mid-run; tests/test_faults.py)
    short = tmp_path / 'short.lmdb'
    _write_lmdb(short, {'256-0000000': good, '256-0000001': good,
                        'length': b'3'})
    with pytest.raises(LMDBFormatError, match="no record '256-0000002'"):
        D.Horse_lmdb(str(short), image_size=8, do_augment=False)


def test_corrupt_file_names_path(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    (tmp_path / 'b.png').write_bytes(b'\x89PNG broken')
    ds = D.ImageDataset(str(tmp_path), image_size=8, exts=['png'],
                        sort_names=True, do_augment=False)
    assert ds[0]['img'].shape == (3, 8, 8)
    with pytest.raises(CorruptImageError, match='b.png'):
        ds[1]


# ---------------------------------------------------------------------------
# image modes
# ---------------------------------------------------------------------------
def test_rgba_composited_on_white():
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[..., 0] = 255              # red everywhere ...
    arr[0, 0, 3] = 255             # ... opaque here
    arr[0, 1, 3] = 0               # transparent (red hidden)
    arr[1, :, 3] = 128             # half
    out = np.asarray(to_rgb(Image.fromarray(arr, 'RGBA')))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    assert out[1, 0, 0] == 255 and 120 <= out[1, 0, 1] <= 135


def test_greyscale_modes():
    g = np.array([[0, 100], [200, 255]], np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(g, 'L')))
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, axis=2))
    la = np.stack([g, np.full_like(g, 255)], axis=2)
    out = np.asarray(to_rgb(Image.fromarray(la, 'LA')))
    np.testing.assert_array_equal(out[..., 1], g)
    p = Image.fromarray(g, 'L').convert('P')
    np.testing.assert_array_equal(np.asarray(to_rgb(p))[..., 2], g)


def test_palette_with_transparency():
    p = Image.new('P', (2, 1))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info['transparency'] = 0
    out = np.asarray(to_rgb(p))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [10, 20, 30]])


def test_16bit_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257], [32896, 65535]], np.uint16)
    want = np.array([[0, 1], [128, 255]], np.uint8)
    img16 = Image.fromarray(v)
    assert img16.mode.startswith('I;16')
    np.testing.assert_array_equal(np.asarray(to_rgb(img16))[..., 0], want)
    img32 = Image.fromarray(v.astype(np.int32))
    assert img32.mode == 'I'
    np.testing.assert_array_equal(np.asarray(to_rgb(img32))[..., 1], want)
    # a 16-bit PNG through the folder dataset
    img16.save(tmp_path / 'deep.png')
    ds = D.ImageDataset(str(tmp_path), image_size=2, exts=['png'],
                        do_augment=False, do_normalize=False)
    got = (ds[0]['img'] * 255).round().to(torch.uint8)
    assert got.shape == (3, 2, 2)
    np.testing.assert_array_equal(got[2].numpy(), want)


def test_float_mode():
    f = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    out = np.asarray(to_rgb(Image.fromarray(f, 'F')))
    np.testing.assert_array_equal(out[..., 0], [[0, 128], [255, 64]])


def test_rgba_file_and_small_image_warning(tmp_path):
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[..., 2] = 255
    arr[:8, :, 3] = 255
    Image.fromarray(arr, 'RGBA').save(tmp_path / 'x.png')
    ds = D.ImageDataset(str(tmp_path), image_size=32, exts=['png'],
                        do_augment=False)
    with pytest.warns(UserWarning, match='upscaled'):
        img = ds[0]['img']
    assert img.shape == (3, 32, 32)
    # top half blue, bottom half white
    torch.testing.assert_close(img[:, 2, 16], torch.tensor([-1., -1., 1.]))
    torch.testing.assert_close(img[:, 29, 16], torch.tensor([1., 1., 1.]))


def test_image_dataset_notebook_usage(tmp_path):
    rng = np.random.default_rng(0)
    for name in ['a.jpg', 'b.JPG', 'sub/c.png']:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), np.uint8)).save(
            tmp_path / name)
    data = D.ImageDataset(str(tmp_path), image_size=16,
                          exts=['jpg', 'JPG', 'png'], do_augment=False)
    assert len(data) == 3
    batch = data[1]['img'][None]
    assert batch.shape == (1, 3, 16, 16)
    assert -1 <= batch.min() and batch.max() <= 1
    # the only png is in a subfolder
    with pytest.raises(FileNotFoundError):
        D.ImageDataset(str(tmp_path), image_size=16, exts=['png'],
                       has_subdir=False)


# ---------------------------------------------------------------------------
# attribute datasets
# ---------------------------------------------------------------------------
def test_cls_to_id_without_instance():
    assert D.CelebAttrDataset.cls_to_id['Wavy_Hair'] == 33
    assert D.CelebAttrDataset.id_to_cls[0] == '5_o_Clock_Shadow'
    assert len(D.CelebAttrDataset.id_to_cls) == 40
    assert D.CelebHQAttrDataset.id_to_cls == D.CelebAttrDataset.id_to_cls


def _write_attr_file(path, files, values, names):
    lines = [str(len(files)), ' '.join(names)]
    for f, row in zip(files, values):
        lines.append(f + '  ' + ' '.join(f'{v:2d}' for v in row))
    path.write_text('\n'.join(lines) + '\n')


def _attr_values(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice([-1, 1], size=(n, 40))


def test_celeb_attr_dataset(tmp_path):
    folder = tmp_path / 'img'
    folder.mkdir()
    for name in ['000001', '000003']:
        Image.fromarray(np.full((218, 178, 3), 50, np.uint8)).save(
            folder / f'{name}.png')
    files = ['000001.jpg', '000002.jpg', '000003.jpg']
    values = _attr_values(3)
    # columns in reversed order: labels must still follow id_to_cls
    names = D.CELEBA_ATTRS[::-1]
    _write_attr_file(tmp_path / 'attr.txt', files, values[:, ::-1], names)
    ds = D.CelebAttrDataset(str(folder), image_size=32,
                            attr_path=str(tmp_path / 'attr.txt'))
    assert len(ds) == 2  # 000002 has no image
    item = ds[1]
    assert item['img'].shape == (3, 32, 32) and item['index'] == 1
    assert item['labels'].dtype == torch.int64
    assert torch.equal(item['labels'], torch.from_numpy(values[2]))
    assert torch.equal(ds.labels, torch.from_numpy(values[[0, 2]]))
    wavy = D.CelebAttrDataset.cls_to_id['Wavy_Hair']
    assert ds.pos_count('Wavy_Hair') == int((values[[0, 2], wavy] == 1).sum())
    only = D.CelebAttrDataset(str(folder), image_size=32,
                              attr_path=str(tmp_path / 'attr.txt'),
                              only_cls_name='Wavy_Hair',
                              only_cls_value=int(values[0, wavy]))
    assert all(int(only[i]['labels'][wavy]) == values[0, wavy]
               for i in range(len(only)))
    d2c = D.CelebD2CAttrDataset(str(folder), image_size=16, ext='png',
                                attr_path=str(tmp_path / 'attr.txt'))
    assert d2c[0]['img'].shape == (3, 16, 16)


def test_attr_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='attr_missing.txt'):
        D.read_attr_file(tmp_path / 'attr_missing.txt')
    bad = tmp_path / 'bad.txt'
    bad.write_text('1\nA B\nx.jpg 1\n')
    with pytest.raises(ValueError, match='bad.txt.*row 1'):
        D.read_attr_file(bad)


def test_celeb_hq_attr_dataset(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / 'celebahq'
    src.mkdir()
    arrs = [rng.integers(0, 256, (24, 24, 3), np.uint8) for _ in range(3)]
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(src / f'{i}.png')
    lmdb_path = tmp_path / 'celebahq.lmdb'
    folder_to_lmdb(src, lmdb_path, size=None, key_prefix='256', zfill=5,
                   format='png', exts=['png'], order='index',
                   progress=False)
    values = _attr_values(3, seed=1)
    files = ['2.jpg', '0.jpg', '1.jpg']
    _write_attr_file(tmp_path / 'anno.txt', files, values, D.CELEBA_ATTRS)
    ds = D.CelebHQAttrDataset(str(lmdb_path), image_size=24,
                              attr_path=str(tmp_path / 'anno.txt'))
    assert len(ds) == 3
    item = ds[0]  # row '2.jpg' -> key 256-00002
    want = torch.from_numpy(arrs[2]).permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(item['img'], want, atol=1e-6, rtol=0)
    assert torch.equal(item['labels'], torch.from_numpy(values[0]))
    plain = D.CelebHQlmdb(str(lmdb_path), image_size=24, do_augment=False)
    torch.testing.assert_close(plain[2]['img'], want, atol=1e-6, rtol=0)


def test_fewshot_csv(tmp_path):
    folder = tmp_path / 'img'
    folder.mkdir()
    for name in ['000005', '000007']:
        Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(
            folder / f'{name}.png')
    csv_path = tmp_path / 'K1_Smiling_0.csv'
    header = ',' + ','.join(D.CELEBA_ATTRS)
    values = _attr_values(2, seed=2)
    rows = [f'{f},' + ','.join(str(v) for v in r)
            for f, r in zip(['000005.jpg', '000007.jpg'], values)]
    csv_path.write_text('\n'.join([header] + rows) + '\n')
    ds = D.CelebAttrFewshotDataset('Smiling', 1, str(folder), img_size=16,
                                   csv_path=str(csv_path))
    smiling = D.CELEBA_ATTRS.index('Smiling')
    assert len(ds) == 2
    item = ds[1]
    assert item['labels'].shape == (1, )
    assert int(item['labels'][0]) == values[1, smiling]
    assert item['img'].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match='K3_Bald_0.csv'):
        D.CelebAttrFewshotDataset('Bald', 3, str(folder))


def test_lmdb_writer_keys_read_by_base_lmdb(tmp_path):
    path = tmp_path / 'w.lmdb'
    with LMDBImageWriter(path, format='png', zfill=5, key_prefix='64') as w:
        w.put_images(torch.rand(2, 3, 8, 8))
    base = D.BaseLMDB(str(path), 64, zfill=5)
    assert len(base) == 2 and base['1'].size == (8, 8)
    assert os.path.isdir(path)
