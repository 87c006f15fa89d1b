"""Throughput of DiffAE's hot paths, float32 (the reference's computation)
against the fast path, in one run on one machine.

    python bench/train_step.py --template celeba64d2c_autoenc --batch 8

prints one JSON line per precision mode with: img/s of a training step
(forward, backward, grad clip, optimizer, EMA), of DDIM rendering and of
stochastic encoding at --T steps; the UNet forward's FLOPs, achieved
TFLOP/s and its fraction of a matmul peak measured in the same run; peak
memory. Timings are min / median / max over --repeats.

Modes:
  fp32   the reference's computation: eager float32, NCHW, einsum
         attention, per-key EMA loop, schedule coefficients copied from
         numpy at every step
  fast32 this project's float32 path: SDPA attention (same legacy head
         split), schedule coefficients cached on the device, fused foreach
         EMA, inference_mode for sampling, channels_last where it pays
         (hardware.prefers_channels_last)
  bf16   the same with bf16 autocast (GroupNorm and softmax stay float32
         inside)
  auto   what train() picks on this machine (conf.precision='auto') for
         the template: on a GPU fast16 when the template sets conf.fp16
         (the official ones do), else bf16 from sm80; on a CPU bf16 with
         native bf16 (AVX512_BF16/AMX), else fast32; the line names the
         choice and the CPU/GPU behind it
  fp16   (CUDA only) the reference's GPU computation: float16 autocast
         (conf.fp16) with the fp32 mode's einsum attention, NCHW, per-key
         EMA and numpy schedule copies (GradScaler-free timing)
  fast16 (CUDA only) the project's path with float16 autocast
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import hardware  # noqa: E402
import model.blocks as blocks  # noqa: E402
import templates_latent  # noqa: E402
from experiment import LitModel, ema_update  # noqa: E402


def legacy_attention(qkv, n_heads, new_order=False):
    """The reference's QKVAttentionLegacy (einsum, fp32 softmax)."""
    import math
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.einsum('bct,bcs->bts', q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum('bts,bcs->bct', w, v).reshape(bs, -1, length)


def reference_ema(source, target, decay):
    """The reference's EMA: a Python loop over state-dict keys."""
    src, tgt = source.state_dict(), target.state_dict()
    for key in src:
        tgt[key].data.copy_(tgt[key].data * decay + src[key].data *
                            (1 - decay))


def reference_extract(sampler):
    """Schedule lookups as the reference: numpy -> device every call."""
    def extract(name, t, x):
        arr = getattr(sampler, name)
        if name == 'timestep_map':
            arr = np.asarray(arr)
        v = torch.from_numpy(arr).to(device=t.device)[t].float()
        return v.reshape(-1, *([1] * (x.dim() - 1)))
    sampler._extract = extract
    real_scale = sampler._scale_timesteps

    def scale(t):
        torch.tensor(sampler.timestep_map, device=t.device)
        return real_scale(t)
    sampler._scale_timesteps = scale
    return sampler


_SDPA_ATTENTION = blocks.qkv_attention


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--template', default='celeba64d2c_autoenc',
                   help='template function name (templates*.py)')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--modes', default='fp32,auto',
                   help='comma-separated: fp32, fast32, bf16, auto, fp16 '
                   'and fast16 (CUDA)')
    p.add_argument('--T', type=int, default=10,
                   help='DDIM steps for render / encode')
    p.add_argument('--steps', type=int, default=3,
                   help='timed training steps per repeat')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--compile', action='store_true',
                   help='conf.compile in the fast modes: torch.compile of '
                   'the model for training and of the EMA model for '
                   'sampling (first-call times, compile included, are '
                   'reported as warmup_seconds)')
    p.add_argument('--compile-backend', default='inductor',
                   help='conf.compile_backend (inductor, aot_eager, ...)')
    p.add_argument('--no-peak', action='store_true',
                   help='skip the matmul peak measurement')
    p.add_argument('--channels-last', default='auto',
                   choices=('auto', 'on', 'off'),
                   help='memory format of the fast modes (auto: '
                   'hardware.prefers_channels_last)')
    p.add_argument('--skip', default='',
                   help='comma-separated parts to skip: train,render,encode')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available()
                   else 'cpu')
    p.add_argument('--threads', type=int, default=None)
    return p.parse_args(argv)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup):
    return timed_with_warmup(fn, device, repeats, warmup)[1]


def timed_with_warmup(fn, device, repeats, warmup):
    """(seconds of the warm-up calls, compiling included; times of the
    timed repeats)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return warm, times


def stats(times, items):
    """img/s (from the min/median/max time)."""
    return {
        'img_per_s_median': items / statistics.median(times),
        'img_per_s_min': items / max(times),
        'img_per_s_max': items / min(times),
        'seconds_median': statistics.median(times),
    }


def matmul_peak(device, dtype, n=4096, repeats=3):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = timed(lambda: a @ b, device, repeats, 1)
    return 2 * n**3 / min(times) / 1e12


def resolve_auto(device, fp16=False):
    """The mode train() would pick here for a template with conf.fp16 =
    ``fp16``, and why."""
    accelerator = 'gpu' if device.type == 'cuda' else 'cpu'
    precision, why = hardware.auto_precision(hardware.read_facts(
        accelerator), fp16)
    return {'bf16-mixed': 'bf16', '16-mixed': 'fast16',
            '32-true': 'fast32'}[precision], why


def autocast_ctx(mode, device):
    if mode == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if mode in ('fp16', 'fast16'):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def training_step(lit, model, opt, x, t, ctx, ema=ema_update,
                  perceptual=None):
    """One step as train() runs it: the loss under ``ctx`` (an autocast
    or null context), backward, grad-norm clip, Adam, then ``ema`` of
    lit.model into lit.ema_model. ``model`` is lit.model or its compiled
    form; ``perceptual`` the LPIPS net of the opt-in loss term (or None)."""
    with ctx:
        loss = lit.sampler.training_losses(
            model, x, t, perceptual=perceptual)['loss'].mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lit.model.parameters(), 1.0,
                                   foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema(lit.model, lit.ema_model, lit.conf.ema_decay)


def bench_mode(args, mode, device, conf=None):
    """One JSON-able result of ``mode``; ``conf`` (default: the
    template ``args.template``) is the model to time."""
    conf = (conf.clone() if conf is not None else
            getattr(templates_latent, args.template)())
    conf.batch_size = args.batch
    conf.latent_infer_path = None
    label, why = mode, None
    if mode == 'auto':
        mode, why = resolve_auto(device, conf.fp16)
    fast = mode not in ('fp32', 'fp16')
    # the sampler's own float16 autocast (conf.fp16, CUDA) only in the
    # float16 modes: fp32 is the reference's float32 computation
    conf.fp16 = mode in ('fp16', 'fast16')
    blocks.qkv_attention = (_SDPA_ATTENTION if fast else legacy_attention)
    ema = ema_update if fast else reference_ema
    # the project's conf.compile path (nn.Module.compile in place)
    conf.compile = bool(fast and args.compile)
    conf.compile_backend = args.compile_backend
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    lit = LitModel(conf).to(device)
    if not fast:
        reference_extract(lit.sampler)
    channels_last = fast and (
        args.channels_last == 'on' or args.channels_last == 'auto' and
        hardware.prefers_channels_last(device.type))
    memory_format = (torch.channels_last if channels_last
                     else torch.contiguous_format)
    lit.model.to(memory_format=memory_format)
    lit.ema_model.to(memory_format=memory_format)
    model = lit.model
    opt = torch.optim.Adam(lit.model.parameters(), lr=conf.lr)
    x = torch.randn(args.batch, 3, conf.img_size, conf.img_size,
                    device=device).contiguous(memory_format=memory_format)
    t = torch.randint(0, conf.T, (args.batch, ), device=device)
    facts = hardware.read_facts('gpu' if device.type == 'cuda' else 'cpu')
    out = {'template': conf.name or args.template, 'mode': label,
           'batch': args.batch,
           'device': facts.describe() + ('' if device.type == 'cuda' else
                                         f' ({torch.get_num_threads()} '
                                         'threads)'),
           'computes': mode, 'compile': conf.compile and
           conf.compile_backend, 'img_size': conf.img_size,
           'channels_last': memory_format == torch.channels_last}
    if why:
        out['auto_because'] = why
    skip = set(args.skip.split(','))

    def train_step():
        for _ in range(args.steps):
            training_step(lit, model, opt, x, t, autocast_ctx(mode, device),
                          ema)

    if 'train' not in skip:
        warm, times = timed_with_warmup(train_step, device, args.repeats,
                                        args.warmup)
        out['train'] = stats(times, args.batch * args.steps)
        out['train']['warmup_seconds'] = warm

    sampler = conf.make_diffusion_conf(args.T).make_sampler()
    if not fast:
        reference_extract(sampler)
    ema = lit.ema_model
    grad_ctx = torch.inference_mode if fast else torch.no_grad
    with grad_ctx():
        cond = ema.encoder(x) if conf.model_type.has_autoenc() else None

        def render():
            with autocast_ctx(mode, device):
                sampler.sample(ema, noise=x, cond=cond)

        def encode():
            with autocast_ctx(mode, device):
                sampler.ddim_reverse_sample_loop(ema, x,
                                                 model_kwargs={'cond': cond})

        if 'render' not in skip:
            warm, times = timed_with_warmup(render, device, args.repeats,
                                            args.warmup)
            out['render'] = stats(times, args.batch)
            out['render']['warmup_seconds'] = warm
        if 'encode' not in skip and conf.model_type.has_autoenc():
            out['encode'] = stats(
                timed(encode, device, args.repeats, args.warmup), args.batch)

        # one UNet forward: FLOPs and achieved throughput
        def forward(call=ema):
            with autocast_ctx(mode, device):
                call(x, t, cond=cond) if cond is not None else call(x, t)

        with FlopCounterMode(display=False) as fc:
            # .forward: the eager computation (a compiled module compiles
            # its __call__), the same FLOPs
            forward(ema.forward)
        flops = fc.get_total_flops()
        times = timed(forward, device, args.repeats, args.warmup)
    peak_dtype = {'fp32': torch.float32, 'fast32': torch.float32,
                  'bf16': torch.bfloat16, 'fp16': torch.float16,
                  'fast16': torch.float16}[mode]
    peak = None if args.no_peak else matmul_peak(device, peak_dtype)
    achieved = flops / min(times) / 1e12
    out['unet_forward'] = {
        'gflop': flops / 1e9,
        'seconds_min': min(times),
        'seconds_median': statistics.median(times),
        'tflops': achieved,
        'matmul_peak_tflops': peak,
        'fraction_of_peak': peak and achieved / peak,
    }
    if device.type == 'cuda':
        out['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
    else:
        out['peak_rss_gib'] = resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main(argv=None, conf=None):
    """Time every mode of ``--modes`` (on ``conf`` when given, else on
    ``--template``); prints and returns {mode: result}."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for mode in args.modes.split(','):
        if mode in ('fp16', 'fast16') and device.type != 'cuda':
            continue
        if mode not in ('fp32', 'fast32', 'bf16', 'fp16', 'fast16',
                        'auto'):
            raise SystemExit(f'unknown mode {mode!r} in --modes')
        results[mode] = bench_mode(args, mode, device, conf)
        print(json.dumps(results[mode]), flush=True)
    if 'fp32' in results and len(results) > 1:
        base = results['fp32']
        for mode, r in results.items():
            if mode == 'fp32':
                continue
            ratio = {k: r[k]['img_per_s_median'] / base[k]['img_per_s_median']
                     for k in ('train', 'render', 'encode')
                     if k in r and k in base}
            print(json.dumps({'speedup_vs_fp32': mode, **ratio}), flush=True)
    return results


if __name__ == '__main__':
    main()
