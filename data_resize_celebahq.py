"""Convert CelebA-HQ images into the LMDB that ``CelebHQlmdb`` and
``CelebHQAttrDataset`` read.

    python data_resize_celebahq.py --in datasets/celebahq \\
        --out datasets/celebahq256.lmdb

Official format: each image resized (Lanczos) and center-cropped to 256,
JPEG quality 100, key ``256-<file number, 5 digits>`` (``42.jpg`` ->
``256-00042``, the number the attribute file uses), plus ``length``.
"""
from lmdb_writer import resize_main


def main(argv=None):
    return resize_main(
        argv, description=__doc__, default_in='datasets/celebahq',
        default_out='datasets/celebahq256.lmdb', default_size=256, zfill=5,
        format='jpeg', quality=100, order='index',
        exts=('jpg', 'jpeg', 'png'),
        reader="CelebHQlmdb('{path}', image_size=..., "
        "original_resolution={size})")


if __name__ == '__main__':
    main()
