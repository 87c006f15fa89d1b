"""Align face photos the way FFHQ (and the official DiffAE models) expect:

    python align.py -i imgs -o imgs_align

For every photo in ``imgs``: find the face and its 68 landmarks (dlib),
build the oriented crop square from the eyes and the mouth (the FFHQ
recipe: ``recreate_aligned_images`` of NVlabs/ffhq-dataset, also the
official DiffAE ``align.py``), then shrink, crop, pad (reflect + blur) and
transform it to a 256x256 PNG ``imgs_align/<name>.png``.

The geometry (:func:`ffhq_quad`, :func:`align_image`) works on landmark
arrays and needs no detector. The detector is an optional dependency:
``pip install dlib`` (it compiles: cmake and a C++ compiler) and the
shape predictor file ``shape_predictor_68_face_landmarks.dat`` (from
http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2, unpacked
with ``bunzip2``) at ``checkpoints/shape_predictor_68_face_landmarks.dat``,
or wherever ``--predictor`` / ``DIFFAE_DLIB_LANDMARKS`` says. Nothing is
downloaded at run time.
"""
import argparse
import os
import sys
from typing import Callable, List, Sequence

import numpy as np
from PIL import Image

from dataset_util import upright

LANDMARKS_FILE = 'shape_predictor_68_face_landmarks.dat'
LANDMARKS_URL = ('http://dlib.net/files/'
                 'shape_predictor_68_face_landmarks.dat.bz2')
DEFAULT_PREDICTOR = os.path.join('checkpoints', LANDMARKS_FILE)
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp')


class NoFaceError(ValueError):
    """The detector found no face in a photo."""


class SeveralFacesError(ValueError):
    """The detector found more than one face where one was expected."""


class DetectorUnavailableError(RuntimeError):
    """dlib or its landmark file is missing."""


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
class DlibLandmarks:
    """dlib's frontal face detector + 68-point shape predictor (what FFHQ
    was aligned with). Call it on an (H, W, 3) uint8 RGB array; it returns
    one (68, 2) landmark array per face found."""

    def __init__(self, predictor_path: str = None):
        path = predictor_path or os.environ.get('DIFFAE_DLIB_LANDMARKS',
                                                DEFAULT_PREDICTOR)
        if not os.path.isfile(path):
            raise DetectorUnavailableError(
                f'face landmark file not found: {path}. Download '
                f'{LANDMARKS_URL}, unpack it (bunzip2) and put '
                f'{LANDMARKS_FILE} there, or give its path with '
                '--predictor (or DIFFAE_DLIB_LANDMARKS).')
        try:
            import dlib
        except ImportError as e:
            raise DetectorUnavailableError(
                'face alignment needs dlib (optional dependency): '
                '`pip install dlib` (builds from source: needs cmake and a '
                f'C++ compiler). Import failed: {e}') from e
        self.path = path
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(path)

    def __call__(self, rgb: np.ndarray) -> List[np.ndarray]:
        faces = self.detector(rgb, 1)  # upsample once: finds smaller faces
        return [np.array([(p.x, p.y) for p in self.predictor(rgb, f).parts()],
                         dtype=np.float64) for f in faces]


Detector = Callable[[np.ndarray], Sequence[np.ndarray]]


def open_photo(path) -> Image.Image:
    """An RGB photo, turned upright by its EXIF orientation."""
    return upright(Image.open(path)).convert('RGB')


def align_faces(img: Image.Image, detector: Detector, output_size: int = 256,
                name: str = 'image', all_faces: bool = False):
    """Aligned crops of the face(s) in ``img``. One face is expected:
    NoFaceError / SeveralFacesError (naming ``name``) otherwise, unless
    ``all_faces`` (then every face, in the detector's order)."""
    img = img.convert('RGB')
    faces = list(detector(np.asarray(img)))
    if not faces:
        raise NoFaceError(
            f'{name}: no face found. The detector finds roughly frontal '
            'faces at least about 80 pixels wide; crop or enlarge the photo.')
    if len(faces) > 1 and not all_faces:
        raise SeveralFacesError(
            f'{name}: found {len(faces)} faces, expected one. Crop the photo '
            'to one face, or align every face with --all-faces '
            '(<name>_01.png, <name>_02.png, ...).')
    return [align_image(img, lm, output_size) for lm in faces]


def align_folder(in_dir, out_dir, detector: Detector, output_size: int = 256,
                 all_faces: bool = False):
    """Align every photo of ``in_dir`` into ``out_dir`` (PNG). Returns
    (written paths, {photo: problem}) -- photos without exactly one face
    are reported, not fatal."""
    from tqdm.auto import tqdm
    if not os.path.isdir(in_dir):
        raise FileNotFoundError(f'input folder not found: {in_dir}')
    files = sorted(f for f in os.listdir(in_dir)
                   if f.lower().endswith(IMAGE_EXTS))
    os.makedirs(out_dir, exist_ok=True)
    written, problems = [], {}
    for f in tqdm(files, desc='align'):
        stem = os.path.splitext(f)[0]
        try:
            crops = align_faces(open_photo(os.path.join(in_dir, f)),
                                detector, output_size, name=f,
                                all_faces=all_faces)
        except (NoFaceError, SeveralFacesError) as e:
            problems[f] = str(e)
            continue
        for i, crop in enumerate(crops, start=1):
            out = (f'{stem}.png' if len(crops) == 1 and not all_faces
                   else f'{stem}_{i:02d}.png')
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
                   f'{DEFAULT_PREDICTOR} or $DIFFAE_DLIB_LANDMARKS)')
    p.add_argument('--size', type=int, default=256,
                   help='output size in pixels (official: 256)')
    p.add_argument('--all-faces', action='store_true',
                   help='write every face of a photo (<name>_NN.png)')
    args = p.parse_args(argv)
    try:
        detector = DlibLandmarks(args.predictor)
        written, problems = align_folder(
            args.input_imgs_path, args.output_imgs_path, detector,
            args.size, args.all_faces)
    except (DetectorUnavailableError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for msg in problems.values():
        print(f'skipped {msg}', file=sys.stderr)
    print(f'{len(written)} aligned images in {args.output_imgs_path}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
