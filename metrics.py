"""Evaluation metrics of DiffAE: FID (generation quality) and the
reconstruction scores LPIPS, MSE, SSIM and PSNR.

Faithful to the official ``metrics.py``, except that nothing is written as
PNG files: images go straight from the sampler to the feature networks.
Images are quantised to 8 bits on the way, exactly as the official
PNG round trip does, so the numbers match the official pipeline.

The feature networks are never downloaded. Their weights are read from
local files; see ``find_weights`` for where they are looked for:

* FID: the TF-ported Inception of ``pytorch-fid``
  (``pt_inception-2015-12-05-6726825d.pth``): argument ``path``,
  ``conf.fid_weights_path``, env ``DIFFAE_FID_WEIGHTS``, ``checkpoints/``,
  torch hub's ``checkpoints/`` cache.
* LPIPS (alex): torchvision's AlexNet (``alexnet-owt-7be5be79.pth``):
  argument ``path``, env ``DIFFAE_ALEXNET_WEIGHTS``, ``checkpoints/``,
  torch hub's cache. LPIPS' own linear layers ship inside the ``lpips``
  package (``lpips/weights/v0.1/alex.pth``).

The loops that render the images and feed them to these networks
(``evaluate_fid``, ``evaluate_lpips``) live in ``evaluation.py`` beside the
eval programs; they stay importable from here. Under
``torch.distributed`` every rank renders its share of the images and the
results are gathered; a single process needs no process group.
"""
import os
import warnings
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from config import TrainConfig
from dataset import SubsetDataset
from dist_utils import all_gather_rows, get_rank, get_world_size

FID_WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/'
                   'download/fid_weights/' + FID_WEIGHTS_FILE)
FID_WEIGHTS_ENV = 'DIFFAE_FID_WEIGHTS'
ALEXNET_WEIGHTS_FILE = 'alexnet-owt-7be5be79.pth'
ALEXNET_WEIGHTS_URL = ('https://download.pytorch.org/models/' +
                       ALEXNET_WEIGHTS_FILE)
ALEXNET_WEIGHTS_ENV = 'DIFFAE_ALEXNET_WEIGHTS'

__all__ = [
    'ALEXNET_WEIGHTS_FILE', 'ALEXNET_WEIGHTS_URL', 'FIDInceptionV3',
    'FID_WEIGHTS_FILE', 'FID_WEIGHTS_URL', 'WeightsNotFoundError',
    'activation_statistics', 'all_gather_rows', 'calculate_frechet_distance',
    'evaluate_fid', 'evaluate_lpips',  # noqa: F822 (see __getattr__)
    'extract_features', 'find_weights', 'first_items', 'image_batches',
    'rank_share',
    'fid_from_features', 'load_fid_inception', 'load_lpips', 'mse', 'psnr',
    'real_statistics', 'reconstruction_scores', 'ssim', 'to_unit_range',
]


# ----------------------------------------------------------------------
# weight files
# ----------------------------------------------------------------------
class WeightsNotFoundError(FileNotFoundError):
    """A pretrained feature network's weight file is not on disk."""


def find_weights(filename: str, url: str, path: Optional[str] = None,
                 env: Optional[str] = None, setting: str = '') -> str:
    """The local path of the weight file ``filename``.

    An explicit ``path`` (argument or config setting) must exist. Without
    one, the env variable ``env`` is used, else ``checkpoints/<filename>``
    or torch hub's download cache. Raises WeightsNotFoundError naming the
    file, where to download it and where to put it."""
    if path is None and env:
        path = os.environ.get(env) or None
    candidates = [path] if path is not None else [
        os.path.join('checkpoints', filename),
        os.path.join(torch.hub.get_dir(), 'checkpoints', filename),
    ]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    settings = ' or '.join(s for s in (setting, env and f'env {env}') if s)
    where = os.path.abspath(candidates[0])
    hint = f', or point {settings} at the file' if settings else ''
    raise WeightsNotFoundError(
        f'weights {filename} not found (looked at: {", ".join(candidates)}).'
        f' metrics.py never downloads: fetch {url} and put it at {where}'
        + hint)


def missing_weights(conf: TrainConfig) -> str:
    """'' when the FID (and LPIPS) weight files of ``conf`` are on disk,
    else the error message that says how to install them."""
    try:
        find_weights(FID_WEIGHTS_FILE, FID_WEIGHTS_URL, conf.fid_weights_path,
                     FID_WEIGHTS_ENV, 'conf.fid_weights_path')
        if conf.model_type is not None and conf.model_type.has_autoenc():
            find_weights(ALEXNET_WEIGHTS_FILE, ALEXNET_WEIGHTS_URL,
                         conf.alexnet_weights_path, ALEXNET_WEIGHTS_ENV,
                         'conf.alexnet_weights_path')
    except WeightsNotFoundError as e:
        return str(e)
    return ''


# ----------------------------------------------------------------------
# FID: the Inception network
# ----------------------------------------------------------------------
def _fid_inception_net() -> nn.Module:
    """torchvision's Inception-v3 with pytorch-fid's TF-compatible blocks
    (the architecture of ``pytorch_fid.inception.fid_inception_v3``),
    randomly initialised and without downloading anything."""
    import torchvision
    from pytorch_fid.inception import (FIDInceptionA, FIDInceptionC,
                                       FIDInceptionE_1, FIDInceptionE_2)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                          num_classes=1008,
                                          init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInceptionV3(nn.Module):
    """The pool3 (2048-d) features of the FID Inception network, like
    ``pytorch_fid.inception.InceptionV3([3])``: input (N, 3, H, W) in
    [0, 1], resized to 299x299 (bilinear) and scaled to [-1, 1]."""

    def __init__(self, net: nn.Module, cache_tag: str):
        super().__init__()
        # statistics cached on disk are only reused with the same network
        self.cache_tag = cache_tag
        self.blocks = nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
            nn.MaxPool2d(kernel_size=3, stride=2),
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3,
            nn.MaxPool2d(kernel_size=3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
            net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
            net.Mixed_7a, net.Mixed_7b, net.Mixed_7c,
            nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode='bilinear',
                          align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


def load_fid_inception(path: Optional[str] = None,
                       conf: Optional[TrainConfig] = None,
                       random_init: bool = False,
                       device=None) -> FIDInceptionV3:
    """The FID Inception network with the pytorch-fid weights read from a
    local file (``path``, else ``conf.fid_weights_path``, else see
    ``find_weights``). ``random_init`` skips the weights: a stand-in for
    tests, whose FIDs mean nothing."""
    net = _fid_inception_net()
    if random_init:
        tag = 'random-init'
    else:
        if path is None and conf is not None:
            path = conf.fid_weights_path
        path = find_weights(FID_WEIGHTS_FILE, FID_WEIGHTS_URL, path,
                            FID_WEIGHTS_ENV, 'conf.fid_weights_path')
        state = torch.load(path, map_location='cpu', weights_only=True)
        net.load_state_dict(state)
        tag = FID_WEIGHTS_FILE
    return FIDInceptionV3(net, tag).to(device)


# ----------------------------------------------------------------------
# FID: features and statistics
# ----------------------------------------------------------------------
def to_unit_range(imgs: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1], rounded to 8 bits the way
    ``torchvision.utils.save_image`` writes the official PNG files."""
    x = ((imgs + 1) / 2).mul(255).add(0.5).clamp(0, 255).floor()
    return x / 255


def _device_of(module: nn.Module, default='cpu'):
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device(default)


@torch.no_grad()
def extract_features(extractor: nn.Module, imgs: torch.Tensor,
                     batch_size: int = 50) -> torch.Tensor:
    """(N, D) features of images (N, 3, H, W) in [0, 1], in batches, on
    the extractor's device. Spatial outputs are average-pooled, as
    pytorch-fid does for its smaller blocks."""
    extractor.eval()
    device = _device_of(extractor)
    out = []
    for i in range(0, len(imgs), batch_size):
        f = extractor(imgs[i:i + batch_size].to(device))
        if isinstance(f, (list, tuple)):  # pytorch_fid's InceptionV3
            f = f[0]
        if f.dim() == 4:
            f = F.adaptive_avg_pool2d(f, 1)
        out.append(f.flatten(1).float())
    return torch.cat(out)


def activation_statistics(features) -> tuple:
    """(mu, sigma): mean and covariance of (N, D) features (float64)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    act = np.asarray(features, dtype=np.float64)
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2,
                               eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).

    The same numerics as pytorch-fid: if the product's square root is not
    finite, ``eps`` is added to both diagonals; a small imaginary part
    from numerical error is dropped, a large one is an error."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape, 'mean vectors of different lengths'
    assert sigma1.shape == sigma2.shape, 'covariances of different sizes'
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        warnings.warn(f'FID: singular product of covariances; adding {eps} '
                      'to their diagonals')
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError('FID: imaginary component '
                             f'{np.max(np.abs(covmean.imag))}')
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * np.trace(covmean))


def fid_from_features(features1, features2) -> float:
    """FID between two sets of (N, D) features."""
    return calculate_frechet_distance(*activation_statistics(features1),
                                      *activation_statistics(features2))


# ----------------------------------------------------------------------
# data helpers
# ----------------------------------------------------------------------
def first_items(dataset: Dataset, n: int, what: str) -> SubsetDataset:
    """The first ``n`` items, as the official code evaluates on."""
    if len(dataset) < n:
        raise ValueError(f'{what} has {len(dataset)} images, fewer than '
                         f'conf.eval_num_images = {n}')
    return SubsetDataset(dataset, n)


def image_batches(conf: TrainConfig, dataset: Dataset, batch_size: int,
                  desc: str) -> Iterator[torch.Tensor]:
    """The 'img' tensors of ``dataset`` in order, in batches."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=conf.num_workers,
                        pin_memory=torch.cuda.is_available())
    for batch in tqdm(loader, desc=desc, disable=get_rank() != 0):
        yield batch['img']


def rank_share(n: int, seed: Optional[int] = None) -> List[int]:
    """This rank's indices of range(n): every world_size-th one (of a
    permutation seeded alike on all ranks when ``seed`` is given)."""
    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed))
             if seed is not None else torch.arange(n))
    return order[get_rank()::get_world_size()].tolist()


# ----------------------------------------------------------------------
# FID: evaluation
# ----------------------------------------------------------------------
def real_statistics(conf: TrainConfig, val_data: Dataset,
                    extractor: nn.Module, use_cache: bool = True) -> tuple:
    """(mu, sigma) of the first ``conf.eval_num_images`` validation images,
    cached in ``conf.fid_cache + '.npz'``; the cache is recomputed when the
    data name, image size, count or feature network differ."""
    n = conf.eval_num_images
    key = {'data_name': str(conf.data_val_name), 'img_size': conf.img_size,
           'count': n,
           'extractor': getattr(extractor, 'cache_tag',
                                type(extractor).__name__)}
    path = conf.fid_cache + '.npz'
    if use_cache and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                if all(f[k].item() == v for k, v in key.items()):
                    return f['mu'], f['sigma']
        except (OSError, KeyError, ValueError):
            pass  # unreadable or old cache: recompute
    real = first_items(val_data, n, 'val_data')
    feats = [extract_features(extractor, to_unit_range(imgs),
                              len(imgs)).cpu()
             for imgs in image_batches(conf, real, conf.batch_size_eval,
                                       'FID real stats')]
    mu, sigma = activation_statistics(torch.cat(feats))
    if use_cache:
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'wb') as f:
            np.savez(f, mu=mu, sigma=sigma, **key)
        os.replace(tmp, path)
    return mu, sigma


# ----------------------------------------------------------------------
# reconstruction scores
# ----------------------------------------------------------------------
def _gaussian_window(window_size: int, channels: int,
                     sigma: float = 1.5) -> torch.Tensor:
    """(channels, 1, k, k) normalised 2-d Gaussian for a grouped conv."""
    x = torch.arange(window_size, dtype=torch.float64) - window_size // 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = (g / g.sum()).float()
    return torch.outer(g, g).expand(channels, 1, window_size,
                                    window_size).contiguous()


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11,
         size_average: bool = True) -> torch.Tensor:
    """SSIM of (N, C, H, W) images in [0, 1] (Gaussian window, sigma 1.5,
    zero padding; the official formula). A scalar mean, or (N, ) per image
    when ``size_average`` is False."""
    channels = img1.shape[1]
    window = _gaussian_window(window_size, channels).to(img1)

    def blur(x):
        return F.conv2d(x, window, padding=window_size // 2, groups=channels)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu12
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu12 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    if size_average:
        return ssim_map.mean()
    return ssim_map.mean(dim=(1, 2, 3))


def mse(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """(N, ) mean squared error per image."""
    return (img1 - img2).pow(2).mean(dim=(1, 2, 3))


def psnr(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """(N, ) PSNR in dB of images in [0, 1] (inf for identical images)."""
    v_max = 1.
    return 20 * torch.log10(v_max / torch.sqrt(mse(img1, img2)))


def load_lpips(path: Optional[str] = None, random_init: bool = False,
               device=None) -> nn.Module:
    """``lpips.LPIPS(net='alex')`` without any download: the AlexNet trunk
    is read from a local torchvision file (``path``, else see
    ``find_weights``), the linear layers from the lpips package.
    ``random_init`` leaves the trunk random (a stand-in for tests)."""
    import lpips
    with warnings.catch_warnings():
        # lpips asks torchvision with the deprecated ``pretrained`` flag
        warnings.simplefilter('ignore', UserWarning)
        fn = lpips.LPIPS(net='alex', pretrained=True, pnet_rand=True,
                         verbose=False)
    if not random_init:
        path = find_weights(ALEXNET_WEIGHTS_FILE, ALEXNET_WEIGHTS_URL, path,
                            ALEXNET_WEIGHTS_ENV)
        state = torch.load(path, map_location='cpu', weights_only=True)
        _load_alexnet_features(fn.net, state)
    return fn.eval().requires_grad_(False).to(device)


def _load_alexnet_features(trunk: nn.Module, state: Dict[str, torch.Tensor]):
    """Copy torchvision AlexNet ``features.<i>.*`` weights into lpips'
    trunk, whose parameters are ``slice<k>.<i>.*`` (same layer index)."""
    with torch.no_grad():
        for name, param in trunk.named_parameters():
            key = 'features.' + name.split('.', 1)[1]
            if key not in state or state[key].shape != param.shape:
                raise ValueError(f'not an AlexNet state dict: {key} missing '
                                 'or of another shape')
            param.copy_(state[key])


def reconstruction_scores(imgs: torch.Tensor, preds: torch.Tensor,
                          lpips_fn: nn.Module) -> Dict[str, torch.Tensor]:
    """(N, ) lpips, mse, ssim, psnr of reconstructions; inputs in [-1, 1]
    (lpips on [-1, 1], the others on [0, 1])."""
    a, b = (imgs + 1) / 2, (preds + 1) / 2
    return {
        'lpips': lpips_fn(imgs, preds).view(-1),
        'mse': mse(a, b),
        'ssim': ssim(a, b, size_average=False),
        'psnr': psnr(a, b),
    }


# the official metrics.py also held the evaluation loops (they render
# images, so they live in evaluation.py now): importable from here, loaded
# on first use (evaluation imports this module)
_MOVED = ('evaluate_fid', 'evaluate_lpips')


def __getattr__(name):
    if name in _MOVED:
        import evaluation
        return getattr(evaluation, name)
    raise AttributeError(f"module 'metrics' has no attribute '{name}'")
