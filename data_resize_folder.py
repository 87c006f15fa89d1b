"""Convert any folder of images into a dataset LMDB.

    python data_resize_folder.py --in my_images --out datasets/mine.lmdb \\
        --size 128

Each image is converted to RGB, resized (Lanczos; shorter side to
``--size``) and center-cropped, encoded (``--format``, ``--quality``) and
stored under ``<size>-<index>`` keys (``--zfill`` digits), in sorted
file-name order (``--order index`` takes the index from numeric file
names), plus ``length``. Photos are turned upright by their EXIF
orientation first; extensions match in any case. With the defaults
(``--zfill 5``, key prefix = ``--size``) the result reads like FFHQ:
``--size 256`` gives what ``conf.data_name = 'ffhqlmdb256'`` reads (at any
``conf.img_size``). With ``--zfill 7`` it reads like the LSUN LMDBs
(``Horse_lmdb``, ``Bedroom_lmdb``). To train
on a folder without converting, use ``data_name='imagefolder'`` and
``conf.data_dir``.
"""
import argparse
import os

from lmdb_writer import folder_to_lmdb


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--in', dest='in_path', required=True,
                   help='folder of images (subfolders included)')
    p.add_argument('--out', required=True, help='output LMDB folder')
    p.add_argument('--size', type=lambda s: None if s.lower() == 'none'
                   else int(s), default=256,
                   help='output resolution ("none": keep the size)')
    p.add_argument('--workers', type=int,
                   default=min(8, os.cpu_count() or 1))
    p.add_argument('--prefix', default=None,
                   help='key prefix (default: the size)')
    p.add_argument('--zfill', type=int, default=5,
                   help='digits of the key index (5: the FFHQ / CelebA-HQ '
                   "readers, e.g. data_name='ffhqlmdb256'; 7: LSUN)")
    p.add_argument('--format', default='webp',
                   choices=['webp', 'jpeg', 'jpg', 'png'])
    p.add_argument('--quality', type=int, default=100)
    p.add_argument('--order', default='sorted', choices=['sorted', 'index'])
    p.add_argument('--exts', default='jpg,jpeg,png,webp',
                   help='file extensions, matched in any case')
    p.add_argument('--no-crop', action='store_true',
                   help='resize the shorter side only, no center crop')
    p.add_argument('--overwrite', action='store_true')
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--bad-images', default='error', choices=['error', 'skip'],
                   help='files that cannot be decoded (all are checked '
                   'first): stop and list them, or leave them out')
    args = p.parse_args(argv)
    count = folder_to_lmdb(
        args.in_path, args.out, size=args.size, key_prefix=args.prefix,
        zfill=args.zfill, format=args.format, quality=args.quality,
        exts=[e for e in args.exts.split(',') if e], order=args.order,
        crop=not args.no_crop, workers=args.workers,
        overwrite=args.overwrite, limit=args.limit,
        bad_images=args.bad_images)
    prefix = args.prefix if args.prefix is not None else args.size
    print(f"wrote {count} images to '{args.out}' (keys "
          f"'{prefix}-{str(0).zfill(args.zfill)}' ...)")
    return count


if __name__ == '__main__':
    main()
