"""A trained DiffAE as the paper uses it: encode images into z_sem (and the
stochastic x_T), decode (z_sem, x_T) back into images, sample new ones
through the latent DPM. Always through the EMA model, as the official
notebooks do.

``DiffAE`` is what rendering, evaluation, the classifier, the command line,
the web page and the demo take. ``LitModel.encode`` / ``render`` / ... (the
official notebook API) delegate to the ``DiffAE`` of the LitModel, so both
give the same numbers. Image ranges: inputs in [-1, 1]; ``render`` and
``sample`` return [0, 1] (as the reference).

    model = DiffAE.from_checkpoint(ffhq256_autoenc())  # checkpoints/<name>/
    cond = model.encode(x)                             # z_sem (N, 512)
    xT = model.encode_stochastic(x, cond, T=250)
    img = model.render(xT, cond, T=20)
"""
import functools
import os
import warnings
from typing import Optional

import torch
from torch import nn

import checkpoint_io
import hardware
import inference_precision
import renderer
import validation
from choices import GenerativeType
import weights_file
from config import TrainConfig
from dataset import make_transform
from dataset_util import to_rgb
from diffusion import Sampler
from tensor_util import eval_mode, zdenormalize, znormalize
from validation import missing_latents_message


def to_model_input(img, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) tensor in [-1, 1]: resized and
    center-cropped to ``size`` (the datasets' own transform, no flip)."""
    return make_transform(size, flip_prob=0)(to_rgb(img))


# the front-ends (CLI, web page) sample with DPM-Solver++(2M) in the
# machine's fast precision; ``steps_matching_ddim`` turns their former DDIM
# step counts into the new solver's (docs/solver.md has the curves)
FRONT_END_SOLVER = 'dpmpp_2m'


def add_front_end_arguments(parser):
    """--solver and --precision of the CLI and the web page."""
    parser.add_argument('--solver', default=FRONT_END_SOLVER,
                        choices=['dpmpp_2m', 'ddim'],
                        help='ODE solver (default dpmpp_2m, DPM-Solver++(2M);'
                        ' ddim: the official sampler)')
    parser.add_argument('--precision', default='auto',
                        choices=['auto', 'official', '32-true', 'bf16-mixed',
                                 '16-mixed'],
                        help="'auto': what this machine runs fastest "
                        "(hardware.py); 'official': float32 as the "
                        'reference code')


def front_end_precision(arg: str) -> Optional[str]:
    """DiffAE's precision for a --precision value ('official': None)."""
    return None if arg == 'official' else arg


def steps_matching_ddim(solver, ddim_steps: int, latent: bool = False
                        ) -> int:
    """The steps at which ``solver`` is at least as close to the converged
    ODE solution as DDIM at ``ddim_steps``, measured on the demo's and the
    scenes' models (docs/solver.md). DPM-Solver++(2M) on the image: a
    third, rounded up, and never under 7 (nor over ``ddim_steps``): 20 ->
    7, 50 -> 17, 100 -> 34 (10 -> 7: at 5 steps 2M was farther than DDIM
    at 10 on the scenes). The latent DPM keeps its count (``latent``: 2M
    is then about 40-50x closer than DDIM at 20 and 50 steps, and the
    MLP's steps cost little next to the UNet's). DDIM (and DDPM) keep
    their count."""
    if solver_type(solver) == GenerativeType.dpmpp_2m and not latent:
        return min(ddim_steps, max(7, -(-ddim_steps // 3)))
    return ddim_steps


def _with_numerics(pixels):
    """Run a DiffAE method without gradients in the model's precision
    (DiffAE.numerics) for a call of ``pixels(self, *args, **kwargs)``
    pixels (batch x height x width); a half-precision tensor result comes
    back as float32 (z_sem, images)."""
    def wrap(method):
        @functools.wraps(method)
        def wrapped(self, *args, **kwargs):
            with torch.no_grad(), self.numerics(
                    pixels(self, *args, **kwargs)):
                out = method(self, *args, **kwargs)
            if torch.is_tensor(out) and out.dtype in (torch.bfloat16,
                                                       torch.float16):
                out = out.float()
            return out
        return wrapped
    return wrap


def _image_pixels(self, x, *args, **kwargs):
    """Pixels of a call on a batch of images (or x_T) ``x``."""
    return x.shape[0] * x.shape[-2] * x.shape[-1]


def _sample_pixels(self, N, *args, **kwargs):
    return N * self.conf.img_size**2


def _interpolate_pixels(self, cond_a, xT_a, cond_b, xT_b, alphas, *args,
                        **kwargs):
    return len(alphas) * xT_a.shape[-2] * xT_a.shape[-1]


def solver_type(solver) -> Optional[GenerativeType]:
    """``solver`` (None, a GenerativeType or its value) as a
    GenerativeType; a clear error for an unknown name."""
    if solver is None or isinstance(solver, GenerativeType):
        return solver
    try:
        return GenerativeType(solver)
    except ValueError:
        raise ValueError(
            f'unknown solver {solver!r}: use one of '
            f'{[g.value for g in GenerativeType]}') from None


class DiffAEWeights(nn.Module):
    """What inference needs of a checkpoint: the EMA model and the z_sem
    statistics of a latent model. Its state-dict keys are those of the
    official checkpoints (``ema_model.*``, ``conds_mean``, ``conds_std``),
    so it loads from ``last.ckpt`` directly."""

    def __init__(self, conf: TrainConfig, latent_stats: Optional[bool] = None):
        super().__init__()
        self.ema_model = conf.make_model_conf().make_model()
        self.ema_model.requires_grad_(False)
        self.ema_model.eval()
        if conf.compile:
            # in place: the keys stay those of the checkpoints
            hardware.compile_in_place(self.ema_model, conf.compile_backend)
        # (None: the template's; a weights file says whether it has them)
        if latent_stats is None:
            latent_stats = conf.latent_infer_path is not None
        if latent_stats:
            nan = torch.full((1, conf.style_ch), float('nan'))
            self.register_buffer('conds_mean', nan.clone())
            self.register_buffer('conds_std', nan.clone())


def _ema_keys(weights: DiffAEWeights):
    """Which keys of a checkpoint's state dict template ``weights`` uses:
    the EMA model and the latent statistics. A latent model's checkpoint
    also serves as a plain autoencoder (its latent net and statistics are
    then left out), as the official pretrain does."""
    drop = () if hasattr(weights.ema_model, 'latent_net') else (
        'ema_model.latent_net.', )
    stats = {'conds_mean', 'conds_std'} & set(weights.state_dict())
    return lambda k: k in stats or k.startswith('ema_model.') and \
        not k.startswith(drop)


class DiffAE:
    """Encoder, decoder and samplers of a trained DiffAE (or DDIM) model.

    ``weights`` is the module that owns ``ema_model`` (and ``conds_mean``
    / ``conds_std`` for latent models): a ``DiffAEWeights`` or a
    ``LitModel``; they are read at every call, so moving or reloading the
    owner is seen here."""

    def __init__(self, conf: TrainConfig, weights: nn.Module,
                 precision: Optional[str] = None, solver=None):
        """``precision``: None keeps the official numerics (LitModel's
        notebook methods), 'auto' runs what hardware.py picks for the
        device (with channels_last where it pays), or a Lightning
        precision string (see inference_precision). ``solver``: the
        default of every method's ``solver`` (None: the config's)."""
        self.conf = conf
        self.weights = weights
        self.precision = inference_precision.check_precision(precision)
        self.solver = solver_type(solver)
        self._numerics_chosen = {}
        self.eval_sampler = conf.make_eval_diffusion_conf().make_sampler()
        self.eval_latent_sampler = (
            conf.make_latent_eval_diffusion_conf().make_sampler()
            if conf.train_mode.use_latent_net() else None)

    @classmethod
    def from_checkpoint(cls, conf: Optional[TrainConfig] = None,
                        path: Optional[str] = None,
                        map_location='cpu', precision: Optional[str] = 'auto',
                        solver=None) -> 'DiffAE':
        """The model of template ``conf`` with the EMA weights (and latent
        statistics) of ``path`` (default ``<logdir>/last.ckpt``), every key
        verified; the training-only weights are not loaded. It runs in the
        machine's fast ``precision`` unless told otherwise (None: the
        official float32); ``solver`` is every method's default.

        ``path`` may be a ``.safetensors`` file of :func:`export_weights`
        (``DiffAE.from_checkpoint('model.safetensors')``): its metadata
        rebuilds the config; a ``conf`` given with it must agree (else the
        fields that differ are listed)."""
        conf, path, is_file = weights_file.resolve_source(conf, path)
        if is_file:
            given = conf
            conf, state, meta = weights_file.read_weights(
                path, conf, 'autoencoder', map_location)
            weights = DiffAEWeights(conf, None if given is not None else
                                    meta.get('latent_stats') == 'yes')
            checkpoint_io.load_state_verified(
                weights, state, source=f'weights file {path}')
        else:
            path = path or os.path.join(conf.logdir, 'last.ckpt')
            weights = DiffAEWeights(conf)
            validation.load_verified(weights, conf, path, map_location,
                                     keep=_ema_keys(weights))
        model = cls(conf, weights, precision=precision, solver=solver)
        model.source = path
        return model

    # -- the weights -----------------------------------------------------
    @property
    def ema_model(self) -> nn.Module:
        return self.weights.ema_model

    @property
    def conds_mean(self) -> Optional[torch.Tensor]:
        return getattr(self.weights, 'conds_mean', None)

    @property
    def conds_std(self) -> Optional[torch.Tensor]:
        return getattr(self.weights, 'conds_std', None)

    @property
    def device(self) -> torch.device:
        return next(self.ema_model.parameters()).device

    def to(self, device) -> 'DiffAE':
        self.weights.to(device)
        return self

    def check_latent_stats(self):
        """Raise with what to run when a latent model lacks its z_sem
        statistics (``latent.pkl``)."""
        c = self.conf
        if c.train_mode.use_latent_net() and c.latent_znormalize:
            if self.conds_mean is None or torch.isnan(self.conds_mean).any():
                raise RuntimeError(missing_latents_message(c))

    # -- samplers ----------------------------------------------------------
    def sampler(self, T: Optional[int] = None, solver=None) -> Sampler:
        """The image sampler of ``T`` steps (None: conf.T_eval) with
        ``solver`` (a GenerativeType or its value, e.g. 'dpmpp_2m'; None:
        conf.beatgans_gen_type, the official DDIM)."""
        solver = solver or self.solver
        if T is None and solver is None:
            return self.eval_sampler
        return self.conf.make_diffusion_conf(
            T or self.conf.T_eval, gen_type=solver_type(solver)).make_sampler()

    def latent_sampler(self, T: Optional[int] = None,
                       solver=None) -> Sampler:
        """The latent DPM's sampler of ``T`` steps (None:
        conf.latent_T_eval) with ``solver`` (None: conf.latent_gen_type)."""
        solver = solver or self.solver
        if T is None and solver is None:
            return self.eval_latent_sampler
        return self.conf.make_latent_diffusion_conf(
            T or self.conf.latent_T_eval,
            gen_type=solver_type(solver)).make_sampler()

    # -- numerics ------------------------------------------------------------
    def numerics(self, pixels: Optional[int] = None):
        """The autocast context of this model's precision on its device for
        a call of ``pixels`` (batch x height x width; None: any size), the
        precision chosen once per device type and said once (as train()
        does; 'auto' on a CPU runs small calls in float32,
        inference_precision.for_call); the first fast-precision call on a
        device that prefers it also turns the weights channels_last
        (values unchanged)."""
        dev = self.device.type
        if dev not in self._numerics_chosen:
            chosen, why = inference_precision.resolve(
                self.precision, getattr(self.conf, 'precision', None),
                self.conf.fp16, dev)
            if self.precision is not None:
                small = inference_precision.for_call(chosen, self.precision,
                                                     dev, 0)
                if small != chosen:
                    why += (f'; {small} for calls under '
                            f'{inference_precision.CPU_BF16_MIN_PIXELS} '
                            'pixels (batch x height x width), where bf16 '
                            'does not pay on a CPU')
                print(f'inference precision: {chosen} ({why})', flush=True)
                if hardware.prefers_channels_last(dev):
                    self.ema_model.to(memory_format=torch.channels_last)
            self._numerics_chosen[dev] = chosen
        return inference_precision.autocast(inference_precision.for_call(
            self._numerics_chosen[dev], self.precision, dev, pixels), dev)

    def precision_chosen(self, pixels: Optional[int] = None) -> str:
        """The precision this model runs on its device (e.g. 'bf16-mixed',
        '32-true') for a call of ``pixels`` (None: the model's choice)."""
        self.numerics()
        return inference_precision.for_call(
            self._numerics_chosen[self.device.type], self.precision,
            self.device.type, pixels)

    # -- z_sem normalisation (latent models) ---------------------------------
    def normalize(self, cond):
        return znormalize(cond, self.conds_mean, self.conds_std)

    def denormalize(self, cond):
        return zdenormalize(cond, self.conds_mean, self.conds_std)

    # -- the paper's operations ---------------------------------------------
    @_with_numerics(_image_pixels)
    def encode(self, x):
        """Images in [-1, 1] -> z_sem (N, style_ch)."""
        if not self.conf.model_type.has_autoenc():
            raise ValueError(f'template {self.conf.name!r} has no semantic '
                             'encoder (a DDIM model): use an *_autoenc one')
        return self.ema_model.encoder(x)

    @_with_numerics(_image_pixels)
    def encode_stochastic(self, x, cond, T=None, progress=False,
                          solver=None):
        """Images in [-1, 1] and their z_sem -> x_T: the ODE run from x_0
        towards the noise with ``solver`` (None: the config's; DDIM
        inversion as the official code, or DPM-Solver++(2M))."""
        return renderer.encode_stochastic(self.ema_model,
                                          self.sampler(T, solver), x, cond,
                                          progress=progress)

    @_with_numerics(_image_pixels)
    def render(self, noise, cond=None, T=None, progress=False, solver=None):
        """Decode x_T ``noise`` with z_sem ``cond`` into images in [0, 1]
        (``cond`` None: an unconditional DDIM model), in ``T`` model
        calls of ``solver`` (None: the config's)."""
        sampler = self.sampler(T, solver)
        if cond is not None:
            pred = renderer.render_condition(self.conf, self.ema_model, noise,
                                             sampler=sampler, cond=cond,
                                             progress=progress)
        else:
            pred = renderer.render_uncondition(self.conf, self.ema_model,
                                               noise, sampler=sampler,
                                               latent_sampler=None,
                                               progress=progress)
        return (pred + 1) / 2

    @_with_numerics(_sample_pixels)
    def sample(self, N, device, T=None, T_latent=None, progress=False,
               solver=None, latent_solver=None):
        """N unconditional images in [0, 1]. The image noise is drawn
        first, then the latent noise (same seed => same images as the
        reference). ``solver`` for the image (None: the config's), and for
        the latent DPM unless ``latent_solver`` is given (both None: the
        config's)."""
        self.check_latent_stats()
        noise = torch.randn(N, 3, self.conf.img_size, self.conf.img_size,
                            device=device)
        pred = renderer.render_uncondition(
            self.conf, self.ema_model, noise, sampler=self.sampler(T, solver),
            latent_sampler=self.latent_sampler(T_latent,
                                               latent_solver or solver)
            if self.conf.train_mode.use_latent_net() else None,
            conds_mean=self.conds_mean, conds_std=self.conds_std,
            progress=progress)
        return (pred + 1) / 2

    @_with_numerics(_interpolate_pixels)
    def interpolate(self, cond_a, xT_a, cond_b, xT_b, alphas, T=None,
                    progress=False, solver=None):
        """Images in [0, 1] between two encoded images (z_sem lerp, x_T
        slerp; see renderer.interpolate), decoded with ``solver``."""
        return (renderer.interpolate(self.ema_model, self.sampler(T, solver),
                                     cond_a,
                                     xT_a, cond_b, xT_b, alphas,
                                     progress=progress) + 1) / 2


def _latent_stats_extra(model: DiffAE) -> dict:
    """Check the checkpoint's z_sem statistics against ``latent.pkl`` of
    the template (when it is there): statistics the checkpoint lacks (NaN)
    are taken from it; differing ones are reported and the checkpoint's
    kept (its latent DPM was trained with them). What the metadata
    records about where they come from."""
    path = model.conf.latent_infer_path
    if model.conds_mean is None or not path or not os.path.exists(path):
        return {}
    state = validation.load_latents(path, model.conf.style_ch)
    mean = state['conds_mean'].reshape(1, -1).float()
    std = state['conds_std'].reshape(1, -1).float()
    if torch.isnan(model.conds_mean).any():
        model.weights.conds_mean.copy_(mean)
        model.weights.conds_std.copy_(std)
    elif not (torch.equal(mean, model.conds_mean.cpu())
              and torch.equal(std, model.conds_std.cpu())):
        warnings.warn(
            f'{model.source} holds other z_sem statistics than {path} '
            '(re-inferred since?): the export keeps the checkpoint\'s, '
            'which its latent DPM was trained with')
        return {'latent_stats_source': os.path.basename(str(model.source))}
    return {'latent_stats_source': os.path.basename(path),
            'latent_stats_sha256': checkpoint_io.file_sha256(path)}


def export_weights(conf: TrainConfig, out, ckpt: Optional[str] = None
                   ) -> dict:
    """Write what using the model needs of checkpoint ``ckpt`` (default
    ``<logdir>/last.ckpt``) of template ``conf`` to the safetensors file
    ``out``: the EMA weights, the z_sem statistics where the template uses
    them, the config in the metadata (weights_file.py). Every key is
    verified on the way (DiffAE.from_checkpoint). Returns the metadata."""
    model = DiffAE.from_checkpoint(conf, ckpt)
    extra = _latent_stats_extra(model)
    model.check_latent_stats()
    return weights_file.write_weights(
        out, model.weights.state_dict(), model.conf, 'autoencoder',
        model.source, latent_stats=model.conds_mean is not None, extra=extra)


# eval_mode, znormalize, zdenormalize (tensor_util) and
# missing_latents_message (validation) are importable from here as before
__all__ = ['DiffAE', 'DiffAEWeights', 'export_weights', 'to_model_input',
           'eval_mode', 'znormalize', 'zdenormalize',
           'missing_latents_message']
