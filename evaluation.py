"""Evaluation programs of ``train(conf, gpus, mode='eval')`` and the
periodic evaluation during training.

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import scipy.stats
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

import checkpoint_io
import metrics
import renderer
from config import is_time
from dist_utils import all_gather_rows
from tensor_util import eval_mode
from lmdb_writer import LMDBImageWriter

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
    score = metrics.evaluate_fid(sampler, lit.ema_model, conf,
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
    score = metrics.evaluate_lpips(sampler, lit.ema_model, conf,
                                   device=lit.device, val_data=val_data,
                                   latent_sampler=None,
                                   use_inverted_noise=inv)
    tag = '_inv' if inv else ''
    return {f'{k}{tag}_ema_T{prog.T}': v for k, v in score.items()}


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
            score = metrics.evaluate_lpips(lit.eval_sampler, model, conf,
                                           device=lit.device,
                                           val_data=val_data,
                                           latent_sampler=latent_sampler)
            for k, v in score.items():
                _log_scalar(lit, f'{k}{postfix}', v)
        fid = metrics.evaluate_fid(lit.eval_sampler, model, conf,
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


# ----------------------------------------------------------------------
# linear probe of z_sem (the paper's attribute-prediction table)
# ----------------------------------------------------------------------
def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels``
    (positive: > 0), with ties counted half (Mann-Whitney U)."""
    return auroc_columns(scores.reshape(-1, 1), labels.reshape(-1, 1))[0]


def auroc_columns(scores: torch.Tensor, labels: torch.Tensor) -> List[float]:
    """AUROC of every column of ``scores`` (n, m) against the same column
    of ``labels`` (n, m) at once; NaN where a column has one class."""
    ranks = torch.from_numpy(scipy.stats.rankdata(
        scores.double().cpu().numpy(), axis=0))     # ties: average rank
    pos = (labels > 0).cpu()
    n_pos = pos.sum(0).double()
    n_neg = len(pos) - n_pos
    u = (ranks * pos).sum(0) - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).where((n_pos > 0) & (n_neg > 0),
                                       torch.tensor(float('nan'))).tolist()


# ridge strengths of the probe, as a fraction of the number of fitted rows
# (the features are z-normalised, so 1.0 weighs the penalty like the data)
PROBE_RIDGE = (0.0, 1e-3, 1e-2, 1e-1, 1.0)


def fit_ridge_probes(x: torch.Tensor, y: torch.Tensor, strengths
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least-squares linear classifiers (ridge regression on 0/1 targets)
    of every column of ``y`` at every strength, in closed form from one
    eigendecomposition: weights (S, D, K) and biases (S, K) for S
    strengths, D features, K columns. Each column is its own problem."""
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    evals, vecs = torch.linalg.eigh(xc.T @ xc)
    # a rank-deficient x (a dead feature) gets a tiny floor, not a NaN
    evals = evals.clamp_min(evals.max().clamp_min(1e-30) * 1e-12)
    proj = vecs.T @ (xc.T @ (y - my))                    # (D, K)
    lam = torch.as_tensor(strengths, dtype=torch.float64) * len(x)
    inv = 1 / (evals[None] + lam[:, None])               # (S, D)
    weight = vecs @ (inv[:, :, None] * proj[None])      # (S, D, K)
    return weight, my - torch.einsum('d,sdk->sk', mx, weight)


def linear_probe(latents: torch.Tensor, labels: torch.Tensor, names,
                 train_frac: float = 0.8, strengths=PROBE_RIDGE,
                 folds: int = 3, splits: int = 5, seed: int = 0) -> Dict:
    """The paper's attribute prediction from z_sem: one linear classifier
    per attribute on the z-normalised latents, scored by AUROC. The
    classifier is ridge regression on the 0/1 labels (a least-squares
    linear classifier), which has a closed form: every attribute, strength
    and fold is fitted at once from one eigendecomposition per fold, in
    milliseconds (an L-BFGS logistic probe took minutes per encoder).

    For each of ``splits`` random train/test splits (split k seeded with
    ``seed + k``), ``train_frac`` of the rows train and the rest give the
    held-out AUROC. Each attribute's L2 strength is picked from
    ``strengths`` by ``folds``-fold cross-validated AUROC on the
    training rows only, then the probe is refitted on all of them -- so
    two representations are compared each at its own best setting, and
    the held-out rows never choose anything.

    Returns each attribute's AUROC averaged over the splits, their
    'mean', 'mean_by_split' (the spread of that mean over splits) and
    the chosen strengths under 'strength' (one list per attribute).
    """
    n = len(latents)
    y = (labels > 0).double().reshape(n, -1)
    per_split = []
    for k in range(splits):
        g = torch.Generator().manual_seed(seed + k)
        perm = torch.randperm(n, generator=g)
        cut = int(n * train_frac)
        per_split.append(_probe_split(latents, y, perm[:cut], perm[cut:],
                                      strengths, folds))
    out = {}
    for i, name in enumerate(names):
        vals = [a[i] for a, _ in per_split if a[i] == a[i]]
        out[name] = sum(vals) / len(vals) if vals else float('nan')
    valid = [v for v in out.values() if v == v]
    out['mean'] = sum(valid) / len(valid)
    out['mean_by_split'] = []
    for aurocs, _ in per_split:
        ok = [a for a in aurocs if a == a]
        out['mean_by_split'].append(sum(ok) / len(ok))
    out['strength'] = {name: [wd[i] for _, wd in per_split]
                           for i, name in enumerate(names)}
    return out


def _probe_split(latents, y, tr, te, strengths, folds):
    """Held-out AUROC of every attribute for one split, and the chosen
    strengths (see :func:`linear_probe`)."""
    x = latents.double()
    mean, std = x[tr].mean(0), x[tr].std(0) + 1e-6
    x = (x - mean) / std
    k = y.shape[1]
    # cross-validated AUROC of every (strength, attribute)
    val = torch.zeros(len(strengths), k, dtype=torch.float64)
    fold_of = torch.arange(len(tr)) % folds
    for f in range(folds):
        fit, held = tr[fold_of != f], tr[fold_of == f]
        weight, bias = fit_ridge_probes(x[fit], y[fit], strengths)
        # (held rows, strength * attribute)
        scores = (torch.einsum('nd,sdk->nsk', x[held], weight) + bias
                  ).flatten(1)
        a = torch.tensor(auroc_columns(
            scores, y[held].repeat(1, len(strengths)))).reshape(-1, k)
        val += a.nan_to_num(0.5) / folds
    best = val.argmax(0)
    weight, bias = fit_ridge_probes(x[tr], y[tr], strengths)
    scores = torch.einsum('nd,dk->nk', x[te], weight[best, :, torch.arange(k)]
                          .T) + bias[best, torch.arange(k)]
    chosen = torch.as_tensor(strengths, dtype=torch.float64)[best]
    return auroc_columns(scores, y[te]), chosen.tolist()


# does z_sem carry what the image is? (decoding from z_sem alone)
# ----------------------------------------------------------------------
# ``read_attributes(images)``: images (N, 3, H, W) in [0, 1] -> {attribute
# name: (N,) int64 class}, e.g. shapes_data.shape_attribute_classes
AttributeReader = Callable[[torch.Tensor], Dict[str, torch.Tensor]]


def _render_batched(model, noise, cond, T, batch_size):
    return torch.cat([
        model.render(noise[i:i + batch_size], cond[i:i + batch_size], T=T)
        for i in range(0, len(cond), batch_size)])


@torch.no_grad()
def zsem_decoding_report(model, images: torch.Tensor,
                         read_attributes: AttributeReader, T: int = 20,
                         seeds: int = 4, seed: int = 0,
                         batch_size: int = 64,
                         return_decoded: bool = False) -> Dict:
    """Decode every image's z_sem from *random* x_T and measure what stays.

    DiffAE's claim is that z_sem holds the content and x_T only the
    stochastic detail; inverted-x_T reconstruction cannot show it (DDIM
    inversion is nearly exact even for a weak decoder). So for each of
    ``seeds`` draws one random x_T is shared by all the images (draw k from
    ``torch.Generator().manual_seed(seed + k)``) and decoded with each
    image's z_sem (``T`` DDIM steps).

    Args:
        model: anything with ``encode(x)`` and ``render(noise, cond, T=)``
            returning [0, 1] images (inference.DiffAE, LitModel).
        images: (N, 3, H, W) in [-1, 1].
        read_attributes: per-image attribute classes from pixels (see
            ``AttributeReader``); the reference is its reading of the inputs.

    Returns:
        ``kept``: per attribute, the fraction of decodes whose class equals
        the input's (over images and draws), ``kept_by_seed`` the same per
        draw, and ``chance``: the agreement a decoder that ignored z_sem
        would get with the same class frequencies (sum over classes of
        p_input * p_decoded). ``spread_across_z``: pixel std over the
        images at the same x_T; ``spread_across_xT``: pixel std over the
        draws for the same z_sem (both averaged over pixels, images in
        [0, 1]); z_sem carries the picture when the first is the larger.
        Plus ``T``, ``seeds``, ``images``, and with ``return_decoded``
        ``'decoded'``: the (seeds, N, 3, H, W) decodes (to show them).
    """
    x01 = (images.float() + 1) / 2
    ref = read_attributes(x01)
    cond = model.encode(images)
    decoded = []
    for k in range(seeds):
        g = torch.Generator().manual_seed(seed + k)
        noise = torch.randn((1, *images.shape[1:]), generator=g).to(
            images.device).expand(len(images), -1, -1, -1)
        decoded.append(_render_batched(model, noise, cond, T,
                                       batch_size).float().cpu())
    dec = torch.stack(decoded)                     # (seeds, N, 3, H, W)
    read = [read_attributes(d) for d in decoded]
    out = {'T': T, 'seeds': seeds, 'images': len(images), 'kept': {},
           'kept_by_seed': {}, 'chance': {}}
    for name, want in ref.items():
        got = torch.stack([r[name] for r in read])  # (seeds, N)
        agree = (got == want.cpu()[None]).float()
        out['kept'][name] = agree.mean().item()
        out['kept_by_seed'][name] = agree.mean(1).tolist()
        n_cls = int(max(got.max(), want.max())) + 1
        p_in = torch.bincount(want.cpu(), minlength=n_cls) / want.numel()
        p_dec = torch.bincount(got.flatten(), minlength=n_cls) / got.numel()
        out['chance'][name] = float((p_in * p_dec).sum())
    out['spread_across_z'] = dec.std(dim=1).mean().item()
    out['spread_across_xT'] = dec.std(dim=0).mean().item()
    if return_decoded:
        out['decoded'] = dec
    return out


@torch.no_grad()
def manipulation_change_rate(model, images: torch.Tensor, cond: torch.Tensor,
                             xT: torch.Tensor, direction: torch.Tensor,
                             read_attributes: AttributeReader,
                             attribute: str, target: int,
                             amounts: Sequence[float] = (0.0, 0.5, 1.0),
                             T: int = 20, normalize=None, denormalize=None,
                             batch_size: int = 64) -> Dict:
    """Move z_sem along a classifier ``direction`` (renderer.manipulate_cond,
    the official recipe) with the images' own x_T (inverted), and measure
    how many of the images whose ``attribute`` is not ``target`` now read
    as ``target``.

    Returns ``changed`` {amount: fraction of those images now at target},
    ``others_kept`` {amount: fraction of (image, other attribute) pairs
    that still read as in the input}, and ``images``: how many were
    moved.
    """
    ref = read_attributes((images.float() + 1) / 2)
    sel = (ref[attribute] != target).nonzero().flatten()
    out = {'attribute': attribute, 'target': target, 'images': len(sel),
           'changed': {}, 'others_kept': {}}
    if len(sel) == 0:
        return out
    others = [k for k in ref if k != attribute]
    for a in amounts:
        c2 = renderer.manipulate_cond(cond[sel], direction, a, normalize,
                                      denormalize)
        got = read_attributes(_render_batched(model, xT[sel], c2, T,
                                              batch_size).float().cpu())
        out['changed'][a] = (got[attribute] == target).float().mean().item()
        same = [(got[k] == ref[k][sel].cpu()).float() for k in others]
        out['others_kept'][a] = (torch.stack(same).mean().item()
                                 if same else float('nan'))
    return out
