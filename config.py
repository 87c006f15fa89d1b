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
import data_registry
from config_base import BaseConfig
from dataset_util import use_cached_dataset_path
from diffusion import (PowerSampler, SpacedDiffusionBeatGansConfig,
                       UniformSampler)
from diffusion.schedules import get_named_beta_schedule, space_timesteps
from model import (BeatGANsAutoencConfig, BeatGANsUNetConfig, LatentNetType,
                   MLPSkipNetConfig, ModelConfig)

# where each named dataset lives (relative to the working directory, as in
# the official code); the registry of data_registry.py holds it
data_paths = data_registry.data_paths

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
    """Every setting of a run. Field names and defaults are the official
    ones (the templates in templates*.py set what each model changes); the
    fields marked "(added)" are this project's and default to the official
    behaviour. Counts of ``*_samples`` are images seen (global batch x
    steps), as in the official code."""

    # --- the run -----------------------------------------------------------
    # run name: the folder <base_dir>/<name> (every template sets it)
    name: str = ''
    # random seed (each process seeds seed * world_size + rank)
    seed: int = 0
    # what trains: diffusion, latent_diffusion (latent templates), manipulate
    train_mode: TrainMode = TrainMode.diffusion
    # the folder of run folders (checkpoints, logs, sample grids)
    base_dir: str = 'checkpoints'
    # a suffix of the official names; nothing reads it (pretrain templates)
    postfix: str = ''
    # initial weights from another run (latent and classifier templates)
    pretrain: PretrainConfig = None
    # resume another run when this one has no checkpoint yet
    continue_from: PretrainConfig = None

    # --- data --------------------------------------------------------------
    # a name of data_registry.DATASETS, e.g. 'ffhqlmdb256' (every template)
    data_name: str = ''
    # the data of the evaluations (None: data_name)
    data_val_name: str = None
    # (added) your own data: the folder of data_name='imagefolder', or a
    # path that replaces data_paths[data_name]
    data_dir: str = None
    # image side in pixels (64, 128, 256; the ffhq*/shapes templates)
    img_size: int = 64
    # global batch, divided over all processes (every template)
    batch_size: int = 16
    # global batch of sampling and evaluation (None: batch_size)
    batch_size_eval: int = None
    # gradient accumulation: optimizer steps every accum_batches batches
    accum_batches: int = 1
    # data-loader worker processes per training process
    num_workers: int = 4
    # copy the dataset into data_cache_dir once, and read it from there
    use_cache_dataset: bool = False
    # where use_cache_dataset copies datasets
    data_cache_dir: str = os.path.expanduser('~/cache')
    # cached FID statistics (fid_cache) and generated images
    work_cache_dir: str = os.path.expanduser('~/mycache')
    # (added) undecodable files of data_name='imagefolder', all checked
    # first (image_check.py): 'error' lists them and stops, 'skip' leaves
    # them out (listed in <logdir>/bad_images.txt)
    bad_images: str = 'error'
    # GPU math (nothing changes on a CPU): TF32 matmuls and convolutions on
    # GPUs that have them (Ampere and later; the official code's torch 1.8
    # had both on by default); False keeps full float32. cudnn_benchmark
    # lets cuDNN time its kernels once for the fixed training shapes
    tf32: bool = True
    cudnn_benchmark: bool = True
    # opt-in torch.compile of the networks (the autoencoder/UNet and the
    # latent net) for training and sampling, in place (nn.Module.compile):
    # checkpoint and EMA keys stay the official ones, no '_orig_mod.'. The
    # first steps pay the compile time (docs/gpu.md: when it pays)
    compile: bool = False
    # its torch.compile backend: 'inductor' (fused generated kernels) or
    # 'aot_eager' (traces the graphs without generating code: no speed-up)
    compile_backend: str = 'inductor'

    # --- optimisation ------------------------------------------------------
    # learning rate (1e-4 image models and latent DPMs, 1e-3 classifiers)
    lr: float = 0.0001
    # adam or adamw (adamw_weight_decay)
    optimizer: OptimizerType = OptimizerType.adam
    # L2 weight decay of the optimizer (adamw_weight_decay sets 0.01)
    weight_decay: float = 0
    # gradient-norm clip (0: none)
    grad_clip: float = 1
    # linear learning-rate warm-up, in optimizer steps (templates keep 0)
    warmup: int = 0
    # (added) lr after the warm-up: 'none' (official, constant) or 'cosine'
    lr_decay: str = 'none'
    # (added) the cosine's end, reached at total_samples: lr * lr_decay_final
    lr_decay_final: float = 0.0
    # decay of the exponential moving average of the weights (ema_model)
    ema_decay: float = 0.9999
    # length of the run in images seen (every template sets it)
    total_samples: int = 10_000_000
    # the official mixed precision flag: '16-mixed' on a GPU
    fp16: bool = False
    # (added) Lightning precision ('32-true', '16-mixed', 'bf16-mixed') or
    # 'auto'/None: on a GPU fp16 gives '16-mixed', else bf16-mixed from
    # compute capability 8.0; on a CPU bf16-mixed only with native bf16
    # (AVX512_BF16/AMX), else float32 (hardware.py; the run says why)
    precision: str = 'auto'
    # dropout of the UNet and encoder residual blocks
    dropout: float = 0.1

    # --- the image diffusion (decoder) ---------------------------------------
    # 'beatgans' (the only kind; every template)
    diffusion_type: str = None
    # diffusion steps of training
    T: int = 1_000
    # DDIM steps of sample grids, evaluation and rendering (20 in templates)
    T_eval: int = 1_000
    # beta schedule: 'linear' or 'cosine' (diffusion/schedules.py)
    beta_scheduler: str = 'linear'
    # sampler of evaluation and rendering: ddim or ddpm
    beatgans_gen_type: GenerativeType = GenerativeType.ddim
    # training loss: mse or l1
    beatgans_loss_type: LossType = LossType.mse
    # what the decoder predicts: eps (official), start_x or v (opt-in)
    beatgans_model_mean_type: ModelMeanType = ModelMeanType.eps
    # the reverse-process variance (fixed_large, as the official models)
    beatgans_model_var_type: ModelVarType = ModelVarType.fixed_large
    # feed t * 1000 / T to the network instead of t
    beatgans_rescale_timesteps: bool = False
    # (added) training timesteps: 'uniform' (official) or 'high_noise'
    T_sampler: str = 'uniform'
    # (added) 'high_noise' draws t with density ~ (t / T)^(power - 1)
    T_sampler_power: float = 2.0
    # (added) decoder-loss weighting: 'none' (official), 'p2', 'min_snr'
    loss_weighting: str = 'none'
    # (added) its gamma (None: the paper's, 1 for p2, 5 for min_snr)
    loss_weighting_gamma: float = None
    # (added) k of the p2 weighting (diffusion/weighting.py)
    p2_k: float = 1.0
    # (added) weight of the opt-in perceptual term: lpips_loss_weight x
    # LPIPS(x_0 estimate, image) added per sample (docs/perceptual_loss.md);
    # 0 is the official loss
    lpips_loss_weight: float = 0.0
    # (added) its LPIPS trunk: 'alex', 'vgg' or 'squeeze'
    lpips_loss_net: str = 'alex'
    # (added) the term counts at original timesteps t < this (conf.T: all)
    lpips_loss_t_max: int = 200
    # (added) the trunk's torchvision weight file (None: env variable,
    # checkpoints/<file>, torch hub's cache, see metrics.LPIPS_TRUNKS; for
    # 'alex' conf.alexnet_weights_path is tried first)
    lpips_loss_trunk_path: str = None
    # detach the predicted x_0 in the training loss (latent DPM)
    train_pred_xstart_detach: bool = True

    # --- the latent DPM (latent templates) ----------------------------------
    # z_sem of the whole training set, from the 'infer' eval program
    latent_infer_path: str = None
    # train the latent DPM on z_sem normalised by its mean and std
    latent_znormalize: bool = False
    # DDIM steps of the latent sampler in evaluation and sampling
    latent_T_eval: int = 1_000
    # beta schedule of the latent DPM ('const0.008' in the latent templates)
    latent_beta_scheduler: str = 'linear'
    # the latent DPM's sampler (as beatgans_gen_type)
    latent_gen_type: GenerativeType = GenerativeType.ddim
    # its training loss (mse or l1)
    latent_loss_type: LossType = LossType.mse
    # what it predicts (eps)
    latent_model_mean_type: ModelMeanType = ModelMeanType.eps
    # its reverse-process variance
    latent_model_var_type: ModelVarType = ModelVarType.fixed_large
    # feed t * 1000 / T to the latent net instead of t
    latent_rescale_timesteps: bool = False
    # clip sampled latents to [-1, 1] at every step
    latent_clip_sample: bool = False

    # --- the networks ------------------------------------------------------
    # beatgans_autoenc (DiffAE) or beatgans_ddpm (DDIM baseline)
    model_name: ModelName = None
    # set by make_model_conf from model_name (autoencoder or ddpm)
    model_type: ModelType = None
    # the network config made by make_model_conf
    model_conf: Optional[ModelConfig] = None
    # UNet base channels (64 or 128 in the templates)
    net_ch: int = 64
    # UNet channel multiplier per resolution level, e.g. (1, 2, 4, 8)
    net_ch_mult: Tuple[int] = None
    # resolutions with self-attention, e.g. (16, )
    net_attn: Tuple[int] = None
    # res-blocks per level of the UNet
    net_num_res_blocks: int = 2
    # res-blocks per level of the UNet's encoding side (None: as above)
    net_num_input_res_blocks: int = None
    # attention heads of the UNet
    net_beatgans_attn_head: int = 1
    # time-embedding channels (not necessarily style_ch)
    net_beatgans_embed_channels: int = 512
    # down/up-sample inside res-blocks (else separate layers)
    net_resblock_updown: bool = True
    # gradient checkpointing of the UNet (memory for time)
    net_beatgans_gradient_checkpoint: bool = False
    # res-blocks conditioned on time and z_sem separately (autoenc_base)
    net_beatgans_resnet_two_cond: bool = False
    # zero-initialise the last conv of each res-block
    net_beatgans_resnet_use_zero_module: bool = True
    # channels of the res-block condition (None: style_ch)
    net_beatgans_resnet_cond_channels: int = None
    # z_sem channels (512 in the official templates)
    style_ch: int = 512
    # semantic encoder: channel multiplier per level, e.g. (1, 2, 4, 8, 8)
    net_enc_channel_mult: Tuple[int] = None
    # its attention resolutions (None: net_attn)
    net_enc_attn: Tuple[int] = None
    # its res-blocks per level (a half UNet)
    net_enc_num_res_blocks: int = 2
    # how its last feature map becomes z_sem
    net_enc_pool: str = 'adaptivenonzero'
    # gradient checkpointing of the encoder
    net_enc_grad_checkpoint: bool = False
    # latent DPM network: none (no latent net) or skip (MLP with skips)
    net_latent_net_type: LatentNetType = LatentNetType.none
    # its layers (10 or 20 in the latent templates)
    net_latent_layers: int = None
    # the layers that get the input z again (skip connections)
    net_latent_skip_layers: Tuple[int] = None
    # its hidden channels (2048 in the latent templates)
    net_latent_num_hid_channels: int = 1024
    # its activation
    net_latent_activation: Activation = Activation.silu
    # LayerNorm in its layers
    net_latent_use_norm: bool = False
    # bias added to the time condition of its layers
    net_latent_condition_bias: float = 0
    # its dropout
    net_latent_dropout: float = 0
    # activation of its output
    net_latent_net_last_act: Activation = Activation.none
    # layers of its time embedding
    net_latent_num_time_layers: int = 2
    # channels of its time embedding
    net_latent_time_emb_channels: int = 64
    # an activation after the time embedding's last layer
    net_latent_time_last_act: bool = False

    # --- sample grids, checkpoints, evaluation -----------------------------
    # images of each sample grid (fixed x_T)
    sample_size: int = 64
    # write sample grids every ... images seen (0: never)
    sample_every_samples: int = 20_000
    # save a checkpoint every ... images seen
    save_every_samples: int = 100_000
    # FID/LPIPS of the online model every ... images seen
    eval_every_samples: int = 200_000
    # FID of the EMA model every ... images seen
    eval_ema_every_samples: int = 200_000
    # images of the FID during training
    eval_num_images: int = 5_000
    # what mode='eval' runs, e.g. ['infer'], ['fid(10,10)'] (evaluation.py)
    eval_programs: Tuple[str] = None
    # the checkpoint mode='eval' loads (None: <logdir>/last.ckpt)
    eval_path: str = None
    # (added) images of the fid<T> eval programs (the paper's 50k)
    eval_program_num_images: int = 50_000
    # (added) local weight file of the FID Inception (metrics.py)
    fid_weights_path: str = None
    # (added) local weight file of LPIPS' AlexNet (metrics.py)
    alexnet_weights_path: str = None

    # --- the attribute classifier (train_mode=manipulate, templates_cls) -----
    # which labels: celebahq_all, d2c_fewshot, shapes_all, scenes_all
    manipulate_mode: ManipulateMode = ManipulateMode.celebahq_all
    # the attribute of a single-class mode (d2c_fewshot)
    manipulate_cls: str = None
    # K of a few-shot mode
    manipulate_shots: int = None
    # classifier loss: bce or mse
    manipulate_loss: ManipulateLossType = ManipulateLossType.bce
    # classify z_sem normalised by the statistics of latent_infer_path
    manipulate_znormalize: bool = False
    # seed of the few-shot subset
    manipulate_seed: int = 0

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
        path = data_registry.dataset_path(self.data_name)
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
    def make_diffusion_conf(self, T=None, gen_type=None):
        """The image diffusion with ``T`` spaced steps (of self.T; None:
        all of them, the training process), sampled with ``gen_type``
        (default conf.beatgans_gen_type)."""
        T = self.T if T is None else T
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
            lpips_weight=self.lpips_loss_weight,
            lpips_t_max=self.lpips_loss_t_max,
        )

    def make_latent_diffusion_conf(self, T=None, gen_type=None):
        """The latent DPM's diffusion with ``T`` steps (of the same full
        self.T; None: all of them), sampled with ``gen_type`` (default
        conf.latent_gen_type)."""
        T = self.T if T is None else T
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

    # the official names (the official experiment.py calls them)
    _make_diffusion_conf = make_diffusion_conf
    _make_latent_diffusion_conf = make_latent_diffusion_conf

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

    def make_eval_diffusion_conf(self):
        return self.make_diffusion_conf(T=self.T_eval)

    def make_latent_eval_diffusion_conf(self):
        return self.make_latent_diffusion_conf(T=self.latent_T_eval)

    # ------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------
    def make_dataset(self, path=None, **kwargs):
        """The training dataset named by ``data_name`` (at ``path`` or
        ``data_path``)."""
        return data_registry.make_dataset(
            self.data_name, path or self.data_path, self.img_size,
            bad_images=self.bad_images, logdir=self.logdir, **kwargs)

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
