"""Evaluation programs of ``train(conf, gpus, mode='eval')``, the
periodic evaluation during training, and the loops behind them that render
images into the metric networks (``evaluate_fid``, ``evaluate_lpips``; the
metrics themselves are in ``metrics.py``, what z_sem carries in
``zsem_probe.py``).

Grammar of ``conf.eval_programs`` entries (as the official code):

    infer              z_sem of the whole training set -> <logdir>/latent.pkl
    infer+render<T>    ... and its T-step reconstructions as an LMDB
    fid<T>             FID of T-step samples (autoencoders: of
                       reconstructions of train images from random x_T)
    fid(<T>,<T_lat>)   FID of samples through the latent DPM
    fidclip(<T>,<T_lat>)  ... with the latent noise clipped to [-1, 1]
    recon<T>           LPIPS/MSE/SSIM/PSNR of reconstructions, random x_T
    inv<T>             ... with x_T from DDIM inversion
"""
import json
import os
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

import checkpoint_io
import metrics
from config import TrainConfig, is_time
from diffusion import Sampler
from dist_utils import (all_gather_rows, broadcast, chunk_size, get_rank,
                        get_world_size)
from tensor_util import eval_mode
from lmdb_writer import LMDBImageWriter
from renderer import encode_stochastic, render_condition, render_uncondition
# moved to zsem_probe.py (CHANGELOG, code layout); still importable here
from zsem_probe import (auroc, auroc_columns, fit_ridge_probes,  # noqa: F401
                        linear_probe, manipulation_change_rate,
                        zsem_decoding_report)

GRAMMAR = ('infer | infer+render<T> | fid<T> | fid(<T>,<T_latent>) | '
           'fidclip(<T>,<T_latent>) | recon<T> | inv<T>   (T: integers, '
           "e.g. 'fid(10,10)', 'recon100')")

_PATTERNS = [
    ('infer', re.compile(r'infer')),
    ('infer+render', re.compile(r'infer\+render(\d+)')),
    ('fid', re.compile(r'fid(\d+)')),
    ('fid_latent', re.compile(r'fid\((\d+),\s*(\d+)\)')),
    ('fidclip', re.compile(r'fidclip\((\d+),\s*(\d+)\)')),
    ('recon', re.compile(r'recon(\d+)')),
    ('inv', re.compile(r'inv(\d+)')),
]


@dataclass(frozen=True)
class Program:
    kind: str
    T: Optional[int] = None
    T_latent: Optional[int] = None
    text: str = ''


def parse_program(text: str) -> Program:
    """One program string -> Program; a clear ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f'eval program must be a string, got {text!r}')
    s = text.strip()
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(s)
        if m:
            nums = [int(g) for g in m.groups()]
            if any(n <= 0 for n in nums):
                break
            return Program(kind=kind, T=nums[0] if nums else None,
                           T_latent=nums[1] if len(nums) > 1 else None,
                           text=s)
    raise ValueError(f'unknown eval program {text!r}. Valid forms: {GRAMMAR}')


def parse_programs(programs) -> List[Program]:
    if isinstance(programs, str):
        programs = [programs]
    return [parse_program(p) for p in programs or []]


# ----------------------------------------------------------------------
# infer
# ----------------------------------------------------------------------
@torch.no_grad()
def infer_whole_dataset(lit, with_render=False, T_render=None,
                        render_save_path=None):
    """z_sem of every training image, rows in dataset order (also under
    DDP, where each rank encodes its shard), float32 (N, C) on the CPU.

    with_render also decodes each latent from random x_T with T_render
    steps and writes the images to the LMDB ``render_save_path``."""
    conf = lit.conf
    data = conf.make_dataset(do_augment=False)
    loader = _ordered_loader(conf, data)
    model = lit.ema_model
    sampler = lit.inference.sampler(T_render or conf.T_eval) \
        if with_render else None
    writer = (LMDBImageWriter(render_save_path, format='webp', quality=100)
              if with_render and lit.global_rank == 0 else nullcontext())
    conds = torch.zeros(len(data), conf.style_ch)
    written = 0
    with eval_mode(model), writer:
        for batch in tqdm(loader, desc='infer',
                          disable=lit.global_rank != 0):
            cond = model.encoder(batch['img'].to(lit.device)).float()
            all_idx = all_gather_rows(batch['index'].to(lit.device)).cpu()
            conds[all_idx] = all_gather_rows(cond).cpu()
            if sampler is None:
                continue
            noise = torch.randn(len(cond), 3, conf.img_size, conf.img_size,
                                device=lit.device)
            render = all_gather_rows(
                (sampler.sample(model, noise=noise, cond=cond) + 1) / 2)
            if lit.global_rank == 0:
                # in index order; DDP padding repeats early rows: skip them
                order = sorted(range(len(all_idx)),
                               key=all_idx.tolist().__getitem__)
                imgs = []
                for i in order:
                    if int(all_idx[i]) == written:
                        imgs.append(render[i].float())
                        written += 1
                if imgs:
                    writer.put_images(torch.stack(imgs).cpu())
    return conds


def _ordered_loader(conf, data):
    sampler = None
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        # padded (not dropped): every row of the dataset gets a latent
        sampler = DistributedSampler(data, shuffle=False, drop_last=False)
    return DataLoader(data, batch_size=conf.batch_size_eval, shuffle=False,
                      sampler=sampler, num_workers=min(conf.num_workers, 2),
                      drop_last=False)


def save_latents(conds: torch.Tensor, path: str):
    """The official latent.pkl layout: {'conds', 'conds_mean',
    'conds_std'} (mean/std of shape (C,))."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    checkpoint_io.atomic_save(
        {
            'conds': conds,
            'conds_mean': conds.mean(dim=0),
            'conds_std': conds.std(dim=0),
        }, path)


# ----------------------------------------------------------------------
# the runner
# ----------------------------------------------------------------------
def run_programs(lit) -> Dict[str, float]:
    """Run ``lit.conf.eval_programs`` (on every process); returns the
    scores by their official names."""
    conf = lit.conf
    scores = {}
    for prog in parse_programs(conf.eval_programs):
        print(f'eval program: {prog.text}')
        if prog.kind == 'infer':
            conds = infer_whole_dataset(lit)
            if lit.global_rank == 0:
                path = os.path.join(conf.logdir, 'latent.pkl')
                save_latents(conds, path)
                print(f'wrote {tuple(conds.shape)} latents to {path}')
        elif prog.kind == 'infer+render':
            base = f'latent_infer_render{prog.T}/{conf.name}'
            conds = infer_whole_dataset(lit, with_render=True,
                                        T_render=prog.T,
                                        render_save_path=base + '.lmdb')
            if lit.global_rank == 0:
                save_latents(conds, base + '.pkl')
        elif prog.kind in ('fid', 'fid_latent', 'fidclip'):
            scores.update(_run_fid(lit, prog))
        elif prog.kind in ('recon', 'inv'):
            scores.update(_run_lpips(lit, prog))
    return scores


def _run_fid(lit, prog: Program) -> Dict[str, float]:
    conf = lit.conf.clone()
    conf.eval_num_images = conf.eval_program_num_images
    train_data, val_data = lit.eval_datasets()
    sampler = lit.inference.sampler(prog.T)
    latent_sampler = None
    if prog.T_latent is not None:
        lit.inference.check_latent_stats()
        latent_sampler = lit.inference.latent_sampler(prog.T_latent)
    score = evaluate_fid(sampler, lit.ema_model, conf,
                                 device=lit.device, train_data=train_data,
                                 val_data=val_data,
                                 latent_sampler=latent_sampler,
                                 conds_mean=lit.conds_mean,
                                 conds_std=lit.conds_std, remove_cache=False,
                                 clip_latent_noise=prog.kind == 'fidclip')
    if prog.T_latent is None:
        name = f'fid_ema_T{prog.T}'
    else:
        clip = '_clip' if prog.kind == 'fidclip' else ''
        name = f'fid{clip}_ema_T{prog.T}_Tlatent{prog.T_latent}'
    return {name: score}


def _run_lpips(lit, prog: Program) -> Dict[str, float]:
    conf = lit.conf.clone()
    _, val_data = lit.eval_datasets()
    conf.eval_num_images = len(val_data)
    sampler = lit.inference.sampler(prog.T)
    inv = prog.kind == 'inv'
    score = evaluate_lpips(sampler, lit.ema_model, conf,
                                   device=lit.device, val_data=val_data,
                                   latent_sampler=None,
                                   use_inverted_noise=inv)
    tag = '_inv' if inv else ''
    return {f'{k}{tag}_ema_T{prog.T}': v for k, v in score.items()}


# ----------------------------------------------------------------------
# the FID and LPIPS loops (official metrics.evaluate_fid / evaluate_lpips;
# the metrics and their networks are in metrics.py)
# ----------------------------------------------------------------------
def _generated_images(sampler: Sampler, model, conf: TrainConfig, device,
                      train_data: Optional[Dataset],
                      latent_sampler: Optional[Sampler], conds_mean,
                      conds_std, clip_latent_noise: bool
                      ) -> Iterator[torch.Tensor]:
    """This rank's share of the FID images, in batches, in [-1, 1]: the
    official choice of what is generated for each kind of model."""
    rank, world = get_rank(), get_world_size()
    batch_size = max(1, chunk_size(conf.batch_size_eval, rank, world))
    size = (3, conf.img_size, conf.img_size)
    sample = (conf.model_type.can_sample()
              or (conf.model_type.has_autoenc()
                  and conf.train_mode.is_latent_diffusion()))
    if sample:
        # unconditional samples (through the latent DPM for latent models)
        n = chunk_size(conf.eval_num_images, rank, world)
        for i in tqdm(range(0, n, batch_size), desc='generating images',
                      disable=rank != 0):
            x_T = torch.randn((min(batch_size, n - i), ) + size,
                              device=device)
            yield render_uncondition(conf, model, x_T, sampler,
                                     latent_sampler, conds_mean=conds_mean,
                                     conds_std=conds_std,
                                     clip_latent_noise=clip_latent_noise)
    elif conf.model_type.has_autoenc():
        # reconstructions (random x_T) of training images, never the
        # validation images; shuffled like the official loader
        subset = metrics.first_items(train_data, conf.eval_num_images,
                                     'train_data')
        mine = Subset(subset, metrics.rank_share(len(subset),
                                                 seed=conf.seed))
        for imgs in metrics.image_batches(conf, mine, batch_size,
                                          'generating images'):
            imgs = imgs.to(device)
            x_T = torch.randn((len(imgs), ) + size, device=device)
            yield render_condition(conf, model, x_T, sampler, x_start=imgs)
    else:
        raise NotImplementedError(conf.model_type)


def evaluate_fid(sampler: Sampler, model, conf: TrainConfig, device,
                 train_data: Optional[Dataset], val_data: Dataset,
                 latent_sampler: Optional[Sampler] = None, conds_mean=None,
                 conds_std=None, remove_cache: bool = True,
                 clip_latent_noise: bool = False,
                 inception: Optional[nn.Module] = None) -> float:
    """FID between ``conf.eval_num_images`` generated images and as many
    validation images (the same number on every rank).

    ``inception`` is the feature network (default: ``load_fid_inception``
    with ``conf.fid_weights_path``). ``remove_cache`` is accepted for the
    official signature; no generated images are stored, so there is
    nothing to remove (the real-data statistics stay cached)."""
    del remove_cache
    if inception is None:
        inception = metrics.load_fid_inception(conf=conf, device=device)
    feats = []
    with eval_mode(model), torch.no_grad():
        for imgs in _generated_images(sampler, model, conf, device,
                                      train_data, latent_sampler,
                                      conds_mean, conds_std,
                                      clip_latent_noise):
            feats.append(metrics.extract_features(
                inception, metrics.to_unit_range(imgs), len(imgs)))
    feats = all_gather_rows(torch.cat(feats).to(device))
    fid = torch.zeros((), dtype=torch.float64, device=device)
    if get_rank() == 0:
        real = metrics.real_statistics(conf, val_data, inception)
        fid.fill_(metrics.calculate_frechet_distance(
            *metrics.activation_statistics(feats), *real))
    broadcast(fid, 0)
    return fid.item()


def _invert_noise(conf: TrainConfig, model, sampler: Sampler,
                  imgs: torch.Tensor, cond) -> torch.Tensor:
    """x_T by DDIM inversion (with the encoder's z_sem for autoencoders)."""
    if conf.model_type.has_autoenc():
        return encode_stochastic(model, sampler, imgs, cond)
    return sampler.ddim_reverse_sample_loop(model, imgs, clip_denoised=True,
                                            model_kwargs={})['sample']


def _reconstruct(conf: TrainConfig, model, sampler: Sampler,
                 imgs: torch.Tensor, latent_sampler: Optional[Sampler],
                 use_inverted_noise: bool) -> torch.Tensor:
    """The model's rendering of ``imgs`` (official ``evaluate_lpips``)."""
    cond = model.encoder(imgs) if conf.model_type.has_autoenc() else None
    if use_inverted_noise:
        x_T = _invert_noise(conf, model, sampler, imgs, cond)
    else:
        x_T = torch.randn((len(imgs), 3, conf.img_size, conf.img_size),
                          device=imgs.device)
    if conf.model_type.can_sample():
        # a plain DDIM: only its inversion capability can be measured
        assert use_inverted_noise, 'a DDPM model needs use_inverted_noise'
        return render_uncondition(conf, model, x_T, sampler, latent_sampler)
    return render_condition(conf, model, x_T, sampler, cond=cond)


def evaluate_lpips(sampler: Sampler, model, conf: TrainConfig, device,
                   val_data: Dataset, latent_sampler: Optional[Sampler] = None,
                   use_inverted_noise: bool = False,
                   lpips_fn: Optional[nn.Module] = None
                   ) -> Dict[str, float]:
    """Means of {'lpips', 'mse', 'ssim', 'psnr'} between the first
    ``conf.eval_num_images`` validation images and their reconstructions
    (x_T random, or DDIM-inverted with ``use_inverted_noise``), over all
    ranks. ``lpips_fn`` defaults to ``metrics.load_lpips()``."""
    if lpips_fn is None:
        lpips_fn = metrics.load_lpips(path=conf.alexnet_weights_path,
                                      device=device)
    subset = metrics.first_items(val_data, conf.eval_num_images, 'val_data')
    mine = Subset(subset, metrics.rank_share(len(subset)))
    scores: Dict[str, list] = {}
    with eval_mode(model), torch.no_grad():
        for imgs in metrics.image_batches(conf, mine, conf.batch_size_eval,
                                          'lpips'):
            imgs = imgs.to(device)
            preds = _reconstruct(conf, model, sampler, imgs, latent_sampler,
                                 use_inverted_noise)
            scored = metrics.reconstruction_scores(imgs, preds, lpips_fn)
            for k, v in scored.items():
                scores.setdefault(k, []).append(v.float())
    return {k: all_gather_rows(torch.cat(v).to(device)).mean().item()
            for k, v in scores.items()}


# ----------------------------------------------------------------------
# during training
# ----------------------------------------------------------------------
_warned_no_weights = False


def evaluate_during_training(lit):
    """FID/LPIPS every conf.eval_every_samples (online model) and
    conf.eval_ema_every_samples (EMA model), as the reference; skipped
    with one warning when the metric weights are not installed."""
    conf = lit.conf
    n = lit.num_samples
    due = n > 0 and conf.eval_every_samples > 0 and is_time(
        n, conf.eval_every_samples, conf.batch_size_effective)
    due_ema = n > 0 and conf.eval_ema_every_samples > 0 and is_time(
        n, conf.eval_ema_every_samples, conf.batch_size_effective)
    if not (due or due_ema):
        return
    missing = metrics.missing_weights(conf)
    if missing:
        global _warned_no_weights
        if not _warned_no_weights:
            warnings.warn('skipping FID/LPIPS during training: '
                          f'{missing}')
            _warned_no_weights = True
        return
    train_data, val_data = lit.eval_datasets()
    latent_sampler = lit.eval_latent_sampler
    for model, postfix, run in ((lit.model, '', due),
                                (lit.ema_model, '_ema', due_ema)):
        if not run:
            continue
        if postfix == '' and conf.model_type.has_autoenc() and \
                conf.train_mode.is_autoenc():
            score = evaluate_lpips(lit.eval_sampler, model, conf,
                                           device=lit.device,
                                           val_data=val_data,
                                           latent_sampler=latent_sampler)
            for k, v in score.items():
                _log_scalar(lit, f'{k}{postfix}', v)
        fid = evaluate_fid(lit.eval_sampler, model, conf,
                                   device=lit.device, train_data=train_data,
                                   val_data=val_data,
                                   latent_sampler=latent_sampler,
                                   conds_mean=lit.conds_mean,
                                   conds_std=lit.conds_std)
        _log_scalar(lit, f'FID{postfix}', fid)
        if lit.global_rank == 0:
            os.makedirs(conf.logdir, exist_ok=True)
            with open(os.path.join(conf.logdir, 'eval.txt'), 'a') as f:
                f.write(json.dumps({f'FID{postfix}': fid,
                                    'num_samples': n}) + '\n')


def _log_scalar(lit, name, value):
    if lit.global_rank == 0 and lit.logger is not None:
        lit.logger.experiment.add_scalar(name, value, lit.num_samples)
