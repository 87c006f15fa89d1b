"""align.py: the FFHQ alignment geometry on a synthetic face with known
landmarks (no detector needed), the main face of several, and the
messages for no face, an unreadable photo and a missing detector file.
The real detector on real photos: test_align_photos.py."""
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

import align

RED, BLUE = (230, 20, 20), (20, 20, 230)


def face_landmarks(eye_l, eye_r, mouth_l, mouth_r, r=6.0):
    """68 landmarks with the given eye centres and mouth corners (the
    other points do not enter the FFHQ recipe)."""
    lm = np.zeros((68, 2))
    lm[:] = (np.add(eye_l, eye_r)) / 2
    ring = np.array([(math.cos(a), math.sin(a))
                     for a in np.arange(6) * math.pi / 3]) * r
    lm[36:42] = np.asarray(eye_l) + ring
    lm[42:48] = np.asarray(eye_r) + ring
    lm[48:60] = (np.asarray(mouth_l) + np.asarray(mouth_r)) / 2
    lm[48], lm[54] = mouth_l, mouth_r
    return lm


def synthetic_face(size, eye_l, eye_r, radius):
    """A grey photo with a red left eye and a blue right eye."""
    img = Image.new('RGB', size, (120, 110, 100))
    d = ImageDraw.Draw(img)
    for (x, y), col in ((eye_l, RED), (eye_r, BLUE)):
        d.ellipse((x - radius, y - radius, x + radius, y + radius), fill=col)
    return img


def centroid(img, colour):
    a = np.asarray(img).astype(int)
    mask = (np.abs(a - np.array(colour)).sum(-1) < 120)
    assert mask.sum() > 3, f'no {colour} pixels in the aligned crop'
    ys, xs = np.nonzero(mask)
    # pixel i covers [i, i + 1): its centre is i + 0.5
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_quad_of_an_upright_face_by_hand():
    # eyes 160 px apart, mouth 160 px below the eyes: half-side
    # max(2 * 160, 1.8 * 160) = 320, centre 16 px below the eye midpoint
    lm = face_landmarks((400, 350), (560, 350), (420, 510), (540, 510))
    quad, qsize = align.ffhq_quad(lm)
    np.testing.assert_allclose(
        quad, [(160, 46), (160, 686), (800, 686), (800, 46)], atol=1e-9)
    assert qsize == pytest.approx(640)


# In a 256 crop of that square the eyes land at x = 256 * (0.5 -+ 80/640)
# = 96 and 160, y = 256 * (320 - 16) / 640 = 121.6, whatever the photo's
# scale, rotation or position (shrink / crop / pad paths of the recipe).
EXPECTED = {RED: (96.0, 121.6), BLUE: (160.0, 121.6)}


@pytest.mark.parametrize('scale,angle,size,centre', [
    (1.0, 0.0, (1000, 800), (480, 350)),     # crop only
    (3.0, 0.0, (3000, 2400), (1440, 1050)),  # shrink by 3 first
    (1.0, 25.0, (700, 600), (260, 220)),     # rotated, quad leaves the photo
])
def test_eyes_land_where_the_ffhq_recipe_puts_them(scale, angle, size,
                                                   centre):
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])

    def place(dx, dy):
        return tuple(np.asarray(centre) + scale * rot @ np.array([dx, dy]))

    eye_l, eye_r = place(-80, 0), place(80, 0)
    lm = face_landmarks(eye_l, eye_r, place(-60, 160), place(60, 160),
                        r=6 * scale)
    img = synthetic_face(size, eye_l, eye_r, radius=12 * scale)
    out = align.align_image(img, lm, output_size=256)
    assert out.size == (256, 256)
    for colour, (x, y) in EXPECTED.items():
        cx, cy = centroid(out, colour)
        assert abs(cx - x) < 1 and abs(cy - y) < 1, (colour, cx, cy)


@pytest.fixture
def small_transform(monkeypatch):
    """The FFHQ transform at 64 px instead of 4096 (these tests check which
    faces are aligned, not the pixels of the recipe: see above)."""
    full = align.align_image
    monkeypatch.setattr(align, 'align_image', lambda img, lm, size=256: full(
        img, lm, size, transform_size=64))


def test_no_face_says_so_and_several_faces_align_the_main_one(
        small_transform):
    img = Image.new('RGB', (64, 64))
    lm = face_landmarks((20, 25), (44, 25), (24, 45), (40, 45))
    other = face_landmarks((10, 10), (30, 12), (12, 30), (28, 31))
    with pytest.raises(align.NoFaceError, match=r'me\.jpg: no face found'):
        align.align_faces(img, lambda a: [], name='me.jpg')
    # the highest detection score is the main face, wherever it is listed
    faces = [align.Face(other, (0, 0, 40, 40), 0.2),
             align.Face(lm, (10, 10, 50, 50), 1.5)]
    res = align.align_photo(img, lambda a: faces, output_size=32,
                            name='us.jpg')
    assert len(res.crops) == 1 and res.faces[0].score == 1.5
    want = align.align_image(img, lm, 32)
    assert np.array_equal(np.asarray(res.crops[0]), np.asarray(want))
    assert res.note.startswith('us.jpg: 2 faces found, aligned the main')
    assert 'score 1.50, box 40x40 at (10, 10)' in res.note
    both = align.align_faces(img, lambda a: faces, output_size=32,
                             all_faces=True)
    assert [c.size for c in both] == [(32, 32), (32, 32)]
    # bare landmark arrays (no score): the detector's first one
    first = align.align_faces(img, lambda a: [other, lm], output_size=32)
    assert np.array_equal(np.asarray(first[0]),
                          np.asarray(align.align_image(img, other, 32)))


def test_folder_writes_the_main_face_and_reports_the_rest(tmp_path, capsys,
                                                          small_transform):
    src = tmp_path / 'imgs'
    src.mkdir()
    lm = face_landmarks((20, 25), (44, 25), (24, 45), (40, 45))
    # the fake detector tells the photos apart by their width
    faces = {'one.jpg': (64, [lm]), 'none.png': (65, []),
             'two.png': (66, [lm, lm])}
    for name, (width, _) in faces.items():
        Image.new('RGB', (width, 64)).save(src / name)
    (src / 'broken.jpg').write_bytes(b'not a photo')
    by_width = dict(faces.values())
    written, problems = align.align_folder(
        src, tmp_path / 'out', lambda a: by_width[a.shape[1]],
        output_size=32, jobs=2)
    assert [p.rsplit('/', 1)[1] for p in map(str, written)] == [
        'one.png', 'two.png']
    assert Image.open(written[0]).size == (32, 32)
    assert sorted(problems) == ['broken.jpg', 'none.png']
    assert 'broken.jpg: cannot read the image' in problems['broken.jpg']
    assert 'two.png: 2 faces found' in capsys.readouterr().err
    written, _ = align.align_folder(
        src, tmp_path / 'all', lambda a: by_width[a.shape[1]],
        output_size=32, all_faces=True)
    assert [p.rsplit('/', 1)[1] for p in map(str, written)] == [
        'one_01.png', 'two_01.png', 'two_02.png']


def test_missing_landmark_file_names_the_places_and_installs(tmp_path,
                                                             capsys):
    missing = tmp_path / 'nowhere' / align.LANDMARKS_FILE
    (tmp_path / 'imgs').mkdir()
    rc = align.main(['-i', str(tmp_path / 'imgs'), '-o',
                     str(tmp_path / 'out'), '--predictor', str(missing)])
    err = capsys.readouterr().err
    assert rc == 2
    for text in (str(missing), '--predictor', 'DIFFAE_DLIB_LANDMARKS',
                 'checkpoints/' + align.LANDMARKS_FILE,
                 '/usr/share/dlib/' + align.LANDMARKS_FILE,
                 'apt-get install libdlib-data', 'make align-deps'):
        assert text in err, text


def test_landmark_file_is_found_in_the_default_places(tmp_path,
                                                      monkeypatch):
    monkeypatch.delenv('DIFFAE_DLIB_LANDMARKS', raising=False)
    monkeypatch.chdir(tmp_path)
    system = tmp_path / 'system.dat'
    monkeypatch.setattr(align, 'SYSTEM_PREDICTOR', str(system))
    with pytest.raises(align.DetectorUnavailableError, match='system.dat'):
        align.find_predictor()
    system.write_bytes(b'')
    assert align.find_predictor() == str(system)
    local = tmp_path / align.DEFAULT_PREDICTOR
    local.parent.mkdir()
    local.write_bytes(b'')
    assert align.find_predictor() == align.DEFAULT_PREDICTOR
    env = tmp_path / 'env.dat'
    monkeypatch.setenv('DIFFAE_DLIB_LANDMARKS', str(env))
    with pytest.raises(align.DetectorUnavailableError, match='env.dat'):
        align.find_predictor()  # a named file must be there
    env.write_bytes(b'')
    assert align.find_predictor() == str(env)
    given = tmp_path / 'given.dat'  # --predictor comes first
    given.write_bytes(b'')
    assert align.find_predictor(str(given)) == str(given)


def test_cli_align_feeds_the_aligned_crop_to_the_model(tmp_path):
    import cli
    lm = face_landmarks((400, 350), (560, 350), (420, 510), (540, 510))
    img = synthetic_face((1000, 800), (400, 350), (560, 350), radius=12)
    img.save(tmp_path / 'face.png')
    x = cli.load_images([str(tmp_path / 'face.png')], 32,
                        aligner=lambda a: [lm])
    want = cli.to_model_input(align.align_image(img, lm, 256), 32)
    assert x.shape == (1, 3, 32, 32)
    assert (x[0] - want).abs().max() < 1e-6
    # the aligned crop is not the plain resize of the photo
    plain = cli.load_images([str(tmp_path / 'face.png')], 32)
    assert (plain - x).abs().max() > 0.2

    args = cli.parse_args(['autoencode', '--template', 'shapes32_autoenc',
                           '--align', '--predictor',
                           str(tmp_path / 'none.dat'), 'face.png'])
    with pytest.raises(SystemExit, match='none.dat'):
        cli.make_aligner(args)
