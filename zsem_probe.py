"""What z_sem carries, measured: the paper's linear probe (attribute
prediction from z_sem, scored by AUROC), the decoding report (decode each
image's z_sem from random x_T and read its attributes back from the
pixels) and the manipulation change rate. Used by ``run_shapes.py`` (the
demo report) and ``bench/`` (the study, docs/zsem-small-budget.md)."""
from typing import Callable, Dict, List, Sequence, Tuple

import scipy.stats
import torch

import renderer


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


__all__ = ['auroc', 'auroc_columns', 'PROBE_RIDGE', 'fit_ridge_probes',
           'linear_probe', 'AttributeReader', 'zsem_decoding_report',
           'manipulation_change_rate']
