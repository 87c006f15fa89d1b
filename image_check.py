"""Every image of a folder checked before the first training step: a run
never dies hours in on a file that could have been found up front.

``check_images`` opens every file cheaply (PNG: ``verify()``, which reads
every chunk and its CRC; JPEG: decoded in draft mode at 1/8 scale; other
formats: decoded), in threads, with a progress bar on large folders. The
verdicts are cached by (path, size, mtime), so the next run of the same
folder is served from the cache. ``apply_policy`` then stops with the
list of bad files (``conf.bad_images='error'``) or leaves them out
(``'skip'``: one warning with the count, the list written to the run
folder).
"""
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from checkpoint_io import atomic_write
from dataset_util import CorruptImageError

POLICIES = ('error', 'skip')
# folders this large get a progress bar
PROGRESS_FROM = 1000


class BadImagesError(CorruptImageError, ValueError):
    """Files of an image folder that cannot be decoded (all listed)."""


def cache_dir() -> str:
    return os.environ.get('DIFFAE_CACHE_DIR', os.path.join(
        os.path.expanduser('~'), '.cache', 'diffae'))


def _cache_file(folder: str) -> str:
    h = hashlib.sha1(os.path.abspath(folder).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), 'image_check', f'{h}.json')


def check_file(path: str) -> Optional[str]:
    """None when ``path`` decodes, else why not."""
    try:
        if os.path.getsize(path) == 0:
            return 'empty file (0 bytes)'
        with Image.open(path) as img:
            fmt = img.format
            if img.size[0] < 1 or img.size[1] < 1:
                return f'no pixels (size {img.size})'
            if fmt == 'PNG':
                img.verify()
                return None
            if fmt == 'JPEG':
                img.draft('RGB', (max(1, img.size[0] // 8),
                                  max(1, img.size[1] // 8)))
            img.load()
        return None
    except Exception as e:
        return f'{type(e).__name__}: {e}'


def check_images(folder: str, rels: Sequence[str], workers: int = None,
                 progress: Optional[bool] = None,
                 use_cache: bool = True) -> Tuple[Dict[str, str], dict]:
    """({relative path: why it cannot be decoded}, stats) for the files
    ``rels`` of ``folder``. stats: checked (decoded now), cached (served
    from the cache)."""
    from tqdm import tqdm
    cache_path = _cache_file(folder)
    cache = {}
    if use_cache and os.path.exists(cache_path):
        try:
            with open(cache_path) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            cache = {}
    stamps, todo, bad = {}, [], {}
    for r in rels:
        st = os.stat(os.path.join(folder, r))
        stamps[r] = [st.st_size, st.st_mtime_ns]
        hit = cache.get(str(r))
        if hit is not None and hit[:2] == stamps[r]:
            if hit[2] is not None:
                bad[r] = hit[2]
        else:
            todo.append(r)
    if todo:
        workers = workers or min(8, (os.cpu_count() or 1) * 2)
        show = len(todo) >= PROGRESS_FROM if progress is None else progress
        with ThreadPoolExecutor(workers) as pool:
            verdicts = list(tqdm(
                pool.map(lambda r: check_file(os.path.join(folder, r)),
                         todo),
                total=len(todo), disable=not show,
                desc=f'checking images in {folder}'))
        for r, why in zip(todo, verdicts):
            cache[str(r)] = stamps[r] + [why]
            if why is not None:
                bad[r] = why
        if use_cache:
            _write_cache(cache_path, cache)
    return bad, {'checked': len(todo), 'cached': len(rels) - len(todo)}


def _write_cache(path, cache):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: json.dump(cache, f), binary=False)
    except OSError as e:      # a read-only home: check again next time
        warnings.warn(f'could not write the image-check cache {path}: {e}')


def describe(folder: str, bad: Dict[str, str], total: int,
             limit: int = 50) -> str:
    lines = [f'  {os.path.join(folder, r)}: {why}'
             for r, why in sorted(bad.items(), key=lambda x: str(x[0]))]
    if len(lines) > limit:
        lines = lines[:limit] + [f'  ... and {len(lines) - limit} more']
    return (f'{len(bad)} of {total} image files in {folder} cannot be '
            'decoded:\n' + '\n'.join(lines))


def filter_paths(folder: str, rels: List[str], policy: str = 'error',
                 report_dir: Optional[str] = None,
                 setting: str = "conf.bad_images",
                 nothing: str = 'Nothing was trained.') -> List[str]:
    """``rels`` without the undecodable files. policy 'error': raise
    BadImagesError listing all of them (before any work); 'skip': leave
    them out with one warning and write their list to
    ``<report_dir>/bad_images.txt``."""
    if policy not in POLICIES:
        raise ValueError(f'{setting}={policy!r}: use one of {POLICIES}')
    bad, _ = check_images(folder, rels)
    if not bad:
        return list(rels)
    text = describe(folder, bad, len(rels))
    if policy == 'error':
        raise BadImagesError(
            f'{text}\n{nothing} Fix or remove these files, or '
            f"set {setting}='skip' to leave them out.")
    kept = [r for r in rels if r not in bad]
    where = ''
    if report_dir is not None:
        os.makedirs(report_dir, exist_ok=True)
        listing = os.path.join(report_dir, 'bad_images.txt')
        with open(listing, 'w') as f:
            f.write(''.join(f'{os.path.join(folder, r)}\t{why}\n'
                            for r, why in sorted(bad.items(),
                                                 key=lambda x: str(x[0]))))
        where = f'; the list is in {listing}'
    warnings.warn(f'{setting}=\'skip\': leaving out {len(bad)} undecodable '
                  f'image file(s) of {len(rels)} in {folder}; using the other '
                  f'{len(kept)}{where}')
    return kept


def apply_policy(dataset, policy: str = 'error',
                 report_dir: Optional[str] = None):
    """Check an ImageDataset's files (see filter_paths); returns it with
    the bad files left out ('skip')."""
    dataset.paths = filter_paths(dataset.folder, dataset.paths, policy,
                                 report_dir)
    return dataset
