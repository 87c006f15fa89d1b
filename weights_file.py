"""The shareable weights file: what using a trained model needs (the EMA
weights, and the z_sem statistics where the template uses them) as a
``.safetensors`` file, with the template recorded in its metadata.

A safetensors file holds tensors and text only: reading one runs nothing
from the file (a ``.ckpt`` is a pickle). The metadata (text, as the format
requires) holds

    format              'diffae-ema-weights/1'
    kind                'autoencoder' (DiffAE) or 'classifier' (ClsModel)
    template            the template's name (conf.name)
    config              JSON of CONFIG_FIELDS: every field the network, the
                        diffusion processes and the classifier are built from
    prediction_target   what the decoder predicts ('eps', 'start_x', ...)
    latent_stats        'yes' when the file holds conds_mean / conds_std
    project_version     the code that wrote it (git commit)
    source, source_sha256   the checkpoint it was exported from

and the tensors keep the official checkpoint keys (``ema_model.*``,
``conds_mean``, ``conds_std``; ``classifier.*``, ``ema_classifier.*``).
The config is rebuilt from the metadata; a template given when loading
must agree with it (CONFIG_FIELDS less USAGE_FIELDS), or the fields that
differ are listed. Writing and reading the file itself: checkpoint_io.
"""
import enum
import json
import os
import subprocess
import typing
import warnings

import checkpoint_io
from config import TrainConfig

FORMAT = 'diffae-ema-weights/1'
KINDS = ('autoencoder', 'classifier')

# every TrainConfig field that make_model_conf, make_diffusion_conf and
# make_latent_diffusion_conf read (tests/test_weights_file.py checks this
# by reading config.py), plus what DiffAE and ClsModel read at use
CONFIG_FIELDS = (
    'name', 'train_mode', 'model_name', 'img_size', 'style_ch',
    # the UNet and the semantic encoder
    'net_ch', 'net_ch_mult', 'net_attn', 'net_num_res_blocks',
    'net_num_input_res_blocks', 'net_beatgans_attn_head',
    'net_beatgans_embed_channels', 'net_resblock_updown',
    'net_beatgans_gradient_checkpoint', 'net_beatgans_resnet_two_cond',
    'net_beatgans_resnet_use_zero_module',
    'net_beatgans_resnet_cond_channels', 'dropout', 'net_enc_pool',
    'net_enc_num_res_blocks', 'net_enc_channel_mult', 'net_enc_attn',
    'net_enc_grad_checkpoint',
    # the latent DPM's network
    'net_latent_net_type', 'net_latent_skip_layers',
    'net_latent_num_hid_channels', 'net_latent_layers',
    'net_latent_time_emb_channels', 'net_latent_activation',
    'net_latent_use_norm', 'net_latent_condition_bias', 'net_latent_dropout',
    'net_latent_net_last_act', 'net_latent_num_time_layers',
    'net_latent_time_last_act',
    # the image diffusion and its sampler
    'diffusion_type', 'T', 'beta_scheduler', 'beatgans_gen_type',
    'beatgans_model_mean_type', 'beatgans_model_var_type',
    'beatgans_loss_type', 'beatgans_rescale_timesteps', 'loss_weighting',
    'loss_weighting_gamma', 'p2_k', 'fp16', 'T_eval',
    # the latent diffusion and its sampler
    'latent_gen_type', 'latent_beta_scheduler', 'latent_model_mean_type',
    'latent_model_var_type', 'latent_loss_type', 'latent_rescale_timesteps',
    'train_pred_xstart_detach', 'latent_znormalize', 'latent_clip_sample',
    'latent_T_eval',
    # the classifier
    'manipulate_mode', 'manipulate_cls', 'manipulate_znormalize',
)
# recorded (a rebuilt config has them) but a given template may differ:
# defaults of the call, not properties of the weights
USAGE_FIELDS = ('T_eval', 'latent_T_eval', 'fp16',
                'net_beatgans_gradient_checkpoint', 'net_enc_grad_checkpoint')


class WeightsFileError(ValueError):
    """A weights file that does not fit: another kind, another template, or
    no DiffAE metadata. The message names the file and the fields."""


def project_version() -> str:
    """The code that writes a file: the git commit of this checkout
    (``git describe --always --dirty``), or 'unknown'."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(['git', '-C', here, 'describe', '--always',
                              '--dirty'], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return f'git {out.stdout.strip()}' if out.returncode == 0 else 'unknown'


def _jsonable(v):
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def config_fields(conf: TrainConfig) -> dict:
    """CONFIG_FIELDS of ``conf`` as JSON values (enums by value, tuples as
    lists)."""
    return {f: _jsonable(getattr(conf, f)) for f in CONFIG_FIELDS}


def _field_types():
    return typing.get_type_hints(TrainConfig)


def conf_from_fields(saved: dict) -> TrainConfig:
    """A TrainConfig with the official defaults and the ``saved`` fields
    (enums from their values, lists as tuples where the field is one); the
    network config is built."""
    types = _field_types()
    conf = TrainConfig()
    for k, v in saved.items():
        t = types.get(k)
        if v is not None and isinstance(t, type) and issubclass(t,
                                                                enum.Enum):
            v = t(v)
        elif isinstance(v, list) and typing.get_origin(t) is tuple:
            v = tuple(v)
        setattr(conf, k, v)
    conf.make_model_conf()
    return conf


def config_differences(saved: dict, conf: TrainConfig):
    """[(field, in the file, in ``conf``)] over the saved fields that are
    not USAGE_FIELDS."""
    own = config_fields(conf)
    return [(k, v, own[k]) for k, v in saved.items()
            if k in own and k not in USAGE_FIELDS and v != own[k]]


def metadata_for(conf: TrainConfig, kind: str, source: str,
                 source_sha256: str, latent_stats: bool, extra=None) -> dict:
    """The metadata of a weights file exported from checkpoint ``source``
    (its file name and SHA-256) of template ``conf``."""
    if kind not in KINDS:
        raise ValueError(f'kind {kind!r}: one of {KINDS}')
    conf.make_model_conf()  # sets model_type, as building the model does
    meta = {
        'format': FORMAT, 'kind': kind, 'template': conf.name,
        'config': json.dumps(config_fields(conf), sort_keys=True),
        'prediction_target': conf.beatgans_model_mean_type.value,
        'latent_stats': 'yes' if latent_stats else 'no',
        'project_version': project_version(),
        'source': source, 'source_sha256': source_sha256,
    }
    meta.update(extra or {})
    return meta


def write_weights(path, tensors, conf: TrainConfig, kind: str, source,
                  latent_stats: bool, extra=None) -> dict:
    """Write ``tensors`` (the official keys) with the metadata of
    ``conf``; returns the metadata."""
    meta = metadata_for(conf, kind, os.path.basename(str(source)),
                        checkpoint_io.file_sha256(source), latent_stats,
                        extra)
    checkpoint_io.save_safetensors(tensors, path, meta)
    return meta


def _check_meta(path, meta, kind):
    if meta.get('format') != FORMAT:
        raise WeightsFileError(
            f'{path} is a safetensors file without DiffAE metadata (format '
            f'{meta.get("format")!r}, expected {FORMAT!r}): it was not '
            'written by `cli.py export`. Export the checkpoint with it.')
    if meta.get('kind') != kind:
        other = ('ClsModel.from_checkpoint' if meta.get('kind') ==
                 'classifier' else 'DiffAE.from_checkpoint')
        raise WeightsFileError(
            f'{path} holds a {meta.get("kind")!r} model, not a {kind!r} '
            f'one: load it with {other}')
    try:
        return json.loads(meta['config'])
    except (KeyError, ValueError) as e:
        raise WeightsFileError(f'{path}: its metadata has no readable '
                               f'config ({e}); export it again') from None


def resolve_source(conf, path, what='template'):
    """(conf, path, whether ``path`` is a weights file) of a
    ``from_checkpoint(conf, path)`` call: a path given alone (as ``conf``)
    moves to ``path``; a ``.ckpt`` needs its template."""
    if isinstance(conf, (str, os.PathLike)) and path is None:
        conf, path = None, conf
    is_file = path is not None and checkpoint_io.is_safetensors(path)
    if conf is None and not is_file:
        raise ValueError(f'{path or "a checkpoint"}: a .ckpt needs its '
                         f'{what} (conf); only a .safetensors export names '
                         'its own')
    return conf, path, is_file


def _check_target(path, meta, conf):
    wanted = conf.beatgans_model_mean_type.value
    if meta.get('prediction_target') != wanted:
        raise WeightsFileError(
            f'{path}: its metadata says the decoder predicts '
            f'{meta.get("prediction_target")!r}, its config says {wanted!r}: '
            'the file was altered; export it again')


def read_weights(path, conf: typing.Optional[TrainConfig] = None,
                 kind='autoencoder', map_location='cpu'):
    """(config, tensors, metadata) of a weights file. Without ``conf`` the
    config is rebuilt from the metadata; a given ``conf`` must agree with
    it (else WeightsFileError listing the fields; a differing name alone is
    a warning) and is returned."""
    tensors, meta = checkpoint_io.load_safetensors(path,
                                                   device=map_location)
    saved = _check_meta(path, meta, kind)
    if conf is None:
        conf = conf_from_fields(saved)
        _check_target(path, meta, conf)
        return conf, tensors, meta
    conf.make_model_conf()
    diffs = config_differences(saved, conf)
    lines = '\n'.join(f'  {f}: file {a!r}, template {b!r}'
                      for f, a, b in diffs)
    if any(f != 'name' for f, _, _ in diffs):
        raise WeightsFileError(
            f'{path} was exported from template {meta.get("template")!r}; '
            f'template {conf.name!r} differs in {len(diffs)} field(s):\n'
            f'{lines}\nLoad it without a template (its metadata rebuilds '
            'the config) or give the template it names.')
    _check_target(path, meta, conf)
    if diffs:
        warnings.warn(f'{path} was exported from template '
                      f'{meta.get("template")!r}, loaded with the same '
                      f'settings under the name {conf.name!r}')
    return conf, tensors, meta

