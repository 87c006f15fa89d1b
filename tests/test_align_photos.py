"""align.py with the real detector (dlib + its 68-point model) on real,
freely licensed photos (tests/photos/README.md names each source and
licence). What the FFHQ alignment promises is checked on the landmarks
re-detected in the aligned crops, not on pixels:

* idempotence: the FFHQ quad of the aligned crop is the whole frame;
* rotated, rescaled and EXIF-rotated copies of a photo give the same
  crop (eye and mouth positions);
* a photo with a false second detection aligns to its main face, in
  align.py, ``cli.py autoencode --align`` (and the web page: test_app.py).

They skip, naming the install lines, only where dlib or its model file
is not installed (``make align-deps``, ``apt-get install libdlib-data``).
"""
import io

import numpy as np
import pytest
from PIL import Image

import align
from conftest import ROOT

PHOTOS = ROOT / 'tests' / 'photos'
FACES = ['astronaut.jpg', 'grace_hopper.jpg']
SIZE = 256  # the official output size
# measured on these photos (dlib-bin 20.0.1, Debian's model): quad corners
# at most 0.6% (astronaut) and 4.5% (grace_hopper: glasses) of the frame
# away; the copies' eyes and mouth corners at most 1.2% away
QUAD_TOL, COPY_TOL = 0.05, 0.02


@pytest.fixture(scope='module')
def detector():
    try:
        return align.DlibLandmarks()
    except align.DetectorUnavailableError as e:
        pytest.skip(f'the real face detector is not installed: {e}')


def photo(name):
    return Image.open(PHOTOS / name).convert('RGB')


@pytest.fixture(scope='module')
def astronaut(detector):
    """align.py's result on the photo with a false second detection."""
    return align.align_photo(photo('astronaut.jpg'), detector, SIZE,
                             name='astronaut.jpg')


def redetected(crop, detector):
    """The main face's landmarks found again in an aligned crop."""
    faces = align.main_face_first(detector(np.asarray(crop)))
    assert faces, 'no face found in the aligned crop'
    return faces[0].landmarks


@pytest.mark.parametrize('name', FACES)
def test_aligned_crop_is_its_own_ffhq_quad(name, detector):
    crop = align.align_photo(photo(name), detector, SIZE).crops[0]
    quad, _ = align.ffhq_quad(redetected(crop, detector))
    # corners top-left, bottom-left, bottom-right, top-right
    frame = np.array([(0, 0), (0, SIZE), (SIZE, SIZE), (SIZE, 0)], float)
    err = np.abs(quad - frame).max() / SIZE
    assert err < QUAD_TOL, err


def exif_rotated(img):
    """A JPEG stored turned by 90 degrees, its EXIF orientation (6: turn
    it 90 degrees clockwise to view) saying how to show it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.transpose(Image.ROTATE_90).save(buf, 'JPEG', quality=95, exif=exif)
    buf.seek(0)
    return align.open_photo(buf)


COPIES = {
    'rotated 20 degrees': lambda im: im.rotate(20, Image.BICUBIC,
                                               expand=True),
    'rescaled 0.7x': lambda im: im.resize(
        (round(im.width * 0.7), round(im.height * 0.7)), Image.LANCZOS),
    'EXIF-rotated': exif_rotated,
}


@pytest.mark.parametrize('name', FACES)
def test_copies_align_to_the_same_crop(name, detector):
    img = photo(name)

    def eyes_and_mouth(im):
        crop = align.align_photo(im, detector, SIZE).crops[0]
        return np.stack(align.eye_mouth_points(redetected(crop, detector)))
    want = eyes_and_mouth(img)
    for copy, make in COPIES.items():
        err = np.abs(eyes_and_mouth(make(img)) - want).max() / SIZE
        assert err < COPY_TOL, (copy, err)


def test_false_second_detection_aligns_the_main_face(astronaut):
    res = astronaut
    # dlib's second hit is the mission patch on the suit, below the face
    # (the face is in the upper third of the photo: x 175-266, y 76-167
    # by eye)
    assert len(res.faces) == 2 and len(res.crops) == 1
    left, top, right, bottom = res.faces[0].box
    assert 150 < (left + right) / 2 < 290 and top < 170
    assert res.faces[1].box[1] > 300
    assert res.note.startswith('astronaut.jpg: 2 faces found, aligned the '
                               'main one')
    want = align.align_image(photo('astronaut.jpg'), res.faces[0].landmarks,
                             SIZE)
    assert np.array_equal(np.asarray(res.crops[0]), np.asarray(want))


def test_align_py_on_a_folder_of_real_photos(tmp_path, detector, astronaut,
                                             capsys):
    src = tmp_path / 'imgs'
    src.mkdir()
    for name in ('astronaut.jpg', 'coffee.jpg', 'chelsea.jpg'):
        (src / name).write_bytes((PHOTOS / name).read_bytes())
    # a truncated download
    (src / 'broken.jpg').write_bytes((PHOTOS / 'astronaut.jpg')
                                     .read_bytes()[:2000])
    rc = align.main(['-i', str(src), '-o', str(tmp_path / 'out'),
                     '--predictor', detector.path])
    err = capsys.readouterr().err
    assert rc == 1  # some photos were skipped
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'astronaut.png']
    assert 'astronaut.jpg: 2 faces found, aligned the main one' in err
    assert '--all-faces' in err
    assert 'skipped coffee.jpg: no face found' in err
    assert 'skipped chelsea.jpg: no face found' in err  # a cat
    assert 'skipped broken.jpg: cannot read the image' in err
    crop = Image.open(tmp_path / 'out' / 'astronaut.png')
    assert crop.size == (SIZE, SIZE)
    assert np.array_equal(np.asarray(crop), np.asarray(astronaut.crops[0]))


def test_cli_autoencode_align_uses_the_align_py_crop(tmp_path, demo_tree,
                                                     detector, astronaut,
                                                     capsys):
    import cli
    crop = astronaut.crops[0]
    ckpt = f'{demo_tree}/checkpoints/shapes32_autoenc/last.ckpt'
    cli.main(['autoencode', '--template', 'shapes32_autoenc', '--ckpt',
              ckpt, '--align', '--predictor', detector.path, '--T', '2',
              '--T-inv', '2', '--device', 'cpu', '--out', str(tmp_path),
              str(PHOTOS / 'astronaut.jpg')])
    assert 'astronaut.jpg: 2 faces found, aligned the main one' in \
        capsys.readouterr().err
    # the grid's first tile (2 px padding) is the model's input
    grid = np.asarray(Image.open(tmp_path / 'autoencode.png').convert('RGB'))
    tile = grid[2:34, 2:34].astype(int)
    want = (cli.to_model_input(crop, 32) + 1) / 2 * 255
    want = want.permute(1, 2, 0).numpy()
    assert np.abs(tile - want).max() <= 1
