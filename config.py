"""TrainConfig: every knob of a DiffAE run, with the official field names
and defaults, and the factories that turn it into models, diffusion
processes, datasets and loaders."""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import distributed
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from choices import (Activation, GenerativeType, LossType, ManipulateLossType,
                     ManipulateMode, ModelMeanType, ModelName, ModelType,
                     ModelVarType, OptimizerType, TrainMode)
import dataset as D
import scenes_data
import shapes_data
from config_base import BaseConfig
from dataset_util import use_cached_dataset_path
from image_check import apply_policy
from diffusion import (PowerSampler, SpacedDiffusionBeatGansConfig,
                       UniformSampler)
from diffusion.schedules import get_named_beta_schedule, space_timesteps
from model import (BeatGANsAutoencConfig, BeatGANsUNetConfig, LatentNetType,
                   MLPSkipNetConfig, ModelConfig)

# Where each named dataset lives (relative to the working directory, as in
# the official code). ``data_resize_<name>.py`` makes each LMDB.
data_paths = {
    'ffhqlmdb256': os.path.expanduser('datasets/ffhq256.lmdb'),
    # used for training a classifier
    'celeba': os.path.expanduser('datasets/celeba'),
    # used for training DPM models
    'celebalmdb': os.path.expanduser('datasets/celeba.lmdb'),
    'celebahq': os.path.expanduser('datasets/celebahq256.lmdb'),
    'horse256': os.path.expanduser('datasets/horse256.lmdb'),
    'bedroom256': os.path.expanduser('datasets/bedroom256.lmdb'),
    'celeba_anno': os.path.expanduser(
        'datasets/celeba_anno/list_attr_celeba.txt'),
    'celebahq_anno': os.path.expanduser(
        'datasets/celeba_anno/CelebAMask-HQ-attribute-anno.txt'),
    'celeba_relight': os.path.expanduser(
        'datasets/celeba_hq_light/celeba_light.txt'),
    # the built-in demo dataset, generated on first use
    'shapes': os.path.expanduser('datasets/shapes.lmdb'),
    # the second built-in synthetic dataset (landscape scenes), also
    # generated on first use
    'scenes': os.path.expanduser('datasets/scenes.lmdb'),
}


# Compatibility-only names: fields of the official TrainConfig that nothing
# in this project reads (the features they named are not part of it).
# Official checkpoints' ``hyper_parameters`` and
# official-style notebooks still name them, so TrainConfig accepts them and
# ignores them: ``from_dict`` skips them silently (also with strict=True),
# assigning one (``conf.parallel = True``) is a no-op, and reading one raises
# an AttributeError that says so. (net_beatgans_resnet_scale_at had the only
# value, 'afternorm', so no setting of it changes anything; official
# checkpoints do not store it.)
COMPAT_ONLY_FIELDS = frozenset({
    'autoenc_mid_attn',
    'fid_use_torch',
    'net_autoenc_stochastic',
    'net_beatgans_resnet_scale_at',
    'net_enc_k',
    'net_enc_num_cls',
    'net_enc_use_time',
    'net_latent_channel_mult',
    'parallel',
    'train_cond0_prob',
    'train_interpolate_img',
    'train_interpolate_prob',
})


@dataclass
class PretrainConfig(BaseConfig):
    name: str
    path: str


@dataclass
class TrainConfig(BaseConfig):
    # random seed
    seed: int = 0
    train_mode: TrainMode = TrainMode.diffusion
    train_pred_xstart_detach: bool = True
    manipulate_mode: ManipulateMode = ManipulateMode.celebahq_all
    manipulate_cls: str = None
    manipulate_shots: int = None
    manipulate_loss: ManipulateLossType = ManipulateLossType.bce
    manipulate_znormalize: bool = False
    manipulate_seed: int = 0
    accum_batches: int = 1
    batch_size: int = 16
    batch_size_eval: int = None
    beatgans_gen_type: GenerativeType = GenerativeType.ddim
    beatgans_loss_type: LossType = LossType.mse
    beatgans_model_mean_type: ModelMeanType = ModelMeanType.eps
    beatgans_model_var_type: ModelVarType = ModelVarType.fixed_large
    beatgans_rescale_timesteps: bool = False
    latent_infer_path: str = None
    latent_znormalize: bool = False
    latent_gen_type: GenerativeType = GenerativeType.ddim
    latent_loss_type: LossType = LossType.mse
    latent_model_mean_type: ModelMeanType = ModelMeanType.eps
    latent_model_var_type: ModelVarType = ModelVarType.fixed_large
    latent_rescale_timesteps: bool = False
    latent_T_eval: int = 1_000
    latent_clip_sample: bool = False
    latent_beta_scheduler: str = 'linear'
    beta_scheduler: str = 'linear'
    data_name: str = ''
    data_val_name: str = None
    diffusion_type: str = None
    dropout: float = 0.1
    ema_decay: float = 0.9999
    eval_num_images: int = 5_000
    eval_every_samples: int = 200_000
    eval_ema_every_samples: int = 200_000
    fp16: bool = False
    grad_clip: float = 1
    img_size: int = 64
    lr: float = 0.0001
    optimizer: OptimizerType = OptimizerType.adam
    weight_decay: float = 0
    model_conf: Optional[ModelConfig] = None
    model_name: ModelName = None
    model_type: ModelType = None
    net_attn: Tuple[int] = None
    net_beatgans_attn_head: int = 1
    # not necessarily the same as the number of style channels
    net_beatgans_embed_channels: int = 512
    net_resblock_updown: bool = True
    net_enc_pool: str = 'adaptivenonzero'
    net_beatgans_gradient_checkpoint: bool = False
    net_beatgans_resnet_two_cond: bool = False
    net_beatgans_resnet_use_zero_module: bool = True
    net_beatgans_resnet_cond_channels: int = None
    net_ch_mult: Tuple[int] = None
    net_ch: int = 64
    net_enc_attn: Tuple[int] = None
    # number of res-blocks per level of the encoder (half-UNet)
    net_enc_num_res_blocks: int = 2
    net_enc_channel_mult: Tuple[int] = None
    net_enc_grad_checkpoint: bool = False
    net_latent_activation: Activation = Activation.silu
    net_latent_condition_bias: float = 0
    net_latent_dropout: float = 0
    net_latent_layers: int = None
    net_latent_net_last_act: Activation = Activation.none
    net_latent_net_type: LatentNetType = LatentNetType.none
    net_latent_num_hid_channels: int = 1024
    net_latent_num_time_layers: int = 2
    net_latent_skip_layers: Tuple[int] = None
    net_latent_time_emb_channels: int = 64
    net_latent_use_norm: bool = False
    net_latent_time_last_act: bool = False
    net_num_res_blocks: int = 2
    # number of res-blocks per level of the UNet's encoding side
    net_num_input_res_blocks: int = None
    num_workers: int = 4
    postfix: str = ''
    sample_size: int = 64
    sample_every_samples: int = 20_000
    save_every_samples: int = 100_000
    style_ch: int = 512
    T_eval: int = 1_000
    # training timesteps: 'uniform' (official) or 'high_noise' (opt-in,
    # density rising as (t / T)^(T_sampler_power - 1), no reweighting)
    T_sampler: str = 'uniform'
    T_sampler_power: float = 2.0
    # opt-in weighting of the image decoder's loss over timesteps
    # (diffusion/weighting.py): 'none' (official), 'p2' or 'min_snr';
    # gamma defaults to the paper's (1 for p2, 5 for min_snr)
    loss_weighting: str = 'none'
    loss_weighting_gamma: float = None
    p2_k: float = 1.0
    T: int = 1_000
    total_samples: int = 10_000_000
    warmup: int = 0
    # opt-in learning-rate decay after the warm-up (not in the official
    # code, whose lr stays constant): 'none' (official) or 'cosine', from
    # lr down to lr * lr_decay_final at total_samples
    lr_decay: str = 'none'
    lr_decay_final: float = 0.0
    pretrain: PretrainConfig = None
    continue_from: PretrainConfig = None
    eval_programs: Tuple[str] = None
    # if present, load the checkpoint from this path instead
    eval_path: str = None
    base_dir: str = 'checkpoints'
    use_cache_dataset: bool = False
    data_cache_dir: str = os.path.expanduser('~/cache')
    work_cache_dir: str = os.path.expanduser('~/mycache')
    # to be overridden
    name: str = ''
    # --- additions of this project (not in the official config) ---
    # your own data: a folder of images (data_name='imagefolder') or a path
    # that overrides data_paths[data_name]
    data_dir: str = None
    # local weight files of the metrics' networks (see metrics.py)
    fid_weights_path: str = None
    alexnet_weights_path: str = None
    # Lightning precision ('32-true', '16-mixed', 'bf16-mixed') or 'auto'
    # (None means 'auto' too): on a GPU conf.fp16 gives '16-mixed' as the
    # official code, else bf16-mixed from compute capability 8.0; on a CPU
    # bf16-mixed only with native bf16 (AVX512_BF16/AMX), else float32
    # (hardware.py decides; the run prints what it chose and why)
    precision: str = 'auto'
    # images generated by the fid<T> eval programs (the paper's 50k)
    eval_program_num_images: int = 50_000
    # image files of data_name='imagefolder' that cannot be decoded (every
    # file is checked before the first step, see image_check.py): 'error'
    # stops before training and lists them all; 'skip' leaves them out
    # (one warning, the list in <logdir>/bad_images.txt)
    bad_images: str = 'error'

    def __post_init__(self):
        self.batch_size_eval = self.batch_size_eval or self.batch_size
        self.data_val_name = self.data_val_name or self.data_name

    # --- compatibility-only names (see COMPAT_ONLY_FIELDS) ---
    def __setattr__(self, name, value):
        if name in COMPAT_ONLY_FIELDS:
            return
        super().__setattr__(name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails
        if name in COMPAT_ONLY_FIELDS:
            raise AttributeError(
                f"TrainConfig.{name} is a compatibility-only name of the "
                "official config: it is accepted and ignored, nothing reads "
                "it (config.COMPAT_ONLY_FIELDS)")
        raise AttributeError(
            f"'{type(self).__name__}' object has no attribute '{name}'")

    def from_dict(self, dict, strict=False):
        """Set the fields named in ``dict`` (e.g. a checkpoint's
        ``hyper_parameters``); compatibility-only names are skipped."""
        super().from_dict(
            {k: v for k, v in dict.items() if k not in COMPAT_ONLY_FIELDS},
            strict=strict)

    def scale_up_gpus(self, num_gpus, num_nodes=1):
        """Scale the global batch sizes and sample intervals with the
        number of devices (intervals are counted in samples)."""
        n = num_gpus * num_nodes
        self.eval_ema_every_samples *= n
        self.eval_every_samples *= n
        self.sample_every_samples *= n
        self.batch_size *= n
        self.batch_size_eval *= n
        return self

    @property
    def batch_size_effective(self):
        return self.batch_size * self.accum_batches

    @property
    def fid_cache(self):
        return (f'{self.work_cache_dir}/eval_images/'
                f'{self.data_name}_size{self.img_size}_{self.eval_num_images}')

    @property
    def data_path(self):
        if self.data_dir is not None:
            return self.data_dir
        if self.data_name not in data_paths:
            raise KeyError(
                f"unknown data_name '{self.data_name}': use one of "
                f"{sorted(data_paths)} or 'imagefolder' with conf.data_dir")
        path = data_paths[self.data_name]
        if self.use_cache_dataset and path is not None:
            path = use_cached_dataset_path(
                path, f'{self.data_cache_dir}/{self.data_name}')
        return path

    @property
    def logdir(self):
        return f'{self.base_dir}/{self.name}'

    @property
    def generate_dir(self):
        return f'{self.work_cache_dir}/gen_images/{self.name}'

    # ------------------------------------------------------------------
    # diffusion processes
    # ------------------------------------------------------------------
    def _make_diffusion_conf(self, T=None, gen_type=None):
        """The image diffusion with ``T`` spaced steps (of self.T), sampled
        with ``gen_type`` (default conf.beatgans_gen_type)."""
        gen_type = GenerativeType(gen_type or self.beatgans_gen_type)
        if self.diffusion_type != 'beatgans':
            raise NotImplementedError(
                f"diffusion_type '{self.diffusion_type}': only 'beatgans'")
        return SpacedDiffusionBeatGansConfig(
            gen_type=gen_type,
            model_type=self.model_type,
            betas=get_named_beta_schedule(self.beta_scheduler, self.T),
            model_mean_type=self.beatgans_model_mean_type,
            model_var_type=self.beatgans_model_var_type,
            loss_type=self.beatgans_loss_type,
            rescale_timesteps=self.beatgans_rescale_timesteps,
            use_timesteps=space_timesteps(
                num_timesteps=self.T,
                section_counts=_section_counts(gen_type, T)),
            fp16=self.fp16,
            loss_weighting=self.loss_weighting,
            loss_weighting_gamma=self.loss_weighting_gamma,
            p2_k=self.p2_k,
        )

    def _make_latent_diffusion_conf(self, T=None, gen_type=None):
        """The latent DPM's diffusion with ``T`` steps (same full T),
        sampled with ``gen_type`` (default conf.latent_gen_type)."""
        gen_type = GenerativeType(gen_type or self.latent_gen_type)
        return SpacedDiffusionBeatGansConfig(
            train_pred_xstart_detach=self.train_pred_xstart_detach,
            gen_type=gen_type,
            # the latent net is a plain (unconditional) DPM
            model_type=ModelType.ddpm,
            betas=get_named_beta_schedule(self.latent_beta_scheduler, self.T),
            model_mean_type=self.latent_model_mean_type,
            model_var_type=self.latent_model_var_type,
            loss_type=self.latent_loss_type,
            rescale_timesteps=self.latent_rescale_timesteps,
            use_timesteps=space_timesteps(
                num_timesteps=self.T,
                section_counts=_section_counts(gen_type, T)),
            fp16=self.fp16,
        )

    @property
    def model_out_channels(self):
        return 3

    def make_T_sampler(self):
        if self.T_sampler == 'uniform':
            return UniformSampler(self.T)
        if self.T_sampler == 'high_noise':
            return PowerSampler(self.T, self.T_sampler_power)
        raise ValueError(f"T_sampler '{self.T_sampler}': use 'uniform' "
                         "(official) or 'high_noise'")

    def make_diffusion_conf(self):
        return self._make_diffusion_conf(self.T)

    def make_eval_diffusion_conf(self):
        return self._make_diffusion_conf(T=self.T_eval)

    def make_latent_diffusion_conf(self):
        return self._make_latent_diffusion_conf(T=self.T)

    def make_latent_eval_diffusion_conf(self):
        return self._make_latent_diffusion_conf(T=self.latent_T_eval)

    # ------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------
    def make_dataset(self, path=None, **kwargs):
        """The training dataset named by ``data_name`` (at ``path`` or
        ``data_path``)."""
        path = path or self.data_path
        name = self.data_name
        if name == 'ffhqlmdb256':
            return D.FFHQlmdb(path=path, image_size=self.img_size, **kwargs)
        if name == 'horse256':
            return D.Horse_lmdb(path=path, image_size=self.img_size, **kwargs)
        if name == 'bedroom256':
            # (the reference reads bedrooms with the horse class, issue #58;
            # same format, named right here)
            return D.Bedroom_lmdb(path=path, image_size=self.img_size,
                                  **kwargs)
        if name == 'celebalmdb':
            # always the D2C crop
            return D.CelebAlmdb(path=path, image_size=self.img_size,
                                original_resolution=None, crop_d2c=True,
                                **kwargs)
        if name == 'celebahq':
            return D.CelebHQlmdb(path=path, image_size=self.img_size,
                                 **kwargs)
        if name == 'shapes':
            return shapes_data.ShapesDataset(path=path,
                                             image_size=self.img_size,
                                             **kwargs)
        if name == 'scenes':
            return scenes_data.ScenesDataset(path=path,
                                             image_size=self.img_size,
                                             **kwargs)
        if name == 'imagefolder':
            if path is None:
                raise ValueError(
                    "data_name='imagefolder' needs conf.data_dir = "
                    "'<folder of images>'")
            kwargs.setdefault('exts', ['jpg', 'jpeg', 'png', 'webp', 'JPG',
                                       'JPEG', 'PNG'])
            kwargs.setdefault('sort_names', True)
            return apply_policy(D.ImageDataset(
                path, image_size=self.img_size, **kwargs), self.bad_images,
                self.logdir)
        raise NotImplementedError(
            f"no dataset for data_name '{name}': use one of 'ffhqlmdb256', "
            "'celebalmdb', 'celebahq', 'horse256', 'bedroom256', 'shapes', "
            "'scenes', or 'imagefolder' with conf.data_dir")

    def make_loader(self, dataset, shuffle: bool, num_worker: int = None,
                    drop_last: bool = True, batch_size: int = None,
                    parallel: bool = False):
        """A DataLoader; under torch.distributed with ``parallel`` each rank
        reads its own shard."""
        if parallel and distributed.is_initialized():
            # drop_last so that no padded (repeated) indexes are added
            sampler = DistributedSampler(dataset, shuffle=shuffle,
                                         drop_last=True)
        else:
            sampler = None
        num_workers = self.num_workers if num_worker is None else num_worker
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            shuffle=False if sampler else shuffle,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=num_workers > 0,
        )

    # ------------------------------------------------------------------
    # model
    # ------------------------------------------------------------------
    def make_model_conf(self):
        """Build (and keep in ``self.model_conf``) the network config."""
        common = dict(
            attention_resolutions=self.net_attn,
            channel_mult=self.net_ch_mult,
            conv_resample=True,
            dims=2,
            dropout=self.dropout,
            embed_channels=self.net_beatgans_embed_channels,
            image_size=self.img_size,
            in_channels=3,
            model_channels=self.net_ch,
            num_classes=None,
            num_head_channels=-1,
            num_heads_upsample=-1,
            num_heads=self.net_beatgans_attn_head,
            num_res_blocks=self.net_num_res_blocks,
            num_input_res_blocks=self.net_num_input_res_blocks,
            out_channels=self.model_out_channels,
            resblock_updown=self.net_resblock_updown,
            use_checkpoint=self.net_beatgans_gradient_checkpoint,
            use_new_attention_order=False,
            resnet_two_cond=self.net_beatgans_resnet_two_cond,
            resnet_use_zero_module=self.net_beatgans_resnet_use_zero_module,
        )
        if self.model_name == ModelName.beatgans_ddpm:
            self.model_type = ModelType.ddpm
            self.model_conf = BeatGANsUNetConfig(**common)
        elif self.model_name == ModelName.beatgans_autoenc:
            self.model_type = ModelType.autoencoder
            if self.net_latent_net_type == LatentNetType.none:
                latent_net_conf = None
            elif self.net_latent_net_type == LatentNetType.skip:
                latent_net_conf = MLPSkipNetConfig(
                    num_channels=self.style_ch,
                    skip_layers=self.net_latent_skip_layers,
                    num_hid_channels=self.net_latent_num_hid_channels,
                    num_layers=self.net_latent_layers,
                    num_time_emb_channels=self.net_latent_time_emb_channels,
                    activation=self.net_latent_activation,
                    use_norm=self.net_latent_use_norm,
                    condition_bias=self.net_latent_condition_bias,
                    dropout=self.net_latent_dropout,
                    last_act=self.net_latent_net_last_act,
                    num_time_layers=self.net_latent_num_time_layers,
                    time_last_act=self.net_latent_time_last_act,
                )
            else:
                raise NotImplementedError(self.net_latent_net_type)
            self.model_conf = BeatGANsAutoencConfig(
                **common,
                enc_out_channels=self.style_ch,
                enc_pool=self.net_enc_pool,
                enc_num_res_block=self.net_enc_num_res_blocks,
                enc_channel_mult=self.net_enc_channel_mult,
                enc_grad_checkpoint=self.net_enc_grad_checkpoint,
                enc_attn_resolutions=self.net_enc_attn,
                latent_net_conf=latent_net_conf,
                resnet_cond_channels=self.net_beatgans_resnet_cond_channels,
            )
        else:
            raise NotImplementedError(
                f'model_name {self.model_name}: use ModelName.beatgans_ddpm '
                'or ModelName.beatgans_autoenc (see templates.py)')
        return self.model_conf


def _section_counts(gen_type: GenerativeType, T: int):
    if gen_type == GenerativeType.ddpm:
        return [T]
    if gen_type == GenerativeType.ddim:
        return f'ddim{T}'
    if gen_type == GenerativeType.dpmpp_2m:
        # quadratic in time: on DDIM's uniform steps the last one into t = 0
        # is a large log-SNR jump that a second-order step cannot bridge
        return f'quad{T}'
    raise NotImplementedError(gen_type)


def is_time(num_samples, every, step_size):
    """Whether ``num_samples`` just crossed a multiple of ``every`` (the
    last step advanced by ``step_size`` samples): the *_every_samples
    intervals count samples, as the reference."""
    closest = (num_samples // every) * every
    return num_samples - closest < step_size
