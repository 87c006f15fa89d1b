"""Photos per second of align.py on a folder, and where the time goes.

    python bench/align_speed.py [--copies 4] [--jobs 1 2]

The folder: the face photos of tests/photos, each copied ``--copies``
times (align.py writes one 256x256 PNG per photo). Each ``--jobs`` value
aligns the whole folder in turn, twice, interleaved (1, 2, 1, 2): the
figure is the faster of the two (each run also gives the process's CPU
seconds per photo). Then, per photo: dlib's detection +
landmarks, and the FFHQ transform at the official 4096 px against 1024 px
(how much of the time the 4096-px quad transform is, and how far a
smaller one would move the pixels: align.py keeps 4096). Needs dlib and
its model (``make align-deps``, ``apt-get install libdlib-data``).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import align  # noqa: E402

PHOTOS = os.path.join(os.path.dirname(__file__), '..', 'tests', 'photos')
FACES = ('astronaut.jpg', 'grace_hopper.jpg')


def cpu_line():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    except OSError:
        return 'lscpu not available'
    model = next((ln.split(':', 1)[1].strip() for ln in out.splitlines()
                  if ln.startswith('Model name')), '?')
    flags = next((ln for ln in out.splitlines() if ln.startswith('Flags')),
                 '')
    return (f'{model}; {os.cpu_count()} CPUs; avx512_bf16: '
            f'{"avx512_bf16" in flags}; amx: {"amx_tile" in flags}')


def folder_rate(detector, src, jobs):
    """(photos per second, CPU seconds per photo) of align_folder."""
    out = tempfile.mkdtemp()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        written, problems = align.align_folder(src, out, detector,
                                               jobs=jobs)
        took = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        shutil.rmtree(out)
    assert not problems, problems
    return len(written) / took, cpu / len(written)


def split(detector, name):
    img = Image.open(os.path.join(PHOTOS, name)).convert('RGB')
    t0 = time.perf_counter()
    face = align.main_face_first(detector(np.asarray(img)))[0]
    t1 = time.perf_counter()
    full = align.align_image(img, face.landmarks, 256)
    t2 = time.perf_counter()
    small = align.align_image(img, face.landmarks, 256, transform_size=1024)
    t3 = time.perf_counter()
    d = np.abs(np.float32(full) - np.float32(small))
    print(f'{name}: detect+landmarks {t1 - t0:.3f} s, align 4096 px '
          f'{t2 - t1:.3f} s, align 1024 px {t3 - t2:.3f} s (pixels differ '
          f'by {d.mean():.2f} on average, at most {d.max():.0f} of 255)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--copies', type=int, default=4)
    p.add_argument('--jobs', type=int, nargs='+', default=[1, 2])
    args = p.parse_args(argv)
    print(cpu_line())
    print(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    detector = align.DlibLandmarks()
    src = tempfile.mkdtemp()
    try:
        for name in FACES:
            for i in range(args.copies):
                shutil.copy(os.path.join(PHOTOS, name),
                            os.path.join(src, f'{i}_{name}'))
        n = len(os.listdir(src))
        rates = {j: [] for j in args.jobs}
        for _ in range(2):
            for j in args.jobs:
                rates[j].append(folder_rate(detector, src, j))
        for j in args.jobs:
            print(f'--jobs {j}: {max(r for r, _ in rates[j]):.2f} photos/s '
                  f'({n} photos; runs: '
                  + ', '.join(f'{r:.2f} photos/s, {c:.2f} CPU s/photo'
                              for r, c in rates[j]) + ')')
    finally:
        shutil.rmtree(src)
    for name in FACES:
        split(detector, name)


if __name__ == '__main__':
    main()
