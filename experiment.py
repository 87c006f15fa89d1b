"""Training DiffAE with Lightning 2.x: ``LitModel`` (the official notebook
API: encode / encode_stochastic / render / sample) and ``train()``.

This file is the Lightning glue. The math lives elsewhere: networks in
``model/``, diffusion in ``diffusion/``, decoding in ``renderer.py``,
metrics in ``metrics.py``, the eval programs in ``evaluation.py``.
"""
import contextlib
import copy
import json
import os
import random
import warnings
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.callbacks import (LearningRateMonitor, TQDMProgressBar)
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, TensorDataset
from torchvision.utils import make_grid, save_image

import checkpoint_io
import evaluation
import hardware
import metrics
import renderer
import run_lock
import validation
from choices import OptimizerType, TrainMode
from config import TrainConfig, is_time
from resumable_loader import ResumableDataLoader, ResumableSampler
from dist_utils import all_gather_rows, get_world_size
from inference import DiffAE
from tensor_util import eval_mode
from training_support import (LRSchedule, NonFiniteWatch, StepProgressBar,
                              WarmupLR, ema_update, resolve_devices,
                              resolve_precision, resolve_processes)
from validation import missing_latents_message

# the EMA copy is in eval mode on purpose
warnings.filterwarnings('ignore', message='.*module\\(s\\) in eval mode.*')


class LitModel(pl.LightningModule):
    """A DiffAE (or DDIM) model with its EMA copy, samplers and training
    loop.

    ``model`` is trained; ``ema_model`` (used for every rendering call) is
    its exponential moving average. In latent-diffusion mode only
    ``model.latent_net`` trains, on z-normalised z_sem read from
    ``conf.latent_infer_path``.
    """

    def __init__(self, conf: TrainConfig):
        super().__init__()
        if conf.train_mode == TrainMode.manipulate:
            raise ValueError('classifier templates (train_mode=manipulate) '
                             'go with ClsModel in experiment_classifier.py')
        if conf.seed is not None:
            pl.seed_everything(conf.seed, verbose=False)
        self.save_hyperparameters(conf.as_dict_jsonable())
        self.conf = conf

        self.model = conf.make_model_conf().make_model()
        self.ema_model = copy.deepcopy(self.model)
        self.ema_model.requires_grad_(False)
        self.ema_model.eval()
        if conf.train_mode.is_latent_diffusion():
            # only the latent DPM trains; the autoencoder stays frozen
            self.model.requires_grad_(False)
            self.model.latent_net.requires_grad_(True)
        if conf.compile:
            # in place: the state-dict keys stay the official ones
            hardware.compile_in_place(self.model, conf.compile_backend)
            hardware.compile_in_place(self.ema_model, conf.compile_backend)

        # training samplers; the eval ones belong to the inference object
        self.sampler = conf.make_diffusion_conf().make_sampler()
        self.T_sampler = conf.make_T_sampler()
        self.latent_sampler = (conf.make_latent_diffusion_conf(
        ).make_sampler() if conf.train_mode.use_latent_net() else None)
        # the notebook API (encode/render/sample) on this module's EMA
        # weights: not a submodule, so the checkpoint keys stay official
        self.inference = DiffAE(conf, weights=self)
        self.eval_sampler = self.inference.eval_sampler
        self.eval_latent_sampler = self.inference.eval_latent_sampler

        # fixed noise: sample grids are comparable over training
        self.register_buffer(
            'x_T', torch.randn(conf.sample_size, 3, conf.img_size,
                               conf.img_size))

        self._nonfinite = NonFiniteWatch()
        self.conds = None
        if conf.latent_infer_path is not None:
            self._load_latent_stats(conf.latent_infer_path)
        else:
            self.conds_mean = None
            self.conds_std = None

        if conf.pretrain is not None:
            self.load_pretrain(conf.pretrain.path)

    # ------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------
    def _load_latent_stats(self, path):
        """z_sem statistics (and the latents themselves, for training the
        latent DPM) from an inferred ``latent.pkl``."""
        c = self.conf.style_ch
        if os.path.exists(path):
            state = validation.load_latents(path, c)
            self.conds = state['conds']
            mean, std = state['conds_mean'], state['conds_std']
        else:
            # filled by a checkpoint's buffers; training says how to infer
            mean = torch.full((c, ), float('nan'))
            std = torch.full((c, ), float('nan'))
        self.register_buffer('conds_mean', mean.reshape(1, -1).float())
        self.register_buffer('conds_std', std.reshape(1, -1).float())

    def load_pretrain(self, path):
        """Initialise from another run's checkpoint (e.g. the autoencoder
        under a latent DPM). Every key must match except those this
        template adds (the latent net, the latent stats, x_T)."""
        print(f'loading pretrain {path}')
        state = checkpoint_io.load_checkpoint(path, what='conf.pretrain')
        sd = dict(state['state_dict'])
        if 'x_T' in sd and sd['x_T'].shape != self.x_T.shape:
            del sd['x_T']
        for k in ('conds_mean', 'conds_std'):
            # our own latent.pkl statistics win
            sd.pop(k, None)
        checkpoint_io.load_state_verified(
            self, sd, source=f'pretrain checkpoint {path}',
            allow_missing=('model.latent_net.', 'ema_model.latent_net.',
                           'x_T', 'conds_mean', 'conds_std'))
        print('pretrain step:', state.get('global_step'))

    def load_state_dict(self, state_dict, strict: bool = True, assign=False):
        """As torch's, but a ``strict=False`` load (the official notebooks'
        habit) still reports what did not match instead of hiding it."""
        if not strict:
            problems = checkpoint_io.describe_mismatch(self, state_dict)
            if checkpoint_io.key_mismatch(self, state_dict)[2]:
                raise checkpoint_io.CheckpointMismatchError(
                    'checkpoint does not match this template:\n' + problems)
            if problems:
                warnings.warn('load_state_dict(strict=False) skipped keys:\n'
                              + problems)
        return super().load_state_dict(state_dict, strict=strict,
                                       assign=assign)

    @classmethod
    def from_checkpoint(cls, conf: TrainConfig, path=None,
                        map_location='cpu'):
        """A LitModel of template ``conf`` with the weights of ``path``
        (default: ``<logdir>/last.ckpt``), verified key by key."""
        path = path or os.path.join(conf.logdir, 'last.ckpt')
        model = cls(conf)
        validation.load_verified(model, conf, path, map_location)
        model.eval()
        return model

    # ------------------------------------------------------------------
    # the notebook API: inference.DiffAE on this module's EMA weights
    # ------------------------------------------------------------------
    def normalize(self, cond):
        return self.inference.normalize(cond)

    def denormalize(self, cond):
        return self.inference.denormalize(cond)

    def sample(self, N, device, T=None, T_latent=None, progress=False,
               solver=None, latent_solver=None):
        """N unconditional images in [0, 1] (see DiffAE.sample)."""
        return self.inference.sample(N, device, T, T_latent, progress,
                                     solver=solver,
                                     latent_solver=latent_solver)

    def render(self, noise, cond=None, T=None, progress=False, solver=None):
        """Decode x_T and z_sem into images in [0, 1] (DiffAE.render;
        ``solver`` e.g. 'dpmpp_2m', default the config's DDIM)."""
        return self.inference.render(noise, cond, T, progress, solver=solver)

    def interpolate(self, cond_a, xT_a, cond_b, xT_b, alphas, T=None,
                    progress=False, solver=None):
        """Images in [0, 1] between two encoded images
        (DiffAE.interpolate)."""
        return self.inference.interpolate(cond_a, xT_a, cond_b, xT_b, alphas,
                                          T, progress, solver=solver)

    def encode(self, x):
        """Images in [-1, 1] -> z_sem (DiffAE.encode)."""
        return self.inference.encode(x)

    def encode_stochastic(self, x, cond, T=None, progress=False,
                          solver=None):
        """Images and their z_sem -> x_T (DiffAE.encode_stochastic)."""
        return self.inference.encode_stochastic(x, cond, T, progress,
                                                solver=solver)

    def forward(self, noise=None, x_start=None, ema_model: bool = False):
        model = self.ema_model if ema_model else self.model
        with torch.no_grad():
            return self.eval_sampler.sample(model=model, noise=noise,
                                            x_start=x_start)

    # ------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------
    def setup(self, stage=None):
        if self.conf.seed is not None:
            # a different seed per rank (the reference's scheme)
            seed = self.conf.seed * get_world_size() + self.global_rank
            np.random.seed(seed)
            torch.manual_seed(seed)
            random.seed(seed)
        if stage in (None, 'fit'):
            # a missing LPIPS trunk file stops the run before step 1
            self.perceptual_net()
            if self.conf.train_mode.require_dataset_infer():
                self.train_data = None
            else:
                self.train_data = self.conf.make_dataset()
            self.val_data = self.train_data

    def eval_datasets(self):
        """(train, val) datasets of the FID/LPIPS evaluations: the
        training set (as the reference), loaded once."""
        if getattr(self, 'train_data', None) is None:
            self.train_data = self.val_data = self.conf.make_dataset()
        return self.train_data, self.val_data

    @property
    def batch_size(self):
        """Per-process batch size (conf.batch_size is global)."""
        ws = get_world_size()
        if self.conf.batch_size % ws:
            raise ValueError(
                f'conf.batch_size={self.conf.batch_size} is the global '
                f'batch and must be divisible by the {ws} processes')
        return self.conf.batch_size // ws

    @property
    def num_samples(self):
        """Samples seen so far (global batch x optimizer steps)."""
        return self.global_step * self.conf.batch_size_effective

    def is_last_accum(self, batch_idx):
        return (batch_idx + 1) % self.conf.accum_batches == 0

    def train_dataloader(self):
        """Shuffled training batches (per process), in an order that a
        resumed run continues exactly (resumable_loader.ResumableSampler)."""
        if self.conf.train_mode.require_dataset_infer():
            if self.conds is None:
                raise RuntimeError(missing_latents_message(self.conf))
            validation.check_latents_match_data(self.conds, self.conf)
            print('latents:', tuple(self.conds.shape),
                  'mean of mean:', self.conds_mean.mean().item(),
                  'mean of std:', self.conds_std.mean().item())
            data, workers = TensorDataset(self.conds), 0
        else:
            data, workers = self.train_data, self.conf.num_workers
        if len(data) < self.conf.batch_size:
            raise ValueError(
                f'the training set has {len(data)} items, fewer than '
                f'conf.batch_size={self.conf.batch_size}')
        sampler = ResumableSampler(len(data), shuffle=True,
                                   seed=self.conf.seed or 0,
                                   rank=self.global_rank,
                                   world_size=get_world_size())
        self._train_loader = ResumableDataLoader(
            data, batch_size=self.batch_size, sampler=sampler,
            num_workers=workers, drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0)
        return self._train_loader

    def _step_generator(self, device, batch_idx):
        """The RNG of one training step's timesteps and noise, seeded by
        (seed, step): a resumed run draws what an uninterrupted one would,
        whatever the data loading consumed. (Outside a Trainer: the global
        RNG.)"""
        if self._trainer is None:
            return None
        step = self.global_step * self.conf.accum_batches + (
            batch_idx % self.conf.accum_batches)
        seed = ((self.conf.seed or 0) * 1_000_003 + step) * 4099
        return torch.Generator(device=device).manual_seed(seed)

    def _draw_t_noise(self, x_start, generator):
        """Timesteps and noise of this process's samples. Every process
        draws those of the whole global batch and keeps its own rows
        (rank r trains on rows r, r + world, ... of the global batch, see
        resumable_loader.ResumableSampler): the loss and gradients are those
        of one process with the global batch, on any number of
        processes."""
        world, rank = get_world_size(), self.global_rank
        n = len(x_start) * world
        t, _ = self.T_sampler.sample(n, x_start.device, generator=generator)
        noise = torch.randn((n, *x_start.shape[1:]), device=x_start.device,
                            dtype=x_start.dtype, generator=generator)
        if world == 1:
            return t, noise
        return t[rank::world], noise[rank::world].contiguous()

    def perceptual_net(self, device=None):
        """The frozen LPIPS network of the opt-in perceptual loss term
        (``conf.lpips_loss_weight > 0``, image decoder only), loaded once
        with ``metrics.load_lpips`` and moved to ``device``; None when the
        term is off. Kept outside the module tree on purpose: not in the
        state_dict (checkpoint keys stay official), the EMA, the optimizer
        or DDP's gradient buckets, and ``.train()`` leaves it in eval
        mode."""
        c = self.conf
        if c.lpips_loss_weight == 0 or c.train_mode != TrainMode.diffusion:
            return None
        net = self.__dict__.get('_lpips_loss_net')
        if net is None:
            path = c.lpips_loss_trunk_path
            if path is None and c.lpips_loss_net == 'alex':
                path = c.alexnet_weights_path
            try:
                net = metrics.load_lpips(path, net=c.lpips_loss_net,
                                         setting='conf.lpips_loss_trunk_path')
            except metrics.WeightsNotFoundError as e:
                raise metrics.WeightsNotFoundError(
                    f'conf.lpips_loss_weight={c.lpips_loss_weight} (the '
                    f'perceptual loss term) needs LPIPS({c.lpips_loss_net!r})'
                    f"'s trunk: {e}") from None
            object.__setattr__(self, '_lpips_loss_net', net)
        if device is not None and net.scaling_layer.shift.device != \
                torch.device(device):
            net.to(device)
        return net

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loader = getattr(self, '_train_loader', None)
        if loader is not None:
            loader.mark_consumed(batch_idx + 1)
        if self.conf.train_mode.require_dataset_infer():
            # the latent DPM on (z-normalised) z_sem
            x_start, model, sampler = batch[0], self.model.latent_net, \
                self.latent_sampler
            if self.conf.latent_znormalize:
                x_start = self.normalize(x_start)
        elif self.conf.train_mode == TrainMode.diffusion:
            # encoder + conditional UNet, by the denoising loss alone
            x_start, model, sampler = batch['img'].contiguous(
                memory_format=torch.channels_last), self.model, self.sampler
        else:
            raise NotImplementedError(self.conf.train_mode)
        t, noise = self._draw_t_noise(
            x_start, self._step_generator(x_start.device, batch_idx))
        losses = sampler.training_losses(
            model=model, x_start=x_start, t=t, noise=noise,
            perceptual=self.perceptual_net(x_start.device))
        loss = losses['loss'].mean()
        if 'lpips' in losses:
            self.log('lpips', losses['lpips'].mean())
        # remembered on the device: reading it here would stall every step
        self._nonfinite.note(loss, self.global_step)
        self.log('loss', loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if not self.is_last_accum(batch_idx):
            return
        # after the optimizer step of this batch
        if self.conf.train_mode.is_latent_diffusion():
            ema_update(self.model.latent_net, self.ema_model.latent_net,
                       self.conf.ema_decay)
        else:
            ema_update(self.model, self.ema_model, self.conf.ema_decay)
        if self.global_step % self._nonfinite.every == 0:
            self._check_finite()
        if self.conf.sample_every_samples > 0 and is_time(
                self.num_samples, self.conf.sample_every_samples,
                self.conf.batch_size_effective):
            self._check_finite()
            imgs = (None if self.conf.train_mode.require_dataset_infer() else
                    batch['img'])
            self.log_sample(x_start=imgs)
        self._maybe_evaluate()

    def _check_finite(self):
        """Stop (every process together) if a training loss since the
        start was not finite; one host read of the device-side record.
        Runs every ``NonFiniteWatch.every`` steps, before sample grids
        and before every checkpoint, so no checkpoint after the bad step
        is written."""
        bad_step, bad_loss = self._nonfinite.first_bad()
        finite = bad_step is None
        if self._trainer is not None and self.trainer.world_size > 1:
            # every process stops together (else the others would hang)
            finite = self.trainer.strategy.reduce_boolean_decision(finite,
                                                                   all=True)
        if finite:
            return
        where = (f'{bad_loss} at step {bad_step} '
                 f'({bad_step * self.conf.batch_size_effective} samples)'
                 if bad_step is not None else 'not finite on another '
                 'process')
        raise FloatingPointError(
            f'training loss is {where}; stopping at step '
            f'{self.global_step}. The last good checkpoint in '
            f'{self.conf.logdir} is kept. Try a lower conf.lr, '
            'conf.grad_clip > 0 or 32-bit precision.')

    def on_train_end(self):
        self._check_finite()

    def _maybe_evaluate(self):
        evaluation.evaluate_during_training(self)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.conf.optimizer == OptimizerType.adam:
            optim = torch.optim.Adam(params, lr=self.conf.lr,
                                     weight_decay=self.conf.weight_decay)
        elif self.conf.optimizer == OptimizerType.adamw:
            optim = torch.optim.AdamW(params, lr=self.conf.lr,
                                      weight_decay=self.conf.weight_decay)
        else:
            raise NotImplementedError(self.conf.optimizer)
        out = {'optimizer': optim}
        if self.conf.warmup > 0 or self.conf.lr_decay != 'none':
            factor = LRSchedule(
                self.conf.warmup, self.conf.lr_decay,
                self.conf.total_samples // self.conf.batch_size_effective,
                self.conf.lr_decay_final)
            sched = torch.optim.lr_scheduler.LambdaLR(optim,
                                                      lr_lambda=factor)
            out['lr_scheduler'] = {'scheduler': sched, 'interval': 'step'}
        return out

    def configure_model(self):
        # NHWC convolutions are faster with oneDNN (CPU, float32 and bf16:
        # the celeba64 UNet forward 0.65 s vs 0.72 s in float32, 2-core AMD
        # EPYC) and with cuDNN under autocast; values are unchanged. Done
        # before DDP wraps the model (this hook runs before it): converted
        # after, DDP handed every process the same wrong gradient for the
        # output conv (its buckets keep the old strides) and a resumed DDP
        # run took a different first step than an uninterrupted one
        if hardware.prefers_channels_last(self.device.type):
            self.model.to(memory_format=torch.channels_last)
            self.ema_model.to(memory_format=torch.channels_last)

    def on_save_checkpoint(self, checkpoint):
        # never a checkpoint of weights updated by a non-finite loss
        self._check_finite()
        # what the decoder's output means (hyper_parameters leave enums
        # out, as the reference does); a file without it predicts eps
        checkpoint[validation.TARGET_KEY] = \
            self.conf.beatgans_model_mean_type.value
        # RNG states, so that a resumed run continues the same random stream
        # (plain tensors and ints only: loadable with weights_only=True)
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint['rng_states'] = {
            'torch': torch.get_rng_state(),
            'numpy': [name, torch.from_numpy(keys.astype(np.int64)), pos,
                      has_gauss, gauss],
            'python': random.getstate(),
        }
        if torch.cuda.is_available():
            checkpoint['rng_states']['cuda'] = torch.cuda.get_rng_state_all()
        if self._trainer is not None and self.trainer.world_size > 1:
            # every process's own RNG (dropout differs per rank)
            every = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(every,
                                                checkpoint['rng_states'])
            checkpoint['rng_states_per_rank'] = every

    def on_load_checkpoint(self, checkpoint):
        self._resumed_rng = checkpoint.get('rng_states')
        self._resumed_rngs = checkpoint.get('rng_states_per_rank')
        # a resumed run trains with the config's lr, weight decay, warm-up,
        # ... (the optimizer state would keep the old ones): told, one
        # warning (validation.warn_resume_differences)
        changed = checkpoint_io.adopt_optimizer_settings(
            checkpoint, self.configure_optimizers())
        validation.warn_resume_differences(checkpoint, self.conf, changed)

    def on_train_start(self):
        rng = getattr(self, '_resumed_rng', None)
        rngs = getattr(self, '_resumed_rngs', None)
        if rngs and len(rngs) == self.trainer.world_size:
            rng = rngs[self.global_rank]
        if rng:
            torch.set_rng_state(rng['torch'].cpu())
            name, keys, pos, has_gauss, gauss = rng['numpy']
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos,
                                 has_gauss, gauss))
            random.setstate(rng['python'])
            if 'cuda' in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng['cuda'])
            self._resumed_rng = None

    # ------------------------------------------------------------------
    # sample grids
    # ------------------------------------------------------------------
    def split_tensor(self, x):
        """This rank's share of ``x`` (split along the batch)."""
        per_rank = len(x) // get_world_size()
        return x[self.global_rank * per_rank:(self.global_rank + 1) *
                 per_rank]

    @torch.no_grad()
    def log_sample(self, x_start=None):
        """Write sample grids (PNG under <logdir>/sample*/ and TensorBoard)
        from the fixed ``x_T``: unconditional samples for models that can
        sample, and reconstructions of the current batch for
        autoencoders."""
        c = self.conf
        grids = []
        if c.train_mode.require_dataset_infer():
            grids += [(self.model, '', False), (self.ema_model, '_ema', False)]
        elif c.model_type.has_autoenc():
            grids += [(self.model, '_enc', True),
                      (self.ema_model, '_enc_ema', True)]
        else:
            grids += [(self.model, '', False), (self.ema_model, '_ema', False)]
        for model, postfix, use_xstart in grids:
            self._sample_grid(model, postfix, use_xstart, x_start)

    def _sample_grid(self, model, postfix, use_xstart, x_start):
        with eval_mode(model):
            gen, real = self._grid_images(model, use_xstart, x_start)
        if not gen:
            return
        gen = all_gather_rows(torch.cat(gen))
        real = all_gather_rows(torch.cat(real)) if real else None
        if self.global_rank != 0:
            return
        sample_dir = os.path.join(self.conf.logdir, f'sample{postfix}')
        os.makedirs(sample_dir, exist_ok=True)
        if real is not None:
            # inputs above their reconstructions
            grid = make_grid(torch.cat([real, gen]).float(),
                             nrow=len(gen)) * 0.5 + 0.5
        else:
            grid = make_grid(gen.float()) * 0.5 + 0.5
        grid = grid.clamp(0, 1)
        save_image(grid, os.path.join(sample_dir, f'{self.num_samples}.png'))
        if self.logger is not None and hasattr(self.logger.experiment,
                                               'add_image'):
            self.logger.experiment.add_image(f'sample{postfix}', grid,
                                             self.num_samples)

    def _grid_images(self, model, use_xstart, x_start):
        """This rank's share of a sample grid from the fixed x_T: decoded
        images (and their inputs, for reconstructions), in [-1, 1]."""
        all_x_T = self.split_tensor(self.x_T)
        bs = max(1, min(len(all_x_T), self.conf.batch_size_eval))
        gen, real = [], []
        for i in range(0, len(all_x_T), bs):
            x_T = all_x_T[i:i + bs]
            if use_xstart:
                xs = x_start[i:i + len(x_T)]
                x_T = x_T[:len(xs)]
                if len(xs) == 0:
                    break
                gen.append(self.eval_sampler.sample(model=model, noise=x_T,
                                                    x_start=xs))
                real.append(xs)
            elif self.conf.train_mode.is_latent_diffusion():
                gen.append(renderer.render_uncondition(
                    self.conf, model, x_T, sampler=self.eval_sampler,
                    latent_sampler=self.eval_latent_sampler,
                    conds_mean=self.conds_mean, conds_std=self.conds_std))
            else:
                gen.append(self.eval_sampler.sample(model=model, noise=x_T))
        return gen, real

    # ------------------------------------------------------------------
    # eval programs (train(conf, gpus, mode='eval'))
    # ------------------------------------------------------------------
    def test_step(self, batch, batch_idx):
        if batch_idx != 0:
            return
        for name, value in evaluation.run_programs(self).items():
            self.log(name, value, rank_zero_only=True)

    def infer_whole_dataset(self, with_render=False, T_render=None,
                            render_save_path=None):
        """z_sem of every image of the training set, in dataset order
        (also under DDP), as a float32 (N, C) tensor on the CPU."""
        return evaluation.infer_whole_dataset(self, with_render, T_render,
                                              render_save_path)


def choose_resume(conf: TrainConfig) -> Optional[str]:
    """The checkpoint a training run continues from: ``<logdir>/last.ckpt``,
    else the newest intact checkpoint of the run folder (said loudly), else
    ``conf.continue_from`` when it exists; None starts from scratch. Warns
    when the checkpoint was trained with other settings."""
    resume = checkpoint_io.find_resume_checkpoint(conf.logdir)
    if resume is not None:
        print('resuming from', resume)
        validation.warn_if_hparams_differ(resume, conf)
        return resume
    if conf.continue_from is None:
        return None
    path = conf.continue_from.path
    if not os.path.exists(path):
        warnings.warn(f'conf.continue_from={path} does not exist: starting '
                      'from scratch')
        return None
    validation.warn_if_hparams_differ(checkpoint_io.load_checkpoint(
        path, mmap=True, what='conf.continue_from'), conf,
        f'conf.continue_from {path}')
    return path


def make_trainer(conf: TrainConfig, accelerator, devices, nodes, n_proc,
                 precision: Optional[str] = None,
                 max_steps: Optional[int] = None, callbacks=(),
                 **trainer_kwargs) -> pl.Trainer:
    """The Lightning Trainer of a run: checkpoints every
    conf.save_every_samples into ``conf.logdir`` (``last.ckpt`` always
    overwritten atomically, earlier files never deleted), TensorBoard logs
    there too, DDP over several processes, the precision this hardware
    runs fastest unless asked, a whole-run progress bar with ETA."""
    os.makedirs(conf.logdir, exist_ok=True)
    every = max(1, conf.save_every_samples // conf.batch_size_effective)
    # no version counter: after the run folder moved, Lightning would
    # write last-v1.ckpt and the next rerun resume from a stale last.ckpt
    checkpoint = checkpoint_io.run_checkpoint_callback(
        dirpath=conf.logdir, save_last=True, save_top_k=1,
        every_n_train_steps=every, enable_version_counter=False)
    own_bar = trainer_kwargs.get('enable_progress_bar') is False or any(
        isinstance(c, TQDMProgressBar) for c in callbacks)
    return pl.Trainer(
        max_steps=max_steps or conf.total_samples // conf.batch_size_effective,
        accelerator=accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy=(DDPStrategy(find_unused_parameters=False) if n_proc > 1
                  else 'auto'),
        precision=resolve_precision(conf, accelerator, precision),
        callbacks=[checkpoint, LearningRateMonitor(), *callbacks,
                   *([] if own_bar else [StepProgressBar()])],
        # saved next to the target, fsynced, renamed: atomic on any
        # filesystem (Lightning's own writer is not across filesystems)
        plugins=[checkpoint_io.atomic_checkpoint_io()],
        logger=pl_loggers.TensorBoardLogger(save_dir=conf.logdir, name='',
                                            version=''),
        accumulate_grad_batches=conf.accum_batches,
        gradient_clip_val=conf.grad_clip if conf.grad_clip > 0 else None,
        gradient_clip_algorithm='norm',
        # the training loader shards itself (resumable_loader)
        use_distributed_sampler=False,
        **trainer_kwargs,
    )


def evaluate(conf: TrainConfig, trainer: pl.Trainer, n_proc: int,
             model: Optional[LitModel] = None) -> dict:
    """Run ``conf.eval_programs`` on the checkpoint ``conf.eval_path``
    (default ``<logdir>/last.ckpt``) on every process of ``trainer``;
    results go to TensorBoard and are appended to ``evals/<name>.txt``."""
    evaluation.parse_programs(conf.eval_programs)
    model = model or LitModel(conf)
    eval_path = conf.eval_path or os.path.join(conf.logdir, 'last.ckpt')
    print('loading from:', eval_path)
    state = validation.load_verified(model, conf, eval_path, what='eval_path')
    # a one-batch loader so that test_step runs once on every process
    dummy = DataLoader(TensorDataset(torch.zeros(n_proc)), batch_size=1)
    out = trainer.test(model, dataloaders=dummy, verbose=False)
    out = out[0] if out else {}
    if trainer.global_rank == 0:
        step = state.get('global_step', 0)
        for k, v in out.items():
            trainer.logger.experiment.add_scalar(
                k, v, step * conf.batch_size_effective)
        os.makedirs('evals', exist_ok=True)
        with open(f'evals/{conf.name}.txt', 'a') as f:
            f.write(json.dumps(out) + '\n')
    return out


def train(conf: TrainConfig, gpus, nodes=1, mode: str = 'train',
          precision: Optional[str] = None, accelerator: Optional[str] = None,
          max_steps: Optional[int] = None, callbacks=(), **trainer_kwargs):
    """Train (``mode='train'``) or run ``conf.eval_programs``
    (``mode='eval'``, see :func:`evaluate`), as the official ``train``.

    gpus: GPU ids (list) or a count. Without CUDA the run is on the CPU: one
        process, or ``len(gpus)`` gloo processes with accelerator='cpu'.
    nodes: number of machines (DDP across nodes, e.g. under SLURM).
        Started by srun or torchrun, the run uses the processes the
        launcher started (one per GPU; see launcher.py and the README).
    precision: Lightning precision, e.g. 'bf16-mixed'; default
        conf.precision ('auto': what this hardware runs fastest, see
        hardware.py).
    max_steps: stop earlier than conf.total_samples (for tests/demos).
    A training run resumes as :func:`choose_resume` says.
    """
    print('conf:', conf.name)
    if mode not in ('train', 'eval'):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    validation.check_train_conf(conf, mode)
    if mode == 'eval':
        if not conf.eval_programs:
            raise ValueError("mode='eval' needs conf.eval_programs, e.g. "
                             "['infer'] or ['fid(10,10)']")
        evaluation.parse_programs(conf.eval_programs)  # typos fail first
    accelerator, devices, nodes, n_proc = resolve_processes(
        conf, gpus, nodes, accelerator)
    if accelerator == 'gpu':
        rank_zero_info(hardware.configure_gpu_math(conf.tf32,
                                                   conf.cudnn_benchmark))
    # one run per run folder (a re-submitted job stops here at once)
    with (run_lock.run_folder_lock(conf.logdir) if mode == 'train' else
          contextlib.nullcontext()):
        model = LitModel(conf)
        trainer = make_trainer(conf, accelerator, devices, nodes, n_proc,
                               precision, max_steps, callbacks,
                               **trainer_kwargs)
        if mode == 'eval':
            return evaluate(conf, trainer, n_proc, model)
        trainer.fit(model, ckpt_path=choose_resume(conf))
    return model


__all__ = ['LitModel', 'train', 'evaluate', 'ema_update', 'WarmupLR',
           'LRSchedule',
           'is_time', 'resolve_devices', 'resolve_precision',
           'resolve_processes', 'choose_resume', 'make_trainer',
           'StepProgressBar', 'NonFiniteWatch']
