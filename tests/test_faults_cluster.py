"""Faults of the usual cluster layout: the run folder on another filesystem
than $TMPDIR (a tmpfs mounted here), a full disk, the same job started
twice on one run folder, a resume with changed settings.

The kill scenario runs once per module (tiny model, 4 steps); each test
checks one behaviour of it."""
import os
import signal
import socket
import tempfile

import pytest

from conftest import mount_tmpfs, umount
from test_reliability import ckpt_path, losses, run

STEPS = 3


def _finish(proc):
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.fixture(scope='module')
def killed_mid_save(tmp_path_factory, shapes_lmdb):
    """Run A (run folder on a tmpfs) hangs halfway through overwriting
    last.ckpt at step 2; run B, the same command, starts meanwhile; A is
    killed -9; run C, the same command again, finishes the run."""
    import checkpoint_io
    work = tmp_path_factory.mktemp('cluster')
    runs = mount_tmpfs(work / 'checkpoints', '160m')
    try:
        # writes: step 1's checkpoint, last.ckpt, step 2's, then last.ckpt
        # again: that fourth one hangs halfway
        first = run(work, shapes_lmdb, STEPS, '--slow-save-after', '3',
                    wait=False)
        for line in first.stdout:
            if 'SLOW-SAVE' in line:
                break
        logdir = os.path.dirname(ckpt_path(work))
        rows_before = len(losses(work))
        second = _finish(run(work, shapes_lmdb, STEPS, wait=False))
        rows_after_second = len(losses(work))
        first.send_signal(signal.SIGKILL)
        first.wait()
        left = sorted(os.listdir(logdir))
        intact = {n: checkpoint_io.check_checkpoint(os.path.join(logdir, n))
                  for n in left if n.endswith('.ckpt')}
        kept_step = checkpoint_io.load_checkpoint(ckpt_path(work))[
            'global_step']
        third = _finish(run(work, shapes_lmdb, STEPS, wait=False))
        yield dict(
            first_pid=first.pid, second=second, third=third, left=left,
            intact=intact, kept_step=kept_step, rows_before=rows_before,
            rows_after_second=rows_after_second,
            other_fs=os.stat(runs).st_dev != os.stat(
                tempfile.gettempdir()).st_dev,
            final_step=checkpoint_io.load_checkpoint(ckpt_path(work))[
                'global_step'],
            steps=[r['step'] for r in losses(work)],
            after=sorted(os.listdir(logdir)))
    finally:
        umount(runs)


def test_kill_9_while_overwriting_last_ckpt_on_another_filesystem(
        killed_mid_save):
    s = killed_mid_save
    assert s['other_fs']                 # run folder not on $TMPDIR's disk
    temp = f'last.ckpt.tmp-{socket.gethostname()}-{s["first_pid"]}'
    assert temp in s['left']             # killed in the middle of the write
    # every file under a checkpoint name is whole; last.ckpt is the old one
    assert s['intact'] and all(v is None for v in s['intact'].values()), \
        s['intact']
    assert s['kept_step'] == 1
    rc, out = s['third']
    assert rc == 0, out[-3000:]
    assert 'removed' in out and temp in out          # the leftover is named
    assert s['final_step'] == STEPS
    assert s['steps'][-(STEPS - 1):] == list(range(2, STEPS + 1))
    assert not [n for n in s['after'] if '.tmp-' in n]


def test_second_run_on_a_locked_folder_stops_then_takes_the_stale_lock(
        killed_mid_save):
    s = killed_mid_save
    rc, out = s['second']
    assert rc != 0
    assert 'RunFolderLockedError' in out and 'in use by process ' \
        f'{s["first_pid"]} on host {socket.gethostname()}' in out
    assert s['rows_after_second'] == s['rows_before']    # trained nothing
    rc, out = s['third']
    assert rc == 0, out[-3000:]
    assert f'process {s["first_pid"]}' in out and 'taking the lock over' \
        in out
    assert 'resuming from' in out and s['final_step'] == STEPS
    assert 'run.lock' not in s['after']        # released at the end


def test_full_disk_leaves_no_partial_checkpoint_and_the_rerun_resumes(
        tmp_path, shapes_lmdb):
    import errno

    import pytorch_lightning as pl
    from tiny_training import tiny_shapes_conf

    import checkpoint_io
    from experiment import train
    runs = mount_tmpfs(tmp_path / 'checkpoints', '96m')
    filler = runs / 'filler'

    class FillTheDisk(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 2 and not filler.exists():
                with open(filler, 'wb') as f:
                    try:
                        while True:
                            f.write(b'\0' * (1 << 20))
                            f.flush()
                    except OSError as e:
                        assert e.errno == errno.ENOSPC

    try:
        conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
        conf.total_samples = conf.batch_size * STEPS
        kwargs = dict(gpus=[0], enable_progress_bar=False,
                      enable_model_summary=False)
        with pytest.raises(checkpoint_io.CheckpointSaveError) as e:
            train(conf, callbacks=[FillTheDisk()], **kwargs)
        msg = str(e.value)
        assert 'No space left on device' in msg and 'at step 3' in msg
        assert 'nothing partial' in msg and 'rerun' in msg
        logdir = conf.logdir
        names = os.listdir(logdir)
        assert not [n for n in names if '.tmp-' in n]
        for n in names:
            if n.endswith('.ckpt'):
                assert checkpoint_io.check_checkpoint(
                    os.path.join(logdir, n)) is None, n
        last = os.path.join(logdir, 'last.ckpt')
        assert checkpoint_io.load_checkpoint(last)['global_step'] == 2
        filler.unlink()                     # space freed: rerun resumes
        train(conf, **kwargs)
        assert checkpoint_io.load_checkpoint(last)['global_step'] == STEPS
    finally:
        umount(runs)


def test_resume_with_a_changed_lr_names_it_uses_it_and_records_it(
        tmp_path, shapes_lmdb):
    import warnings

    from tiny_training import tiny_shapes_conf

    import checkpoint_io
    from experiment import train
    conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
    conf.total_samples = conf.batch_size * 2
    conf.warmup = 4                  # a LambdaLR schedule in the state
    kwargs = dict(gpus=[0], enable_progress_bar=False,
                  enable_model_summary=False)
    train(conf, max_steps=1, **kwargs)
    conf.lr = 3e-4                   # was 1e-3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train(conf, **kwargs)
    told = [str(w.message) for w in caught
            if 'resuming at step' in str(w.message)]
    assert len(told) == 1, told
    assert 'lr: checkpoint 0.001, config 0.0003 -> using 0.0003' in told[0]
    state = checkpoint_io.load_checkpoint(
        os.path.join(conf.logdir, 'last.ckpt'))
    assert state['global_step'] == 2
    assert state['hyper_parameters']['lr'] == 3e-4
    group = state['optimizer_states'][0]['param_groups'][0]
    # warm-up factor after 2 of 4 steps: 2/4, applied to the new lr
    assert group['initial_lr'] == 3e-4
    assert group['lr'] == pytest.approx(3e-4 * 2 / 4)
