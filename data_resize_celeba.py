"""Convert CelebA (``img_align_celeba``) into the LMDB that ``CelebAlmdb``
reads.

    python data_resize_celeba.py --in datasets/celeba \\
        --out datasets/celeba.lmdb

Official format: the original 178x218 images, not resized (``--size
none``), WebP quality 100, keys ``None-0000000`` ... in sorted file-name
order (only the folder itself, no subfolders), plus ``length``. Read it
with ``CelebAlmdb(path, image_size, original_resolution=None,
crop_d2c=True)`` (what ``data_name='celebalmdb'`` does).
"""
from lmdb_writer import resize_main


def main(argv=None):
    return resize_main(
        argv, description=__doc__, default_in='datasets/celeba',
        default_out='datasets/celeba.lmdb', default_size=None, zfill=7,
        format='webp', quality=100, order='sorted', exts=('jpg', ),
        has_subdir=False,
        reader="CelebAlmdb('{path}', image_size=64, "
        "original_resolution={size}, crop_d2c=True)")


if __name__ == '__main__':
    main()
