"""How much fine detail the best possible x_0 estimate keeps at each t:
the measurement behind the perceptual loss term's cut over timesteps
(conf.lpips_loss_t_max, docs/perceptual_loss.md).

    python bench/x0_blur.py --data shapes --images 3000

The MSE objective drives the decoder's x_0 estimate towards the posterior
mean E[x_0 | x_t], which at high noise is blurry whatever the network. The
script uses the best *linear* estimate of that mean, computed exactly from
the data's covariance (x0_hat = mu + S a (a^2 S + (1 - a^2) I)^-1 (x_t - a
mu), a^2 = abar_t, official linear schedule), on held-out images of the
demo data, and prints per t: the MSE of x0_hat, and the fraction of the
clean images' energy above a spatial frequency (``--cutoff`` cycles/pixel,
default half of Nyquist) that x0_hat still has ('detail_kept'; 1: as
sharp as the data) and the part of it that is the image's own
('detail_right' = 1 - high-frequency energy of x0_hat - x_0 over that of
x_0: detail shared by all images, e.g. a texture, is kept but is not the
image's). Near 0 the detail a perceptual distance asks for is gone, so
LPIPS there mostly pulls against the MSE. No model, no weights.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import scenes_data  # noqa: E402
import shapes_data  # noqa: E402
from diffusion.schedules import get_named_beta_schedule  # noqa: E402

TIMESTEPS = (10, 50, 100, 150, 200, 300, 400, 500, 700, 900)


def images(data: str, n: int, seed: int) -> np.ndarray:
    """(n, 3, 32, 32) float64 images of the demo data in [-1, 1] (rendered
    at 64x64, 2x2-averaged to the demo templates' 32x32)."""
    if data == 'shapes':
        a = shapes_data.sample_shape_attributes(n, seed=seed)
        imgs = [shapes_data.render_shape(a['shape'][i], a['color'][i],
                                         a['background'][i], a['size'][i],
                                         a['x'][i], a['y'][i])
                for i in range(n)]
    else:
        a = scenes_data.sample_scene_attributes(n, seed=seed)
        imgs = [scenes_data.render_scene(
            a['sky'][i], a['ground'][i], a['horizon'][i], a['sun'][i],
            a['sun_x'][i], a['sun_y'][i], a['texture_seed'][i])
            for i in range(n)]
    x = np.stack(imgs).astype(np.float64).transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return x / 127.5 - 1


def high_freq_energy(x: np.ndarray, cutoff: float) -> float:
    """Mean energy of ``x`` (N, C, H, W) above ``cutoff`` cycles/pixel."""
    f = np.fft.fftfreq(x.shape[-1])
    radius = np.sqrt(f[:, None]**2 + f[None, :]**2)
    spec = np.abs(np.fft.fft2(x))**2
    return float(spec[..., radius > cutoff].mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', choices=['shapes', 'scenes'], default='shapes')
    p.add_argument('--images', type=int, default=3000,
                   help='images to estimate the covariance from')
    p.add_argument('--heldout', type=int, default=300)
    p.add_argument('--cutoff', type=float, default=0.25)
    args = p.parse_args(argv)
    start = time.time()
    train = images(args.data, args.images, seed=0).reshape(args.images, -1)
    test = images(args.data, args.heldout, seed=1)
    mu = train.mean(0)
    lam, vec = np.linalg.eigh(np.cov(train, rowvar=False))
    lam = np.clip(lam, 0, None)
    abar = np.cumprod(1 - get_named_beta_schedule('linear', 1000))
    rng = np.random.default_rng(2)
    x0 = test.reshape(args.heldout, -1)
    eps = rng.standard_normal(x0.shape)
    hf_clean = high_freq_energy(test, args.cutoff)
    print(json.dumps({'data': args.data, 'images': args.images,
                      'heldout': args.heldout, 'cutoff': args.cutoff,
                      'date': time.strftime('%Y-%m-%d %H:%M UTC',
                                            time.gmtime()),
                      'command': 'python bench/x0_blur.py ' +
                      ' '.join(sys.argv[1:] if argv is None else argv)}))
    for t in TIMESTEPS:
        a, s2 = np.sqrt(abar[t]), 1 - abar[t]
        x_t = a * x0 + np.sqrt(s2) * eps
        gain = a * lam / (abar[t] * lam + s2)
        x0_hat = mu + ((x_t - a * mu) @ vec) * gain @ vec.T
        hf = high_freq_energy(x0_hat.reshape(test.shape), args.cutoff)
        hf_err = high_freq_energy((x0_hat - x0).reshape(test.shape),
                                  args.cutoff)
        print(json.dumps({
            't': t, 'snr': round(float(abar[t] / s2), 4),
            'mse_x0_hat': round(float(((x0_hat - x0)**2).mean()), 5),
            'detail_kept': round(hf / hf_clean, 3),
            'detail_right': round(1 - hf_err / hf_clean, 3)}))
    print(json.dumps({'seconds': round(time.time() - start, 1)}))


if __name__ == '__main__':
    main()
