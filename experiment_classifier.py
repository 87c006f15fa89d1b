"""The linear attribute classifier on z_sem (``ClsModel``, ``train_cls``),
used for attribute manipulation.

The classifier sees z-normalised z_sem of the frozen EMA encoder. Unlike the
reference, which re-encodes (flip-augmented) images at every step, the
labelled images are encoded once and the classifier trains on those latents:
the encoder is frozen, so this is the same objective without the flips, and
hundreds of times cheaper.
"""
import copy
import os
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning import loggers as pl_loggers
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import checkpoint_io
import data_registry
import launcher
import run_lock
import weights_file
from choices import ManipulateLossType
from config import TrainConfig
# attribute_names: the labels of a manipulate_mode (data_registry.py)
from data_registry import attribute_names
from inference import DiffAE
from tensor_util import zdenormalize, znormalize
from training_support import ema_update, resolve_devices
from validation import load_latents


class ClsModel(pl.LightningModule):
    """Linear classifier z_sem -> attribute logits, with its EMA copy.

    ``normalize``/``denormalize`` map z_sem to and from the normalised
    space the classifier works in (statistics of ``conf.latent_infer_path``).
    """

    def __init__(self, conf: TrainConfig):
        super().__init__()
        if not conf.train_mode.is_manipulate():
            raise ValueError('ClsModel needs a classifier template '
                             '(train_mode=manipulate), see templates_cls.py')
        if conf.seed is not None:
            pl.seed_everything(conf.seed, verbose=False)
        self.save_hyperparameters(conf.as_dict_jsonable())
        self.conf = conf
        # the frozen autoencoder (inference.DiffAE of conf.pretrain) only
        # encodes the training images: loaded by setup() for training, not
        # part of the classifier or its checkpoints
        self.autoencoder = None

        if conf.manipulate_znormalize:
            path = conf.latent_infer_path
            if path is not None and os.path.exists(path):
                state = load_latents(path, conf.style_ch)
                mean, std = state['conds_mean'], state['conds_std']
            else:
                # filled by the classifier checkpoint's buffers
                mean = torch.zeros(conf.style_ch)
                std = torch.ones(conf.style_ch)
                self._missing_stats = path
            self.register_buffer('conds_mean', mean.reshape(1, -1).float())
            self.register_buffer('conds_std', std.reshape(1, -1).float())
        else:
            self.conds_mean = None
            self.conds_std = None

        self.id_to_cls = attribute_names(conf.manipulate_mode,
                                         conf.manipulate_cls)
        self.classifier = nn.Linear(conf.style_ch, len(self.id_to_cls))
        self.ema_classifier = copy.deepcopy(self.classifier)

    @classmethod
    def from_checkpoint(cls, conf: Optional[TrainConfig] = None,
                        path: Optional[str] = None) -> 'ClsModel':
        """The classifier of template ``conf`` with the weights of
        ``path`` (default ``<logdir>/last.ckpt``), verified, in eval
        mode. ``path`` may be a ``.safetensors`` file of
        :func:`export_classifier`: its metadata rebuilds the config (a
        ``conf`` given with it must agree)."""
        conf, path, is_file = weights_file.resolve_source(
            conf, path, 'classifier template')
        if is_file:
            conf, state, _ = weights_file.read_weights(path, conf,
                                                       'classifier')
        else:
            path = path or os.path.join(conf.logdir, 'last.ckpt')
            state = checkpoint_io.load_checkpoint(path)['state_dict']
        model = cls(conf)
        model.load_state_dict(state)
        model.source = path
        return model.eval()

    def load_autoencoder(self, path):
        """The frozen autoencoder (EMA weights of its checkpoint) that
        encodes the training images."""
        conf = self.conf.clone()
        conf.latent_infer_path = None
        # the official numerics: z_sem for training as the reference infers it
        self.autoencoder = DiffAE.from_checkpoint(
            conf, path, precision=None).to(self.device)

    # -- checkpoints hold the classifier only ---------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign=False):
        """Loads a classifier checkpoint (which holds no autoencoder);
        every classifier key must match (strict or not)."""
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.startswith(('model.', 'ema_model.'))}
        checkpoint_io.load_state_verified(
            _ClassifierView(self), state_dict,
            source='classifier checkpoint')
        self._missing_stats = None
        return super().load_state_dict(state_dict, strict=False,
                                       assign=assign)

    # -- the notebook API ------------------------------------------------
    def normalize(self, cond):
        return znormalize(cond, self.conds_mean, self.conds_std)

    def denormalize(self, cond):
        return zdenormalize(cond, self.conds_mean, self.conds_std)

    def direction(self, cls_name: str) -> torch.Tensor:
        """The classifier weight of attribute ``cls_name`` (normalised
        space), to move z_sem along."""
        if cls_name not in self.id_to_cls:
            raise KeyError(f'unknown attribute {cls_name!r}; this classifier '
                           f'knows {self.id_to_cls}')
        return self.classifier.weight[self.id_to_cls.index(cls_name)]

    # -- training --------------------------------------------------------
    def load_dataset(self):
        """The labelled images of conf.manipulate_mode (data_registry)."""
        return data_registry.make_attr_dataset(self.conf)

    @torch.no_grad()
    def encode_dataset(self, data, batch_size=64):
        """(z_sem, labels) of a labelled image dataset."""
        loader = DataLoader(data, batch_size=batch_size, shuffle=False,
                            num_workers=0)
        conds, labels = [], []
        for batch in loader:
            conds.append(self.autoencoder.encode(batch['img'].to(
                self.device)).float().cpu())
            labels.append(batch['labels'].reshape(len(batch['img']), -1))
        return torch.cat(conds), torch.cat(labels)

    def setup(self, stage=None):
        if stage not in (None, 'fit'):
            return
        if getattr(self, '_missing_stats', None):
            raise FileNotFoundError(
                f'the classifier needs z_sem statistics from '
                f'{self._missing_stats!r}: run the infer eval program on the '
                "autoencoder first (conf.eval_programs = ['infer']; "
                "train(conf, gpus, mode='eval'))")
        if self.autoencoder is None:
            path = self.conf.pretrain.path if self.conf.pretrain else None
            if not path or not os.path.exists(path):
                raise FileNotFoundError(
                    f'the classifier trains on z_sem of its autoencoder, '
                    f'conf.pretrain = {path!r}, which does not exist: train '
                    'the autoencoder template first (or point '
                    'conf.pretrain.path at its last.ckpt)')
            self.load_autoencoder(path)
        conds, labels = self.encode_dataset(self.load_dataset())
        self.train_data = TensorDataset(conds, labels)

    def train_dataloader(self):
        return DataLoader(self.train_data, batch_size=self.conf.batch_size,
                          shuffle=True, drop_last=len(self.train_data) >
                          self.conf.batch_size)

    def training_step(self, batch, batch_idx):
        cond, labels = batch
        cond = self.normalize(cond.to(self.device))
        # labels are +-1 (CelebA style): 1 -> positive
        gt = (labels > 0).float()
        pred = self.classifier(cond)
        pred_ema = self.ema_classifier(cond)
        if self.conf.manipulate_loss == ManipulateLossType.bce:
            loss = F.binary_cross_entropy_with_logits(pred, gt)
            loss_ema = F.binary_cross_entropy_with_logits(pred_ema, gt)
        elif self.conf.manipulate_loss == ManipulateLossType.mse:
            loss = F.mse_loss(pred, gt)
            loss_ema = F.mse_loss(pred_ema, gt)
        else:
            raise NotImplementedError(self.conf.manipulate_loss)
        self.log('loss', loss, prog_bar=True)
        self.log('loss_ema', loss_ema)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        ema_update(self.classifier, self.ema_classifier, self.conf.ema_decay)

    def configure_optimizers(self):
        return torch.optim.Adam(self.classifier.parameters(), lr=self.conf.lr,
                                weight_decay=self.conf.weight_decay)


def export_classifier(conf: TrainConfig, out, ckpt: Optional[str] = None
                      ) -> dict:
    """Write the classifier of checkpoint ``ckpt`` (default
    ``<logdir>/last.ckpt``) of template ``conf`` to the safetensors file
    ``out``: ``classifier.*`` (what ``direction`` reads, as the official
    manipulate notebook), ``ema_classifier.*`` and the z_sem statistics;
    the config in the metadata (weights_file.py). Returns the metadata."""
    model = ClsModel.from_checkpoint(conf, ckpt)
    view = _ClassifierView(model)
    return weights_file.write_weights(
        out, view.state_dict(), model.conf, 'classifier', model.source,
        latent_stats=model.conds_mean is not None)


class _ClassifierView(nn.Module):
    """The parts of a ClsModel that its checkpoints hold."""

    def __init__(self, cls_model: ClsModel):
        super().__init__()
        self.classifier = cls_model.classifier
        self.ema_classifier = cls_model.ema_classifier
        if cls_model.conds_mean is not None:
            self.register_buffer('conds_mean', cls_model.conds_mean)
            self.register_buffer('conds_std', cls_model.conds_std)


def train_cls(conf: TrainConfig, gpus, precision: Optional[str] = None,
              accelerator: Optional[str] = None,
              max_steps: Optional[int] = None):
    """Train the attribute classifier (as the official ``train_cls``);
    checkpoints go to ``<logdir>/last.ckpt``."""
    print('conf:', conf.name)
    launcher.require_single_process('train_cls')
    if accelerator is None and not torch.cuda.is_available():
        gpus = [0]
    accelerator, devices = resolve_devices(gpus, accelerator)
    model = ClsModel(conf)
    os.makedirs(conf.logdir, exist_ok=True)
    checkpoint = ModelCheckpoint(dirpath=conf.logdir, save_last=True,
                                 save_top_k=1, enable_version_counter=False)
    checkpoint_path = os.path.join(conf.logdir, 'last.ckpt')
    resume = checkpoint_path if os.path.exists(checkpoint_path) else None
    trainer = pl.Trainer(
        max_steps=max_steps or conf.total_samples // conf.batch_size_effective,
        accelerator=accelerator, devices=devices,
        precision=precision or '32-true', callbacks=[checkpoint],
        logger=pl_loggers.TensorBoardLogger(save_dir=conf.logdir, name='',
                                            version=''),
        accumulate_grad_batches=conf.accum_batches,
        plugins=[checkpoint_io.atomic_checkpoint_io()])
    with run_lock.run_folder_lock(conf.logdir):
        trainer.fit(model, ckpt_path=resume)
    return model


__all__ = ['ClsModel', 'train_cls', 'attribute_names']
