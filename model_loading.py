"""A template's trained model, by the template's name: what the command
line (``cli.py``) and the web page (``app_logic.py``) share.

    conf = template_conf('ffhq256_autoenc')        # templates*.py
    model = load_diffae(conf)                      # checkpoints/<name>/
"""
import os
from typing import Optional

import templates_cls
import templates_latent
from config import TrainConfig
from inference import DiffAE

# every template: templates_latent re-exports templates.py's
_TEMPLATE_MODULES = (templates_latent, templates_cls)


def load_template(name: str) -> TrainConfig:
    """The config of template function ``name`` (templates*.py)."""
    for module in _TEMPLATE_MODULES:
        if hasattr(module, name) and callable(getattr(module, name)):
            return getattr(module, name)()
    raise SystemExit(f'unknown template {name!r} (see templates*.py)')


def template_conf(name: str, base_dir: Optional[str] = None,
                  latent_infer_path: Optional[str] = None) -> TrainConfig:
    """Template ``name`` set up to load a finished run: its checkpoint
    holds every weight (no ``pretrain``); ``base_dir`` moves the run folder
    (and a ``latent.pkl`` under ``checkpoints/`` with it);
    ``latent_infer_path`` names another latent.pkl."""
    conf = load_template(name)
    if base_dir is not None:
        conf.base_dir = base_dir
        # the demo templates point at checkpoints/...: follow base_dir
        if conf.latent_infer_path and conf.latent_infer_path.startswith(
                'checkpoints/'):
            conf.latent_infer_path = os.path.join(
                base_dir, conf.latent_infer_path[len('checkpoints/'):])
    if latent_infer_path:
        conf.latent_infer_path = latent_infer_path
    conf.pretrain = None  # each checkpoint holds every weight
    return conf


def checkpoint_of(conf: TrainConfig, ckpt: Optional[str] = None) -> str:
    """``ckpt``, else the run's ``<logdir>/last.ckpt``."""
    return ckpt or os.path.join(conf.logdir, 'last.ckpt')


def load_diffae(conf: TrainConfig, ckpt: Optional[str] = None,
                device='cpu', **options) -> DiffAE:
    """The DiffAE of ``conf`` with the weights of ``ckpt`` (default: the
    run's last.ckpt), every key verified, on ``device``; ``options`` go to
    DiffAE.from_checkpoint (precision, solver)."""
    return DiffAE.from_checkpoint(conf, checkpoint_of(conf, ckpt),
                                  **options).to(device)


__all__ = ['load_template', 'template_conf', 'checkpoint_of', 'load_diffae']
