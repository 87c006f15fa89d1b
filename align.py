"""Align face photos the way FFHQ (and the official DiffAE models) expect:

    python align.py -i imgs -o imgs_align

For every photo in ``imgs``: find the faces and their 68 landmarks (dlib),
take the main face (the highest detection score; ``--all-faces`` keeps
every face), build the oriented crop square from the eyes and the mouth
(the FFHQ recipe: ``recreate_aligned_images`` of NVlabs/ffhq-dataset, also
the official DiffAE ``align.py``), then shrink, crop, pad (reflect + blur)
and transform it to a 256x256 PNG ``imgs_align/<name>.png``.

The geometry (:func:`ffhq_quad`, :func:`align_image`) works on landmark
arrays and needs no detector. The detector is an optional extra, two
ordinary install lines, nothing downloaded at run time:

    make align-deps                   # pip: dlib-bin (a wheel, no compiler)
    apt-get install libdlib-data      # the 68-point landmark model

The model file is looked for at ``--predictor``, ``$DIFFAE_DLIB_LANDMARKS``,
``checkpoints/shape_predictor_68_face_landmarks.dat``, then Debian's
``/usr/share/dlib/shape_predictor_68_face_landmarks.dat``.
"""
import argparse
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps

LANDMARKS_FILE = 'shape_predictor_68_face_landmarks.dat'
LANDMARKS_URL = ('http://dlib.net/files/'
                 'shape_predictor_68_face_landmarks.dat.bz2')
DEFAULT_PREDICTOR = os.path.join('checkpoints', LANDMARKS_FILE)
SYSTEM_PREDICTOR = os.path.join('/usr/share/dlib', LANDMARKS_FILE)
INSTALL_DLIB = 'make align-deps (pip install -r requirements-align.txt)'
INSTALL_LANDMARKS = 'apt-get install libdlib-data'
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')


class NoFaceError(ValueError):
    """The detector found no face in a photo."""


class DetectorUnavailableError(RuntimeError):
    """dlib or its landmark file is missing."""


@dataclass
class Face:
    """One face found in a photo: its 68 (x, y) landmarks, the detector's
    box (left, top, right, bottom; pixels, right and bottom exclusive)
    and its detection score (None where the detector gives none)."""
    landmarks: np.ndarray
    box: Optional[tuple] = None
    score: Optional[float] = None

    def describe(self) -> str:
        if self.box is None:
            return 'no box'
        left, top, right, bottom = self.box
        score = '' if self.score is None else f'score {self.score:.2f}, '
        return (f'{score}box {right - left}x{bottom - top} at '
                f'({left}, {top})')


# ----------------------------------------------------------------------
# geometry: pure functions of the 68 landmarks (iBUG 300-W order)
# ----------------------------------------------------------------------
def eye_mouth_points(landmarks):
    """(left eye centre, right eye centre, left mouth corner, right mouth
    corner) of 68 (x, y) landmarks, in image pixels. Left/right as seen
    in the image."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f'expected 68 (x, y) landmarks, got shape '
                         f'{lm.shape}')
    return lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54]


def ffhq_quad(landmarks):
    """The FFHQ crop: an oriented square ``quad`` (4, 2) with corners
    top-left, bottom-left, bottom-right, top-right (source pixels), and
    its side length ``qsize``.

    The square is centred a tenth of the way from the eye midpoint to the
    mouth midpoint, turned so that the eye line is horizontal (the
    orientation is the eye-to-eye vector blended with the eye-to-mouth
    vector turned by 90 degrees), and its half-side is the larger of twice
    the eye distance and 1.8 times the eye-to-mouth distance."""
    eye_l, eye_r, mouth_l, mouth_r = eye_mouth_points(landmarks)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    # eye_to_mouth turned by -90 degrees (x, y) -> (y, -x) points along
    # +x for an upright face, like eye_to_eye
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # x turned by +90 degrees: "down"
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def _bounds(quad):
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def _pad_and_blur(img: Image.Image, pad, qsize):
    """Reflect-pad, then fade the padding into a blurred copy and the
    image's median colour (FFHQ's padding)."""
    from scipy.ndimage import gaussian_filter
    arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]),
                                   (0, 0)), 'reflect')
    h, w, _ = arr.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    # 0 inside the image, rising towards 1 at the outer edge of the padding
    mask = np.maximum(
        1.0 - np.minimum(np.float32(xx) / pad[0],
                         np.float32(w - 1 - xx) / pad[2]),
        1.0 - np.minimum(np.float32(yy) / pad[1],
                         np.float32(h - 1 - yy) / pad[3]))
    blur = qsize * 0.02
    arr += (gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(
        mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), 'RGB')


def align_image(img: Image.Image, landmarks, output_size: int = 256,
                transform_size: int = 4096,
                enable_padding: bool = True) -> Image.Image:
    """The aligned ``output_size`` square crop of ``img`` given its 68
    landmarks (the FFHQ steps: shrink, crop, pad, quad transform, resize;
    the official DiffAE align.py uses ``output_size=256``)."""
    img = img.convert('RGB')
    quad, qsize = ffhq_quad(landmarks)

    # shrink a large photo first (the quad transform then samples less)
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(img.size[0] / shrink)),
                int(np.rint(img.size[1] / shrink)))
        img = img.resize(size, Image.LANCZOS)
        quad = quad / shrink
        qsize = qsize / shrink

    # crop to the quad plus a border
    border = max(int(np.rint(qsize * 0.1)), 3)
    b = _bounds(quad)
    crop = (max(b[0] - border, 0), max(b[1] - border, 0),
            min(b[2] + border, img.size[0]), min(b[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[0:2]

    # pad where the quad leaves the photo
    b = _bounds(quad)
    pad = (max(-b[0] + border, 0), max(-b[1] + border, 0),
           max(b[2] - img.size[0] + border, 0),
           max(b[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = tuple(int(p) for p in np.maximum(pad, int(np.rint(qsize *
                                                                0.3))))
        img = _pad_and_blur(img, pad, qsize)
        quad = quad + pad[:2]

    img = img.transform((transform_size, transform_size), Image.QUAD,
                        tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return img


# ----------------------------------------------------------------------
# detection (optional dependency)
# ----------------------------------------------------------------------
def find_predictor(path: Optional[str] = None) -> str:
    """The landmark model file: ``path`` (``--predictor``) or
    ``$DIFFAE_DLIB_LANDMARKS`` when given (then it must be there), else
    the first of ``checkpoints/`` and ``/usr/share/dlib/`` that has it."""
    given = path or os.environ.get('DIFFAE_DLIB_LANDMARKS')
    places = [given] if given else [DEFAULT_PREDICTOR, SYSTEM_PREDICTOR]
    for p in places:
        if os.path.isfile(p):
            return p
    raise DetectorUnavailableError(
        f'face landmark file not found: {" or ".join(places)}. It is '
        f'looked for at --predictor, $DIFFAE_DLIB_LANDMARKS, '
        f'{DEFAULT_PREDICTOR}, then {SYSTEM_PREDICTOR}. Install it with '
        f'`{INSTALL_LANDMARKS}` (and dlib with `{INSTALL_DLIB}`), or unpack '
        f'{LANDMARKS_URL} (bunzip2) into one of those places.')


class DlibLandmarks:
    """dlib's frontal face detector + 68-point shape predictor (what FFHQ
    was aligned with). Call it on an (H, W, 3) uint8 RGB array; it returns
    one :class:`Face` per face found, highest detection score first."""

    def __init__(self, predictor_path: Optional[str] = None):
        path = find_predictor(predictor_path)
        try:
            import dlib
        except ImportError as e:
            raise DetectorUnavailableError(
                'face alignment needs dlib (an optional extra): '
                f'`{INSTALL_DLIB}` installs the dlib-bin wheel (no '
                f'compiler). Import failed: {e}') from e
        self.path = path
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(path)
        self._lock = threading.Lock()  # one photo at a time (align_folder)

    def __call__(self, rgb: np.ndarray) -> List[Face]:
        # upsample once (finds faces down to about 40 px), dlib's default
        # threshold 0; run() also gives each detection's score
        with self._lock:
            boxes, scores, _ = self.detector.run(rgb, 1, 0.0)
            shapes = [self.predictor(rgb, box) for box in boxes]
        return [Face(np.array([(p.x, p.y) for p in shape.parts()],
                              dtype=np.float64),
                     (box.left(), box.top(), box.right() + 1,
                      box.bottom() + 1),
                     float(score))
                for box, score, shape in zip(boxes, scores, shapes)]


Detector = Callable[[np.ndarray], Sequence]


def open_photo(path) -> Image.Image:
    """An RGB photo, turned upright by its EXIF orientation."""
    return ImageOps.exif_transpose(Image.open(path)).convert('RGB')


def main_face_first(found) -> List[Face]:
    """The detector's faces (:class:`Face`, or bare (68, 2) landmark
    arrays), the main face first: the highest detection score. dlib's HOG
    detector scans with a fixed window, so its boxes come in a few sizes
    and a false hit is as large as the face (astronaut.jpg in tests/:
    91x91 face, 90x91 hit on the clothes), while the scores differ tenfold
    (1.21 vs 0.16). dlib lists its detections by score, so this is the
    official align.py's choice (its first detection). Faces without a score
    keep the detector's order."""
    faces = [f if isinstance(f, Face) else Face(np.asarray(f, np.float64))
             for f in found]
    return sorted(faces, key=lambda f: -f.score if f.score is not None
                  else 0.0)


@dataclass
class Aligned:
    """What :func:`align_photo` did: the crops, every face it found (the
    main one first) and a one-line note naming the count."""
    crops: List[Image.Image]
    faces: List[Face]
    note: str


def align_photo(img: Image.Image, detector: Detector, output_size: int = 256,
                name: str = 'image', all_faces: bool = False) -> Aligned:
    """Align the main face of ``img`` (every face, main first, with
    ``all_faces``); :class:`NoFaceError` naming ``name`` without any."""
    img = img.convert('RGB')
    faces = main_face_first(detector(np.asarray(img)))
    if not faces:
        raise NoFaceError(
            f'{name}: no face found. The detector finds roughly frontal '
            'faces at least about 80 pixels wide; crop or enlarge the photo.')
    n = len(faces)
    if n == 1:
        note = f'{name}: 1 face found ({faces[0].describe()})'
    elif all_faces:
        note = f'{name}: {n} faces found, aligned all {n}: ' + '; '.join(
            f'{i}: {f.describe()}' for i, f in enumerate(faces, start=1))
    else:
        note = (f'{name}: {n} faces found, aligned the main one (the '
                f'highest detection score: {faces[0].describe()}); not '
                'aligned: ' + '; '.join(f.describe() for f in faces[1:]))
    used = faces if all_faces else faces[:1]
    return Aligned([align_image(img, f.landmarks, output_size) for f in used],
                   faces, note)


def align_faces(img: Image.Image, detector: Detector, output_size: int = 256,
                name: str = 'image', all_faces: bool = False):
    """The aligned crop of the main face of ``img`` as a one-item list
    (every face with ``all_faces``); see :func:`align_photo`."""
    return align_photo(img, detector, output_size, name, all_faces).crops


def _align_file(path, detector, output_size, all_faces):
    """align_photo of one file, or the message saying why it could not."""
    name = os.path.basename(path)
    try:
        img = open_photo(path)
    except OSError as e:  # not an image, truncated, unreadable
        return f'{name}: cannot read the image ({e})'
    try:
        return align_photo(img, detector, output_size, name, all_faces)
    except NoFaceError as e:
        return str(e)


def align_folder(in_dir, out_dir, detector: Detector, output_size: int = 256,
                 all_faces: bool = False, jobs: int = 1):
    """Align every photo of ``in_dir`` into ``out_dir`` (PNG): the main
    face as ``<name>.png``, or every face as ``<name>_NN.png`` with
    ``all_faces``. ``jobs`` photos are aligned at a time (threads: the
    image transforms release the GIL). Returns (written paths, {photo:
    problem}); a photo without a face or that cannot be read is reported,
    not fatal, and a photo with several faces is named on stderr."""
    from tqdm.auto import tqdm
    if not os.path.isdir(in_dir):
        raise FileNotFoundError(f'input folder not found: {in_dir}')
    files = sorted(f for f in os.listdir(in_dir)
                   if f.lower().endswith(IMAGE_EXTS))
    os.makedirs(out_dir, exist_ok=True)
    written, problems = [], {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = pool.map(lambda f: _align_file(
            os.path.join(in_dir, f), detector, output_size, all_faces), files)
        for f, res in tqdm(zip(files, results), total=len(files),
                           desc='align'):
            if isinstance(res, str):
                problems[f] = res
                continue
            if len(res.faces) > 1:
                tqdm.write(res.note + ('' if all_faces else
                                       ' (--all-faces writes every face)'),
                           file=sys.stderr)
            stem = os.path.splitext(f)[0]
            for i, crop in enumerate(res.crops, start=1):
                out = f'{stem}_{i:02d}.png' if all_faces else f'{stem}.png'
                crop.save(os.path.join(out_dir, out), 'PNG')
                written.append(os.path.join(out_dir, out))
    return written, problems


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('-i', '--input_imgs_path', default='imgs',
                   help='folder of photos')
    p.add_argument('-o', '--output_imgs_path', default='imgs_align',
                   help='folder for the aligned PNGs')
    p.add_argument('--predictor', default=None,
                   help=f'dlib {LANDMARKS_FILE} (default '
                   f'$DIFFAE_DLIB_LANDMARKS, {DEFAULT_PREDICTOR}, then '
                   f'{SYSTEM_PREDICTOR})')
    p.add_argument('--size', type=int, default=256,
                   help='output size in pixels (official: 256)')
    p.add_argument('--all-faces', action='store_true',
                   help='write every face of a photo (<name>_NN.png); by '
                   'default only the main face (highest detection score)')
    p.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                   help='photos aligned at a time (default: 2 or the '
                   'number of CPUs if fewer)')
    args = p.parse_args(argv)
    try:
        detector = DlibLandmarks(args.predictor)
        written, problems = align_folder(
            args.input_imgs_path, args.output_imgs_path, detector,
            args.size, args.all_faces, args.jobs)
    except (DetectorUnavailableError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for msg in problems.values():
        print(f'skipped {msg}', file=sys.stderr)
    print(f'{len(written)} aligned images in {args.output_imgs_path}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
