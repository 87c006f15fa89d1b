"""Convert FFHQ images into the LMDB that ``FFHQlmdb`` reads.

    python data_resize_ffhq.py --in datasets/ffhq --out datasets/ffhq256.lmdb

Official format: each image resized (Lanczos) and center-cropped to 256,
JPEG quality 100, key ``256-<file number, 5 digits>`` (``00042.png`` ->
``256-00042``; the file numbers must be 0..N-1), plus ``length``.
"""
from lmdb_writer import resize_main


def main(argv=None):
    return resize_main(
        argv, description=__doc__, default_in='datasets/ffhq',
        default_out='datasets/ffhq256.lmdb', default_size=256, zfill=5,
        format='jpeg', quality=100, order='index',
        exts=('png', 'jpg', 'jpeg'),
        reader="FFHQlmdb('{path}', original_resolution={size})")


if __name__ == '__main__':
    main()
