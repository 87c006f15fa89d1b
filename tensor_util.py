"""Small tensor helpers that every layer may use (nothing of the project
imported): a with-block eval mode and the z-normalisation of z_sem."""
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for a with-block; the model's mode is restored after
    (also when the block raises)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def znormalize(cond, mean, std):
    """z_sem into the normalised space of ``mean``/``std`` (latent DPM and
    classifier); identity when there are no statistics."""
    if mean is None:
        return cond
    return (cond - mean.to(cond.device)) / std.to(cond.device)


def zdenormalize(cond, mean, std):
    """Inverse of :func:`znormalize`."""
    if mean is None:
        return cond
    return cond * std.to(cond.device) + mean.to(cond.device)


__all__ = ['eval_mode', 'znormalize', 'zdenormalize']
