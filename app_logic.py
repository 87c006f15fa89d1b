"""What the web page (app.py) does, as plain functions of PIL images and
numbers: loading the checkpoints (each one optional, with a message when
missing), reconstruction, attribute manipulation, interpolation and
unconditional samples. No UI code here: the tests call these directly.

Every function renders through the project's notebook API
(``LitModel.encode / encode_stochastic / render / sample``) and
``renderer.interpolate`` / ``renderer.manipulate_cond``.
"""
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from PIL import Image

import align
import checkpoint_io
import renderer
from experiment_classifier import ClsModel
from inference import FRONT_END_SOLVER, steps_matching_ddim, to_model_input
from model_loading import checkpoint_of, load_diffae, template_conf

DEMO = {'template': 'shapes32_autoenc', 'cls_template': 'shapes32_autoenc_cls',
        'latent_template': 'shapes32_autoenc_latent'}
DISPLAY_SIZE = 256


class Unavailable(RuntimeError):
    """A part of the page has no model: the message says which file is
    missing and how to get it."""


@dataclass
class Settings:
    """What app.py's command line sets (defaults: the demo's files)."""
    template: str = DEMO['template']
    ckpt: Optional[str] = None            # <base_dir>/<template>/last.ckpt
    cls_template: Optional[str] = DEMO['cls_template']
    cls_ckpt: Optional[str] = None
    latent_template: Optional[str] = DEMO['latent_template']
    latent_ckpt: Optional[str] = None
    base_dir: str = 'checkpoints'
    predictor: Optional[str] = None       # dlib landmark file (align.py)
    # ODE solver ('dpmpp_2m' or the official 'ddim') and its step counts;
    # a count left None is DDIM's former default (render 20, encode 50,
    # latent 50) or where the solver matches it (steps_matching_ddim)
    solver: str = FRONT_END_SOLVER
    T: Optional[int] = None               # steps to render
    T_inv: Optional[int] = None           # steps to encode x_T
    T_latent: Optional[int] = None
    device: str = 'cpu'
    # 'auto': what this machine runs fastest; None: the official float32
    precision: Optional[str] = 'auto'

    def __post_init__(self):
        for name, ddim, latent in (('T', 20, False), ('T_inv', 50, False),
                                   ('T_latent', 50, True)):
            if getattr(self, name) is None:
                setattr(self, name, steps_matching_ddim(self.solver, ddim,
                                                         latent))


@dataclass
class Models:
    settings: Settings
    autoenc: object = None
    classifier: object = None
    latent: object = None
    aligner: object = None
    problems: Dict[str, str] = field(default_factory=dict)
    _codes: 'OrderedDict' = field(default_factory=OrderedDict)
    _aligned: 'OrderedDict' = field(default_factory=OrderedDict)

    def need(self, part: str):
        model = getattr(self, part)
        if model is None:
            raise Unavailable(self.problems.get(part, f'no {part} loaded'))
        return model

    @property
    def attributes(self) -> List[str]:
        return list(self.classifier.id_to_cls) if self.classifier else []

    def status(self) -> str:
        """One line per part: loaded from where, or what is missing."""
        names = {'autoenc': 'autoencoder', 'classifier': 'classifier',
                 'latent': 'latent DPM (samples)',
                 'aligner': 'face alignment'}
        lines = []
        for part, name in names.items():
            if getattr(self, part) is not None:
                where = getattr(getattr(self, part), 'source', '')
                lines.append(f'* {name}: loaded {where}')
            else:
                lines.append(f'* {name}: **unavailable** -- '
                             f'{self.problems.get(part, "not requested")}')
        return '\n'.join(lines)


def _own(conf, path):
    """The template to load ``path`` with: none for a .safetensors export
    (its metadata names its own; the page's template defaults need not
    agree with it)."""
    return None if checkpoint_io.is_safetensors(path) else conf


def _found(m: 'Models', part: str, template: str, ckpt: Optional[str],
           what: str, option: str):
    """(conf to load with, checkpoint path) of one part of the page, or
    None with the reason in ``m.problems`` when the file is missing."""
    conf = template_conf(template, m.settings.base_dir)
    path = checkpoint_of(conf, ckpt)
    if os.path.isfile(path):
        return _own(conf, path), path
    m.problems[part] = (f'{what} not found: {path} (run `make demo` to make '
                        f'the demo files, or pass {option})')
    return None


def load_models(s: Settings) -> Models:
    """Load what the settings name. A missing file leaves that part out
    and records why (``models.problems``); a wrong file raises."""
    m = Models(settings=s)
    found = _found(m, 'autoenc', s.template, s.ckpt,
                   'autoencoder checkpoint', '--ckpt')
    if found:
        m.autoenc = load_diffae(*found, s.device, precision=s.precision,
                                solver=s.solver)
        for T in (s.T, s.T_inv):  # a bad step count fails now, not later
            m.autoenc.sampler(T)

    found = s.cls_template and _found(m, 'classifier', s.cls_template,
                                      s.cls_ckpt, 'classifier checkpoint',
                                      '--cls-ckpt')
    if found:
        m.classifier = ClsModel.from_checkpoint(*found).to(s.device)
        m.classifier.source = found[1]
        if m.autoenc is not None and \
                m.classifier.conf.style_ch != m.autoenc.conf.style_ch:
            raise ValueError(
                f'classifier {found[1]} works on z_sem of '
                f'{m.classifier.conf.style_ch} channels, the autoencoder '
                f'has {m.autoenc.conf.style_ch}: pass the matching '
                '--cls-template')
    elif not s.cls_template:
        m.problems['classifier'] = 'no --cls-template given'

    found = s.latent_template and _found(m, 'latent', s.latent_template,
                                         s.latent_ckpt,
                                         'latent DPM checkpoint',
                                         '--latent-ckpt')
    if found:
        m.latent = load_diffae(*found, s.device, precision=s.precision,
                               solver=s.solver)
    elif not s.latent_template:
        m.problems['latent'] = 'no --latent-template given'
    try:
        m.aligner = align.DlibLandmarks(s.predictor)
        m.aligner.source = m.aligner.path
    except align.DetectorUnavailableError as e:
        m.problems['aligner'] = str(e)
    return m


# ----------------------------------------------------------------------
# images
# ----------------------------------------------------------------------
def to_pil(img01: torch.Tensor, size: int = DISPLAY_SIZE) -> Image.Image:
    """A (3, H, W) image in [0, 1] -> PIL, enlarged to ``size`` (nearest:
    the model's pixels stay visible)."""
    arr = (img01.detach().float().clamp(0, 1) * 255).round().byte()
    pil = Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), 'RGB')
    if size and pil.size[0] < size:
        pil = pil.resize((size, size), Image.NEAREST)
    return pil


def align_upload(models: Models, img: Image.Image):
    """(the FFHQ-aligned crop of the upload's main face, a note saying how
    many faces were found and which one was used); the last few are
    cached (moving a slider does not align again)."""
    aligner = models.need('aligner')
    size = max(256, models.need('autoenc').conf.img_size)
    key = hashlib.sha1(img.tobytes() + repr((img.size, img.mode, size))
                       .encode()).hexdigest()
    if key not in models._aligned:
        try:
            res = align.align_photo(img, aligner, output_size=size,
                                    name='upload')
        except align.NoFaceError as e:
            raise Unavailable(str(e)) from e
        models._aligned[key] = (res.crops[0], res.note)
        while len(models._aligned) > 8:
            models._aligned.popitem(last=False)
    return models._aligned[key]


def prepare(models: Models, img: Image.Image, align_face: bool = False):
    """An uploaded image -> the model's input (1, 3, S, S) in [-1, 1];
    FFHQ-aligned first when asked (the main face, see align_upload)."""
    if img is None:
        raise Unavailable('upload an image first')
    ae = models.need('autoenc')
    if align_face:
        img = align_upload(models, img)[0]
    return to_model_input(img, ae.conf.img_size)[None].to(
        models.settings.device)


@torch.no_grad()
def encode(models: Models, x: torch.Tensor, progress: bool = False):
    """(z_sem, inverted x_T) of a prepared image; the last few are cached
    (moving a slider re-renders without re-encoding)."""
    key = hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest()
    if key in models._codes:
        models._codes.move_to_end(key)
        return models._codes[key]
    ae = models.need('autoenc')
    cond = ae.encode(x)
    xT = ae.encode_stochastic(x, cond, T=models.settings.T_inv,
                              progress=progress)
    models._codes[key] = (cond, xT)
    while len(models._codes) > 8:
        models._codes.popitem(last=False)
    return cond, xT


@torch.no_grad()
def reconstruct(models: Models, img, align_face=False, progress=False):
    """(the model's input, its reconstruction) as PIL images."""
    x = prepare(models, img, align_face)
    cond, xT = encode(models, x, progress)
    rec = models.autoenc.render(xT, cond, T=models.settings.T,
                                progress=progress)
    return to_pil((x[0] + 1) / 2), to_pil(rec[0])


@torch.no_grad()
def manipulate(models: Models, img, amounts: Dict[str, float],
               align_face=False, progress=False):
    """The image rendered with z_sem moved along each attribute's
    classifier direction by its amount (the official notebook's step,
    one attribute after the other; amount 0 leaves it)."""
    cls = models.need('classifier')
    x = prepare(models, img, align_face)
    cond, xT = encode(models, x, progress)
    for name, amount in amounts.items():
        if amount:
            cond = renderer.manipulate_cond(cond, cls.direction(name),
                                            float(amount), cls.normalize,
                                            cls.denormalize)
    out = models.autoenc.render(xT, cond, T=models.settings.T,
                                progress=progress)
    return to_pil(out[0])


@torch.no_grad()
def interpolate(models: Models, img_a, img_b, steps: int = 5,
                align_face=False, progress=False):
    """``steps`` images from the reconstruction of ``img_a`` to that of
    ``img_b`` (z_sem linear, x_T spherical)."""
    if img_a is None or img_b is None:
        raise Unavailable('interpolation needs two images: upload both')
    ae = models.need('autoenc')
    ca, xa = encode(models, prepare(models, img_a, align_face), progress)
    cb, xb = encode(models, prepare(models, img_b, align_face), progress)
    alphas = torch.linspace(0, 1, int(steps)).tolist()
    imgs = ae.interpolate(ca, xa, cb, xb, alphas, T=models.settings.T,
                          progress=progress)
    return [to_pil(i) for i in imgs]


@torch.no_grad()
def sample(models: Models, n: int = 4, seed: int = 0, progress=False):
    """``n`` unconditional samples (latent DPM -> z_sem -> image)."""
    lat = models.need('latent')
    torch.manual_seed(int(seed))
    imgs = lat.sample(int(n), device=models.settings.device,
                      T=models.settings.T, T_latent=models.settings.T_latent,
                      progress=progress)
    return [to_pil(i) for i in imgs]
