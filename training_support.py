"""What training needs besides the Lightning module: the EMA update, the
non-finite-loss watch, the learning-rate schedule, the whole-run progress
bar, and the choice of devices, processes and precision for a run. Used
by ``experiment.py`` (the DiffAE) and ``experiment_classifier.py`` (the
attribute classifier); ``experiment`` re-exports every name, as
before."""
import math
import warnings
from typing import Optional

import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_info

import hardware
import launcher
from config import TrainConfig


def _float_tensors(module: torch.nn.Module):
    # parameters() visits a tensor shared by two modules once (the latent
    # net's linear_emb / cond_layers.1), so each weight decays once
    return [p.data for p in module.parameters()] + [
        b for b in module.buffers() if b.is_floating_point()
    ]


@torch.no_grad()
def ema_update(source: torch.nn.Module, target: torch.nn.Module,
               decay: float):
    """target <- decay * target + (1 - decay) * source for every
    floating-point parameter and buffer, in one fused foreach op."""
    src, tgt = _float_tensors(source), _float_tensors(target)
    assert len(src) == len(tgt), 'EMA model does not mirror the model'
    torch._foreach_lerp_(tgt, src, 1 - decay)


class NonFiniteWatch:
    """The first training step whose loss is not finite, kept on the
    loss's device: ``note`` queues two tiny device ops and never waits for
    the GPU; ``first_bad`` reads the record on the host (one sync), which
    LitModel does every ``every`` optimizer steps and before writing
    anything (the official code has no such check)."""

    every = 100

    def __init__(self):
        self.step = None  # -1 while every loss was finite
        self.loss = None

    def note(self, loss: torch.Tensor, step: int):
        loss = loss.detach().float()
        if self.step is None or self.step.device != loss.device:
            self.step = torch.full((), -1, dtype=torch.long,
                                   device=loss.device)
            self.loss = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss, self.loss)

    def first_bad(self):
        """(step, loss) of the first non-finite loss, or (None, None)."""
        if self.step is None or int(self.step) < 0:
            return None, None
        return int(self.step), float(self.loss)


class WarmupLR:
    """Linear learning-rate warm-up over ``warmup`` steps (the official
    schedule: constant afterwards)."""

    def __init__(self, warmup) -> None:
        self.warmup = warmup

    def __call__(self, step):
        return min(step, self.warmup) / self.warmup


class LRSchedule:
    """The learning-rate factor at an optimizer step: the official linear
    warm-up over ``warmup`` steps, then constant (``decay='none'``) or a
    half cosine from 1 down to ``final`` at step ``total`` (``'cosine'``,
    opt-in), and ``final`` past it."""

    def __init__(self, warmup: int, decay: str = 'none', total: int = 0,
                 final: float = 0.0) -> None:
        if decay not in ('none', 'cosine'):
            raise ValueError(f"lr_decay must be 'none' or 'cosine', got "
                             f"{decay!r}")
        if decay != 'none' and total <= warmup:
            raise ValueError(f'lr_decay={decay!r} needs total_samples '
                             f'beyond the warm-up ({total} steps <= '
                             f'warmup {warmup})')
        self.warmup, self.decay = warmup, decay
        self.total, self.final = total, final

    def __call__(self, step):
        if step < self.warmup:
            return step / self.warmup
        if self.decay == 'none':
            return 1.0
        done = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (
            1 + math.cos(math.pi * done))


class StepProgressBar(TQDMProgressBar):
    """One training bar over the whole run: the global step out of
    ``max_steps``, with its rate and ETA (Lightning's own bar restarts at
    every epoch and, on an endless sampler, shows no total). A resumed run
    starts the bar at its step, so the ETA counts only the steps left."""

    def _whole_run(self, trainer):
        bar = self.train_progress_bar
        if bar is not None and bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.n = bar.last_print_n = bar.initial = trainer.global_step

    def on_train_start(self, trainer, *args):
        super().on_train_start(trainer, *args)
        self._whole_run(trainer)
        self.train_progress_bar.set_description('Training step')

    def on_train_epoch_start(self, trainer, *_):
        # (a run resumed mid-epoch may skip this hook)
        self._whole_run(trainer)
        self.train_progress_bar.set_description(
            f'Epoch {trainer.current_epoch} step')

    def on_train_batch_end(self, trainer, pl_module, outputs, batch,
                           batch_idx):
        bar, n = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            bar.n = n
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))


def resolve_devices(gpus, accelerator: Optional[str] = None):
    """(accelerator, devices) for ``gpus`` on this machine."""
    if isinstance(gpus, int):
        gpus = list(range(gpus))
    gpus = list(gpus)
    if accelerator is None:
        accelerator = 'gpu' if torch.cuda.is_available() else 'cpu'
    if accelerator == 'gpu':
        n = torch.cuda.device_count()
        bad = [g for g in gpus if g >= n]
        if bad:
            raise ValueError(
                f'gpus={gpus} asks for GPU(s) {bad} but this machine has {n} '
                f'(valid ids: {list(range(n))})')
        return 'gpu', gpus
    if accelerator == 'cpu':
        return 'cpu', max(1, len(gpus))
    raise ValueError(f"accelerator must be 'gpu' or 'cpu', got {accelerator}")


def resolve_precision(conf: TrainConfig, accelerator: str,
                      precision: Optional[str] = None):
    """Lightning precision for this run (``hardware.choose_precision``):
    an explicit ``precision`` wins, then ``conf.precision`` unless 'auto';
    'auto' picks what this hardware runs fastest. Says once what it chose
    and why."""
    chosen, why = hardware.choose_precision(
        getattr(conf, 'precision', None), conf.fp16, accelerator, precision)
    rank_zero_info(f'precision: {chosen} ({why})')
    return chosen


def resolve_processes(conf: TrainConfig, gpus, nodes=1,
                      accelerator: Optional[str] = None):
    """(accelerator, devices, nodes, processes) of a run: the GPUs asked
    for, the CPU without CUDA (one process, or ``len(gpus)`` gloo
    processes with accelerator='cpu'), or under srun/torchrun the processes
    the launcher started. The global batch must divide over them."""
    if accelerator is None and not torch.cuda.is_available() and \
            launcher.detect():
        accelerator = 'cpu'  # srun/torchrun started CPU (gloo) processes
    if accelerator is None and not torch.cuda.is_available():
        n_asked = gpus if isinstance(gpus, int) else len(gpus)
        if n_asked > 1:
            warnings.warn(f'no GPU found: training on the CPU in one '
                          f'process instead of gpus={gpus} (pass '
                          f"accelerator='cpu' for {n_asked} CPU processes)")
        gpus = [0]
    accelerator, devices = resolve_devices(gpus, accelerator)
    devices, nodes = launcher.fit_to_launcher(accelerator, devices, nodes)
    n_proc = (len(devices) if isinstance(devices, list) else devices) * nodes
    if conf.batch_size % n_proc:
        raise ValueError(
            f'conf.batch_size={conf.batch_size} (global) is not divisible by '
            f'the {n_proc} processes ({devices} x {nodes} nodes)')
    return accelerator, devices, nodes, n_proc



__all__ = ['ema_update', 'NonFiniteWatch', 'WarmupLR', 'LRSchedule',
           'StepProgressBar', 'resolve_devices', 'resolve_precision',
           'resolve_processes']
