"""Convert LSUN bedroom into the LMDB that ``Bedroom_lmdb`` reads.

    python data_resize_bedroom.py --in datasets/bedroom_train_lmdb \\
        --out datasets/bedroom256.lmdb

``--in`` is LSUN's own LMDB (as downloaded; read in key order, like
torchvision's ``LSUNClass``) or a folder of images (sorted). Official
format: each image resized (Lanczos) and center-cropped to 256, WebP
quality 90, keys ``256-0000000`` ..., plus ``length``.
"""
from lmdb_writer import resize_main


def main(argv=None):
    return resize_main(
        argv, description=__doc__, default_in='datasets/bedroom_train_lmdb',
        default_out='datasets/bedroom256.lmdb', default_size=256, zfill=7,
        format='webp', quality=90, order='sorted',
        exts=('webp', 'jpg', 'jpeg', 'png'),
        reader="Bedroom_lmdb('{path}', original_resolution={size})")


if __name__ == '__main__':
    main()
