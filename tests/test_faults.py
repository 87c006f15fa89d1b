"""Faults that recur, each caught up front with its fix (issue 14):
exact resume at every save point, damaged / unsafe checkpoints, settings
and inputs validated before any work."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / 'tests'))


@pytest.fixture(scope='module')
def shapes_lmdb(tmp_path_factory):
    import dataset
    path = tmp_path_factory.mktemp('data') / 'shapes.lmdb'
    dataset.make_shapes_lmdb(str(path), num_images=40)
    return str(path)


class Crash(Exception):
    pass


def _train(work, lmdb, steps, crash_at=None, every=4):
    """Train the tiny model to ``steps`` (40 images, batch 4: 10 steps an
    epoch), saving every ``every`` samples; ``crash_at``: die (as if
    killed) just before step ``crash_at`` + 1, after its checkpoint."""
    import pytorch_lightning as pl
    from tiny_training import LossLog, tiny_shapes_conf

    from experiment import train

    class Die(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if crash_at is not None and trainer.global_step == crash_at:
                raise Crash()

    conf = tiny_shapes_conf(str(work), lmdb)
    conf.total_samples = conf.batch_size * steps
    conf.save_every_samples = every
    cbs = [LossLog(os.path.join(work, 'losses.jsonl')), Die()]
    if crash_at is None:
        return train(conf, gpus=[0], callbacks=cbs, enable_progress_bar=False,
                     enable_model_summary=False)
    with pytest.raises(Crash):
        train(conf, gpus=[0], callbacks=cbs, enable_progress_bar=False,
              enable_model_summary=False)


def _losses(work):
    out = {}
    with open(os.path.join(work, 'losses.jsonl')) as f:
        for line in f:
            r = json.loads(line)
            out.setdefault(r['step'], []).append(r['loss'])
    return out


def test_resume_is_exact_at_epoch_ends_epoch_starts_and_mid_epoch(
        tmp_path, shapes_lmdb):
    """Saved after the last batch of epoch 0 (step 10), after the first
    batch of epoch 1 (step 11) and mid-epoch (step 15): each restart
    continues with the uninterrupted run's losses."""
    steps = 16
    ref = tmp_path / 'ref'
    ref.mkdir()
    _train(ref, shapes_lmdb, steps)
    want = {k: v[0] for k, v in _losses(ref).items()}
    assert sorted(want) == list(range(1, steps + 1))

    work = tmp_path / 'killed'
    work.mkdir()
    for crash_at in (10, 11, 15):
        _train(work, shapes_lmdb, steps, crash_at=crash_at)
    _train(work, shapes_lmdb, steps)
    got = _losses(work)
    assert sorted(got) == list(range(1, steps + 1))
    for step, values in got.items():
        for v in values:
            assert v == pytest.approx(want[step], rel=1e-5, abs=1e-6), (
                step, values, want[step])
    logdir = os.path.join(work, 'checkpoints', 'tiny_autoenc')
    import checkpoint_io
    state = checkpoint_io.load_checkpoint(os.path.join(logdir, 'last.ckpt'))
    assert state['global_step'] == steps
    assert state['epoch'] == torch.load(
        os.path.join(ref, 'checkpoints', 'tiny_autoenc', 'last.ckpt'),
        weights_only=True)['epoch']
