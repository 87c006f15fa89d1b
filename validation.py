"""Checks run before any work: the run's settings, the inferred latents
(``latent.pkl``) and a checkpoint's saved hyper-parameters against the
config. Each error names the setting or file to fix."""
import warnings

import torch

import checkpoint_io

# fields whose difference changes what a checkpoint's weights mean
HPARAM_FIELDS = ('T', 'beta_scheduler', 'latent_beta_scheduler', 'img_size',
                 'style_ch', 'net_ch', 'net_ch_mult', 'net_enc_channel_mult',
                 'net_attn', 'net_num_res_blocks', 'net_enc_num_res_blocks',
                 'net_beatgans_attn_head', 'net_beatgans_embed_channels',
                 'diffusion_type', 'T_sampler', 'latent_znormalize',
                 'net_latent_layers', 'net_latent_num_hid_channels',
                 'loss_weighting')
# checkpoint key naming what the decoder predicts (conf.beatgans_model_
# mean_type's value); official and older files lack it and predict 'eps'.
# Reading the outputs as another quantity would decode garbage: an error.
TARGET_KEY = 'prediction_target'


def missing_latents_message(conf) -> str:
    """What to run when a latent model's ``latent.pkl`` is missing."""
    return (f'the latent DPM needs the inferred z_sem of its autoencoder at '
            f'{conf.latent_infer_path!r}, which does not exist. Make it by '
            "running the 'infer' eval program on the autoencoder template, "
            "e.g.:\n    conf = <autoencoder template>(); conf.eval_programs "
            "= ['infer']; train(conf, gpus=[0], mode='eval')\n(it writes "
            "checkpoints/<autoencoder name>/latent.pkl).")


def _positive_int(conf, field, errors):
    v = getattr(conf, field, None)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        errors.append(f'conf.{field}={v!r} must be a positive integer')


def check_train_conf(conf, mode='train'):
    """ValueError listing every bad setting among batch sizes, the sample
    budget and the T values (before a model is built)."""
    errors = []
    for f in ('batch_size', 'batch_size_eval', 'accum_batches', 'T',
              'T_eval', 'latent_T_eval'):
        _positive_int(conf, f, errors)
    if not errors:
        for f in ('T_eval', 'latent_T_eval'):
            v = getattr(conf, f, None)
            if v is not None and v > conf.T:
                errors.append(f'conf.{f}={v} is more steps than the '
                              f'diffusion has (conf.T={conf.T})')
    if mode == 'train' and not errors:
        ts = conf.total_samples
        per_step = conf.batch_size * conf.accum_batches
        if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
            errors.append(f'conf.total_samples={ts!r} must be a positive '
                          'integer (samples to train on)')
        elif ts < per_step:
            errors.append(
                f'conf.total_samples={ts} is less than one optimizer step '
                f'(conf.batch_size x accum_batches = {per_step}): nothing '
                'would be trained')
    if errors:
        raise ValueError('invalid training settings:\n  ' +
                         '\n  '.join(errors))


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def hparams_differences(saved: dict, conf):
    """[(field, saved value, config value)] for HPARAM_FIELDS."""
    own = conf.as_dict_jsonable()
    out = []
    for f in HPARAM_FIELDS:
        if f in saved and f in own:
            a, b = _norm(saved[f]), _norm(own[f])
            if isinstance(a, list) and isinstance(b, list):
                a, b = [_norm(x) for x in a], [_norm(x) for x in b]
            if a != b:
                out.append((f, saved[f], own[f]))
    return out


def warn_if_hparams_differ(state_or_path, conf, source=None):
    """A warning listing the fields where a checkpoint's saved
    ``hyper_parameters`` differ from ``conf`` (the weights may load, but
    the diffusion or the shapes they were trained with differ)."""
    if not isinstance(state_or_path, dict):
        source = source or str(state_or_path)
        state_or_path = checkpoint_io.load_checkpoint(state_or_path,
                                                      mmap=True)
    saved = state_or_path.get('hyper_parameters') or {}
    diffs = hparams_differences(saved, conf)
    trained = state_or_path.get(TARGET_KEY, 'eps')
    wanted = conf.beatgans_model_mean_type.value
    if trained != wanted:
        raise ValueError(
            f'{source} holds a decoder trained to predict {trained!r}, but '
            f'conf {conf.name!r} predicts {wanted!r} '
            '(conf.beatgans_model_mean_type): its outputs would be read as '
            'the wrong quantity. Use the template it was trained with, or '
            f'move the run folder ({conf.logdir}) away to train afresh.')
    if diffs:
        lines = '\n'.join(f'  {f}: checkpoint {a!r}, config {b!r}'
                          for f, a, b in diffs)
        warnings.warn(f'{source} was trained with other settings than '
                      f'conf {conf.name!r}:\n{lines}\nCheck that this is '
                      'the checkpoint (or template) you mean.')
    return diffs



def load_verified(module, conf, path, map_location='cpu',
                  what='checkpoint', keep=None):
    """Load the checkpoint ``path`` into ``module`` (a LitModel, a
    DiffAEWeights): a warning when its saved hyper-parameters differ from
    ``conf``, then its weights -- only the keys ``keep(key)`` accepts,
    when given -- with every key of ``module`` checked
    (checkpoint_io.load_state_verified). Returns the checkpoint."""
    state = checkpoint_io.load_checkpoint(path, map_location=map_location,
                                          what=what)
    warn_if_hparams_differ(state, conf, f'checkpoint {path}')
    weights = state['state_dict']
    if keep is not None:
        weights = {k: v for k, v in weights.items() if keep(k)}
    checkpoint_io.load_state_verified(module, weights,
                                      source=f'checkpoint {path}')
    return state

def load_latents(path, style_ch: int):
    """``latent.pkl`` checked: a dict with 'conds' (N, style_ch),
    'conds_mean' and 'conds_std' (style_ch values each)."""
    state = checkpoint_io.load_checkpoint(path, what='latent file')
    want = "a dict with 'conds' (N, style_ch), 'conds_mean', 'conds_std'"
    if not isinstance(state, dict):
        raise ValueError(f'latent file {path} holds a '
                         f'{type(state).__name__}, expected {want}')
    missing = [k for k in ('conds', 'conds_mean', 'conds_std')
               if k not in state]
    if missing:
        raise ValueError(f'latent file {path} lacks {missing} (found keys '
                         f'{list(state)[:10]}); expected {want}. Re-run the '
                         "'infer' eval program on the autoencoder.")
    conds = state['conds']
    if not torch.is_tensor(conds) or conds.dim() != 2 or \
            conds.shape[1] != style_ch:
        found = tuple(conds.shape) if torch.is_tensor(conds) else \
            type(conds).__name__
        raise ValueError(
            f'latent file {path}: conds is {found}, expected (N, '
            f'{style_ch}) (N, conf.style_ch): it was inferred with another '
            "autoencoder; re-run 'infer' with the autoencoder of this "
            'template')
    for k in ('conds_mean', 'conds_std'):
        v = state[k]
        if not torch.is_tensor(v) or v.numel() != style_ch:
            found = tuple(v.shape) if torch.is_tensor(v) else \
                type(v).__name__
            raise ValueError(f'latent file {path}: {k} is {found}, expected '
                             f'{style_ch} values (conf.style_ch)')
    return state
