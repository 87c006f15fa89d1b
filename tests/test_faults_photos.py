"""Real photo folders: phone photos stored sideways (EXIF orientation),
extensions in any case, and the README's own-images recipe as written."""
import re
import shlex

import numpy as np
import pytest
from PIL import Image

import dataset as D
from conftest import ROOT

ORIENTATION = 0x0112


def _sideways_photo(path):
    """A 16x16 JPEG stored red-left / blue-right with EXIF Orientation 6
    ("turn 90 degrees clockwise to show"): shown, red is on top and blue
    at the bottom."""
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, :8, 0] = 255
    arr[:, 8:, 2] = 255
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(arr).save(path, quality=95, exif=exif)


def _assert_red_top_blue_bottom(img):
    """img: (3, H, W) in [0, 1]."""
    h = img.shape[1]
    top, bottom = img[:, :h // 4], img[:, -(h // 4):]
    assert top[0].mean() > 0.8 and top[2].mean() < 0.2, top.mean((1, 2))
    assert bottom[2].mean() > 0.8 and bottom[0].mean() < 0.2, \
        bottom.mean((1, 2))


def test_orientation_6_photo_is_upright_in_the_folder_dataset(tmp_path):
    _sideways_photo(tmp_path / 'phone.jpg')
    ds = D.ImageDataset(str(tmp_path), image_size=16, do_augment=False,
                        do_normalize=False)
    _assert_red_top_blue_bottom(ds[0]['img'].numpy())


def test_orientation_6_photo_is_upright_after_the_converter(tmp_path):
    import data_resize_folder
    from lmdb_writer import LMDBImageReader
    (tmp_path / 'in').mkdir()
    _sideways_photo(tmp_path / 'in' / 'phone.jpg')
    out = tmp_path / 'out.lmdb'
    data_resize_folder.main(['--in', str(tmp_path / 'in'), '--out',
                             str(out), '--size', '16', '--workers', '0',
                             '--format', 'png'])
    img = LMDBImageReader(str(out), zfill=5, key_prefix='16')[0]
    _assert_red_top_blue_bottom(np.asarray(img).transpose(2, 0, 1) / 255)


def test_extensions_in_any_case_are_read_and_counted(tmp_path, capsys):
    Image.new('RGB', (8, 8), (0, 255, 0)).save(tmp_path / 'upper.Jpg',
                                               'JPEG')
    Image.new('RGB', (8, 8), (0, 0, 255)).save(tmp_path / 'x.WEBP', 'WEBP')
    (tmp_path / 'notes.txt').write_text('not an image')
    ds = D.ImageDataset(str(tmp_path), image_size=8, exts=['jpg', 'webp'],
                        sort_names=True)
    assert [str(p) for p in ds.paths] == ['upper.Jpg', 'x.WEBP']
    said = capsys.readouterr().out
    assert '3 files found, 2 images' in said
    assert '1 other files left out (1 .txt)' in said


def _readme_own_images_recipe():
    """(the converter command, the Python lines) of the README's "Your own
    images" section, as written there."""
    text = (ROOT / 'README.md').read_text()
    section = text.split('### Your own images', 1)[1].split('\n#', 1)[0]
    bash = re.findall(r'```bash\n(.*?)```', section, re.S)[0].strip()
    python = re.findall(r'```python\n(.*?)```', section, re.S)[-1]
    return bash, python


def test_readme_own_images_recipe_runs_as_written(tmp_path, monkeypatch):
    import data_resize_folder
    import templates
    bash, python = _readme_own_images_recipe()
    argv = shlex.split(bash)
    assert argv[:2] == ['python', 'data_resize_folder.py'], bash
    src = argv[argv.index('--in') + 1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / src).mkdir(parents=True)
    for i in range(3):
        Image.new('RGB', (20, 16), (80 * i, 40, 200)).save(
            tmp_path / src / f'{i}.png')
    data_resize_folder.main(argv[2:])
    conf = templates.ffhq128_autoenc_130M()
    exec(python, {'conf': conf})
    data = conf.make_dataset()
    assert len(data) == 3
    assert tuple(data[0]['img'].shape) == (3, conf.img_size, conf.img_size)


def test_lmdb_of_other_keys_names_the_converter_flags(tmp_path):
    import data_resize_folder
    (tmp_path / 'in').mkdir()
    Image.new('RGB', (8, 8)).save(tmp_path / 'in' / 'a.png')
    out = tmp_path / 'mine128.lmdb'
    data_resize_folder.main(['--in', str(tmp_path / 'in'), '--out',
                             str(out), '--size', '128', '--zfill', '7',
                             '--workers', '0'])
    with pytest.raises(D.LMDBFormatError) as e:
        D.FFHQlmdb(str(out), image_size=128)
    msg = str(e.value)
    assert '--prefix 128 --zfill 7' in msg         # what wrote it
    assert '--prefix 256 --zfill 5' in msg         # what this reader needs
    assert 'original_resolution' not in msg
