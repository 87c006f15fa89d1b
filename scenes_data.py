"""The second built-in synthetic dataset: simple landscape scenes (a sky
gradient above a straight, horizontal horizon, textured ground below, and
a sun disc in half of them), with known attributes (sky, ground, horizon
height, sun and its position), generated deterministically into an LMDB in
the official format on first use; and the measurer that reads those
attributes back from rendered pixels. It follows ``shapes_data.py``."""
from typing import Dict, Sequence

import numpy as np
import torch

from choices import ManipulateMode
from generated_data import (GeneratedAttrDataset, GeneratedLMDBDataset,
                            read_generated_meta, register_demo,
                            write_generated_lmdb)

# sky: a vertical gradient from the top colour (darker, more saturated) to
# the horizon colour (lighter); the four differ clearly in mean colour
SCENE_SKIES = {
    'day': ((40, 100, 200), (150, 200, 240)),
    'dusk': ((170, 60, 110), (250, 170, 100)),
    'night': ((8, 12, 40), (35, 45, 90)),
    'overcast': ((115, 118, 125), (190, 190, 192)),
}
# ground: a flat colour plus low-amplitude per-pixel texture
SCENE_GROUNDS = {
    'grass': (60, 140, 50),
    'sand': (210, 180, 120),
    'snow': (232, 238, 250),
}
SUN_COLOR = (255, 240, 160)
# sun radius in image widths; its centre x is uniform in SUN_X_RANGE
SUN_RADIUS = 0.09
SUN_X_RANGE = (0.2, 0.8)
# horizon height as a fraction of the image height from the top, uniform
# in this range; 'high_horizon' is below the threshold (more ground)
HORIZON_RANGE = (0.35, 0.75)
HIGH_HORIZON_THRESHOLD = 0.55
SCENES_DEFAULT_COUNT = 4000
SCENES_RESOLUTION = 64
# ground texture: integer noise uniform in [-_TEXTURE, _TEXTURE] levels
_TEXTURE = 6
# the sun's disc stays this far (image heights) from the top and from the
# horizon
_SUN_MARGIN = 0.06
_SUPERSAMPLE = 4
_SCENES_FORMAT = 'diffae-scenes'

# the binary labels, like CelebA's: +1 / -1 each
SCENE_LABELS = (list(SCENE_SKIES) + list(SCENE_GROUNDS)
                + ['high_horizon', 'sun', 'sun_left'])


def render_scene(sky: str, ground: str, horizon: float, sun: bool,
                 sun_x: float = None, sun_y: float = None,
                 texture_seed: int = 0,
                 resolution: int = SCENES_RESOLUTION) -> np.ndarray:
    """One scenes image as (H, W, 3) uint8.

    The sky gradient runs from the top colour at the top edge to the
    horizon colour at ``horizon`` (fraction of the height from the top);
    the row holding the horizon is a coverage-weighted mix (anti-aliased).
    The ground is its colour plus integer noise in +-6 levels drawn from
    ``numpy.random.default_rng(texture_seed)``. With ``sun``, a disc of
    radius SUN_RADIUS centred at (``sun_x``, ``sun_y``) (image widths, y
    down), anti-aliased by 4x4 supersampling.
    """
    n = resolution
    top, low = (np.asarray(c, dtype=np.float64) for c in SCENE_SKIES[sky])
    v = (np.arange(n) + 0.5) / n
    sky_rows = top + (v / horizon)[:, None] * (low - top)
    ground_cover = np.clip(np.arange(n) + 1 - horizon * n, 0, 1)
    noise = np.random.default_rng(texture_seed).integers(
        -_TEXTURE, _TEXTURE + 1, (n, n, 1))
    ground = np.asarray(SCENE_GROUNDS[ground], dtype=np.float64) + noise
    cover = ground_cover[:, None, None]
    img = sky_rows[:, None, :] * (1 - cover) + ground * cover
    if sun:
        _paint_sun(img, sun_x, sun_y)
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8)


def _paint_sun(img: np.ndarray, x: float, y: float):
    """Blend the sun disc centred at (x, y) (image widths) into ``img``
    (float (H, W, 3)); only its bounding box is supersampled."""
    n = img.shape[0]
    s = n * _SUPERSAMPLE
    c0 = max(0, int(np.floor((x - SUN_RADIUS) * n)) - 1)
    c1 = min(n, int(np.ceil((x + SUN_RADIUS) * n)) + 1)
    r0 = max(0, int(np.floor((y - SUN_RADIUS) * n)) - 1)
    r1 = min(n, int(np.ceil((y + SUN_RADIUS) * n)) + 1)
    u = (np.arange(c0 * _SUPERSAMPLE, c1 * _SUPERSAMPLE) + 0.5) / s
    v = (np.arange(r0 * _SUPERSAMPLE, r1 * _SUPERSAMPLE) + 0.5) / s
    inside = (u[None, :] - x)**2 + (v[:, None] - y)**2 <= SUN_RADIUS**2
    cover = inside.reshape(r1 - r0, _SUPERSAMPLE, c1 - c0,
                           _SUPERSAMPLE).mean(axis=(1, 3))
    box = img[r0:r1, c0:c1]
    box += cover[..., None] * (np.asarray(SUN_COLOR, np.float64) - box)


def sample_scene_attributes(num_images: int, seed: int = 0) -> Dict:
    """The attributes of ``num_images`` scenes drawn from
    ``numpy.random.default_rng(seed)``: 'sky', 'ground' (names),
    'horizon' (float), 'sun' (bool; exactly ``num_images // 2`` have one),
    'sun_x', 'sun_y' (floats, None without a sun) and 'texture_seed'
    (int; see :func:`render_scene`)."""
    rng = np.random.default_rng(seed)
    sky = rng.integers(0, len(SCENE_SKIES), num_images)
    ground = rng.integers(0, len(SCENE_GROUNDS), num_images)
    horizon = rng.uniform(*HORIZON_RANGE, num_images)
    sun = rng.permutation(num_images) < num_images // 2
    sun_x = rng.uniform(*SUN_X_RANGE, num_images)
    sun_pos = rng.random(num_images)
    texture = rng.integers(0, 2**31 - 1, num_images)
    skies, grounds = list(SCENE_SKIES), list(SCENE_GROUNDS)
    keys = ('sky', 'ground', 'horizon', 'sun', 'sun_x', 'sun_y',
            'texture_seed')
    out = {k: [] for k in keys}
    for i in range(num_images):
        lo = SUN_RADIUS + _SUN_MARGIN
        hi = horizon[i] - SUN_RADIUS - _SUN_MARGIN
        out['sky'].append(skies[sky[i]])
        out['ground'].append(grounds[ground[i]])
        out['horizon'].append(float(horizon[i]))
        out['sun'].append(bool(sun[i]))
        out['sun_x'].append(float(sun_x[i]) if sun[i] else None)
        out['sun_y'].append(float(lo + sun_pos[i] * (hi - lo))
                            if sun[i] else None)
        out['texture_seed'].append(int(texture[i]))
    return out


def scene_labels(attributes: Dict) -> torch.Tensor:
    """(N, len(SCENE_LABELS)) int64 tensor of +1 / -1 from attribute
    records (as stored in the LMDB); 'sun_left' is -1 without a sun."""
    cols = []
    for name in SCENE_SKIES:
        cols.append([s == name for s in attributes['sky']])
    for name in SCENE_GROUNDS:
        cols.append([g == name for g in attributes['ground']])
    cols.append([h < HIGH_HORIZON_THRESHOLD for h in attributes['horizon']])
    cols.append(list(attributes['sun']))
    cols.append([bool(s) and x < 0.5
                 for s, x in zip(attributes['sun'], attributes['sun_x'])])
    on = torch.tensor(np.array(cols, dtype=bool).T.reshape(-1, len(cols)))
    return on.long() * 2 - 1


def make_scenes_lmdb(path, num_images: int = SCENES_DEFAULT_COUNT,
                     size: int = SCENES_RESOLUTION, seed: int = 0,
                     overwrite: bool = False) -> str:
    """Generate the scenes dataset as an LMDB at ``path``.

    Images are PNG (lossless) under ``f'{size}-{i:05d}'``, plus ``length``
    and ``attributes``: JSON with the generation settings and per-image
    records (``sky``, ``ground``, ``horizon``, ``sun``, ``sun_x``,
    ``sun_y``, ``texture_seed``). Same arguments -> identical bytes.
    FileExistsError if ``path`` exists (unless ``overwrite``).
    """
    attrs = sample_scene_attributes(num_images, seed)
    meta = {
        'format': _SCENES_FORMAT, 'version': 1, 'seed': seed,
        'num_images': num_images, 'resolution': size,
        'skies': SCENE_SKIES, 'grounds': SCENE_GROUNDS,
        'sun_color': SUN_COLOR, 'sun_radius': SUN_RADIUS,
        'sun_x_range': list(SUN_X_RANGE),
        'horizon_range': list(HORIZON_RANGE),
        'high_horizon_threshold': HIGH_HORIZON_THRESHOLD,
        'labels': SCENE_LABELS, 'records': attrs,
    }

    def render(i):
        return render_scene(attrs['sky'][i], attrs['ground'][i],
                            attrs['horizon'][i], attrs['sun'][i],
                            attrs['sun_x'][i], attrs['sun_y'][i],
                            attrs['texture_seed'][i], size)

    return write_generated_lmdb(path, meta, render, overwrite)


def read_scenes_meta(path) -> Dict:
    """The ``attributes`` record of a scenes LMDB."""
    return read_generated_meta(path, _SCENES_FORMAT, 'scenes')


class ScenesDataset(GeneratedLMDBDataset):
    """The second built-in synthetic dataset: landscape scenes.

    Generated on first use at ``path`` (a few seconds; see
    :func:`make_scenes_lmdb`) and read through the LMDB path like the real
    datasets. Sky: day / dusk / night / overcast gradients; ground: grass
    / sand / snow with a mild texture; a straight horizontal horizon at a
    height uniform in HORIZON_RANGE; a sun disc in half the images, its x
    uniform in SUN_X_RANGE. Stored at 64x64; Resize + CenterCrop to
    ``image_size``.

    ``num_images`` / ``seed`` (default 4000 / 0), ``.attributes`` and
    ``.meta``: see :class:`~generated_data.GeneratedLMDBDataset`.
    ``do_augment`` (horizontal flips) is off by default, since flipping
    breaks the 'sun_left' attribute.
    """

    name = 'scenes'
    default_count = SCENES_DEFAULT_COUNT
    default_path = 'datasets/scenes.lmdb'
    make_lmdb = staticmethod(make_scenes_lmdb)
    read_meta = staticmethod(read_scenes_meta)


class ScenesAttrDataset(ScenesDataset, GeneratedAttrDataset):
    """:class:`ScenesDataset` with binary labels in ``id_to_cls`` order
    (SCENE_LABELS; see :class:`~generated_data.GeneratedAttrDataset`)."""

    id_to_cls = SCENE_LABELS
    label_fn = staticmethod(scene_labels)


# ----------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------
# the sky prototype is its colour 15% of the way to the horizon (about
# what the median of the top eighth of the rows sees)
_SKY_PROTOTYPES = torch.tensor(
    [[t + 0.15 * (h - t) for t, h in zip(*SCENE_SKIES[s])]
     for s in SCENE_SKIES], dtype=torch.float32) / 255
_GROUND_PROTOTYPES = torch.tensor(list(SCENE_GROUNDS.values()),
                                  dtype=torch.float32) / 255
_SUN = torch.tensor(SUN_COLOR, dtype=torch.float32) / 255
# a sun is found when its measured area is above this fraction of the
# disc's; a pixel counts towards it from this sun coverage on
_SUN_AREA_THRESHOLD = 0.4
_SUN_PIXEL_COVER = 0.25


def _to_unit(images, value_range) -> torch.Tensor:
    """(N, 3, H, W) float tensor in [0, 1] (checked shape)."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f'images must be (N, 3, H, W), got '
                         f'{tuple(x.shape)}')
    lo, hi = value_range
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def _masked_line_fit(rows: torch.Tensor, mask: torch.Tensor):
    """Least-squares line through the (N, H, 3) row colours where the
    (N, H) mask is set: (intercept (N, 1, 3), slope (N, 1, 3)) per row
    index."""
    r = torch.arange(rows.shape[1], dtype=torch.float32).expand_as(mask)
    m = mask.float()
    n = m.sum(1).clamp(min=1)[:, None]
    sr = (m * r).sum(1)[:, None]
    srr = (m * r * r).sum(1)[:, None]
    sy = (m[..., None] * rows).sum(1)
    sry = (m[..., None] * r[..., None] * rows).sum(1)
    det = n * srr - sr * sr
    slope = torch.where(det > 0, (n * sry - sr * sy) / det.clamp(min=1e-6),
                        torch.zeros_like(sy))
    intercept = (sy - slope * sr) / n
    return intercept[:, None], slope[:, None]


def _measure_horizon(rows: torch.Tensor) -> torch.Tensor:
    """Horizon position in rows from the top (float, (N,)) from the (N, H,
    3) per-row median colours.

    The largest change between adjacent rows marks the horizon k; within
    ``w`` rows of it each row is a mix of sky (the line fitted through
    the sky rows above, from row 1) and ground (the mean of the rows
    below), and the horizon is k - w plus the rows' summed sky fractions
    (resizing blurs the edge but keeps those sums)."""
    n, h, _ = rows.shape
    w = max(3, h // 16)
    lo, hi = min(w + 3, h - 1), max(min(w + 3, h - 1) + 1, h - w)
    step = (rows[:, 1:] - rows[:, :-1]).norm(dim=2)
    k = step[:, lo - 1:hi - 1].argmax(1) + lo
    r = torch.arange(h).expand(n, h)
    kk = k[:, None]
    sky_a, sky_b = _masked_line_fit(rows, (r >= 1) & (r < kk - w))
    ground_mask = (r >= kk + w).float()[..., None]
    ground = (ground_mask * rows).sum(1) / ground_mask.sum(1).clamp(min=1)
    sky = sky_a + sky_b * r[..., None].float()
    d = ground[:, None] - sky
    t = ((rows - sky) * d).sum(2) / (d * d).sum(2).clamp(min=1e-6)
    window = (r >= kk - w) & (r < kk + w)
    sky_frac = torch.where(window, 1 - t.clamp(0, 1), torch.zeros_like(t))
    return (k - w).float() + sky_frac.sum(1)


def _measure_sun(x: torch.Tensor, rows: torch.Tensor,
                 horizon: torch.Tensor):
    """(area as a fraction of the sun disc's, centroid x in widths; 0.5
    without sun pixels) of the pixels closer to SUN_COLOR than their
    row's median, in the rows well above the horizon (row centre at
    least a pixel above it). A pixel's sun coverage is its colour's
    projection onto the segment from the row's colour to SUN_COLOR."""
    n, _, h, w = x.shape
    base = rows.permute(0, 2, 1)[..., None]  # (N, 3, H, 1)
    d = _SUN[None, :, None, None] - base
    cover = (((x - base) * d).sum(1)
             / (d * d).sum(1).clamp(min=1e-6))  # (N, H, W)
    centres = torch.arange(h, dtype=torch.float32) + 0.5
    sky = centres[None, :] < horizon[:, None] - 1.0
    cover = torch.where(sky[..., None] & (cover > _SUN_PIXEL_COVER),
                        cover.clamp(max=1), torch.zeros_like(cover))
    mass = cover.sum(dim=(1, 2))
    area = mass / (np.pi * (SUN_RADIUS * w)**2)
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    cx = torch.where(mass > 0,
                     (cover.sum(1) * cols).sum(1) / mass.clamp(min=1e-6),
                     torch.full_like(mass, 0.5))
    return area, cx


def _scene_label_scores(sky_rgb, ground_rgb, horizon, sun_area, sun_x):
    """(N, K) scores and +-1 labels of every SCENE_LABELS entry: one sky
    and one ground class (nearest prototype colour) per image, thresholds
    for the rest ('sun_left' is -1 where no sun was found)."""
    sky_scores = -torch.cdist(sky_rgb, _SKY_PROTOTYPES)
    ground_scores = -torch.cdist(ground_rgb, _GROUND_PROTOTYPES)
    sun_score = sun_area - _SUN_AREA_THRESHOLD
    left_score = torch.where(sun_score > 0, 0.5 - sun_x,
                             torch.full_like(sun_x, -1.0))
    scores = torch.cat([
        sky_scores, ground_scores,
        torch.stack([HIGH_HORIZON_THRESHOLD - horizon, sun_score,
                     left_score], dim=1)
    ], dim=1)
    labels = -torch.ones_like(scores, dtype=torch.long)
    ns, ng, n = len(SCENE_SKIES), len(SCENE_GROUNDS), len(horizon)
    labels[torch.arange(n), sky_scores.argmax(1)] = 1
    labels[torch.arange(n), ns + ground_scores.argmax(1)] = 1
    labels[:, ns + ng:] = torch.where(scores[:, ns + ng:] > 0, 1, -1)
    return scores, labels


def scene_attribute_scores(images, value_range: Sequence[float] = (-1, 1)
                           ) -> Dict[str, torch.Tensor]:
    """Measure the scenes attributes from pixels.

    Args:
        images: (N, 3, H, W) tensor (or array). ``value_range`` says what
            black and white are: (-1, 1) for dataset items and the
            diffusion's samples (default), (0, 1) for ``LitModel.render``.

    Returns float tensors of shape (N,) unless noted:

    - ``sky_rgb`` (N, 3): median colour of the top eighth of the rows;
    - ``ground_rgb`` (N, 3): median colour of the bottom eighth;
    - ``horizon``: horizon height, fraction of the height from the top
      (the largest change between adjacent per-row median colours,
      refined to a fraction of a row, see :func:`_measure_horizon`);
    - ``sun_area``: area of the pixels brighter towards SUN_COLOR than
      their row's sky, above the horizon, as a fraction of the sun disc's
      area (about 1 with a sun, 0 without);
    - ``sun_x``: their centroid x in image widths (0.5 when none);
    - ``sun``: bool, a sun was found (``sun_area`` > 0.4);
    - ``label_scores`` (N, K): one score per ``ScenesAttrDataset.id_to_cls``
      entry, larger = more of it (skies and grounds: -distance to the
      prototype colour, high_horizon: 0.55 - horizon, sun: sun_area -
      0.4, sun_left: 0.5 - sun_x with a sun, else -1);
    - ``labels`` (N, K) int64 +1 / -1: the predicted labels (one sky,
      one ground).
    """
    x = _to_unit(images, value_range)
    n, _, h, w = x.shape
    band = max(1, h // 8)
    sky_rgb = x[:, :, :band].flatten(2).median(dim=2).values
    ground_rgb = x[:, :, h - band:].flatten(2).median(dim=2).values
    rows = x.median(dim=3).values.permute(0, 2, 1)  # (N, H, 3)
    horizon_rows = _measure_horizon(rows)
    sun_area, sun_x = _measure_sun(x, rows, horizon_rows)
    horizon = horizon_rows / h
    scores, labels = _scene_label_scores(sky_rgb, ground_rgb, horizon,
                                         sun_area, sun_x)
    return {
        'sky_rgb': sky_rgb, 'ground_rgb': ground_rgb, 'horizon': horizon,
        'sun_area': sun_area, 'sun_x': sun_x,
        'sun': sun_area > _SUN_AREA_THRESHOLD,
        'label_scores': scores, 'labels': labels,
    }


def scene_attribute_classes(images, value_range: Sequence[float] = (-1, 1)
                            ) -> Dict[str, torch.Tensor]:
    """Per-image classes measured from pixels (see
    :func:`scene_attribute_scores`), each an (N,) int64 tensor: ``'sky'``
    (0..3, index into SCENE_SKIES), ``'ground'`` (0..2, index into
    SCENE_GROUNDS), ``'high_horizon'`` and ``'sun'`` (0 / 1)."""
    s = scene_attribute_scores(images, value_range)
    ns, ng = len(SCENE_SKIES), len(SCENE_GROUNDS)
    scores, labels = s['label_scores'], s['labels']
    ids = ScenesAttrDataset.cls_to_id
    return {
        'sky': scores[:, :ns].argmax(1),
        'ground': scores[:, ns:ns + ng].argmax(1),
        'high_horizon': (labels[:, ids['high_horizon']] == 1).long(),
        'sun': (labels[:, ids['sun']] == 1).long(),
    }


# (attribute of scene_attribute_classes, classifier label, target class):
# each sky, and the horizon height
SCENE_MANIPULATIONS = ([('sky', c, i) for i, c in enumerate(SCENE_SKIES)]
                       + [('high_horizon', 'high_horizon', 1)])
# data_name='scenes' and manipulate_mode=scenes_all (data_registry)
register_demo(ScenesDataset, ScenesAttrDataset, ManipulateMode.scenes_all)

__all__ = [
    'ScenesDataset', 'ScenesAttrDataset', 'make_scenes_lmdb',
    'render_scene', 'sample_scene_attributes', 'scene_labels',
    'scene_attribute_scores', 'scene_attribute_classes', 'read_scenes_meta',
    'SCENE_SKIES', 'SCENE_GROUNDS', 'SCENE_LABELS', 'SUN_COLOR',
    'SUN_RADIUS', 'SCENES_DEFAULT_COUNT', 'SCENE_MANIPULATIONS',
]
