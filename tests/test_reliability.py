"""Surviving kills and bad input, losing nothing.

(Data-level cases live in test_dataset.py: corrupt records name their
key, LMDBs without 'length' or with foreign keys, RGBA / greyscale /
16-bit / small images, empty folders.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import conf_from_recipe, golden, load_recipe, ROOT

SCRIPT = str(ROOT / 'tests' / 'tiny_training.py')


def losses(workdir):
    with open(os.path.join(workdir, 'losses.jsonl')) as f:
        return [json.loads(line) for line in f]


def run(workdir, lmdb, steps, *extra, wait=True):
    os.makedirs(workdir, exist_ok=True)
    proc = subprocess.Popen([sys.executable, SCRIPT, str(workdir), lmdb,
                             str(steps), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    return proc


def ckpt_path(workdir):
    return os.path.join(workdir, 'checkpoints', 'tiny_autoenc', 'last.ckpt')


def wait_for(pred, timeout=120):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, 'timed out'
        time.sleep(0.2)


def test_kill_9_then_rerun_continues_the_same_run(tmp_path, shapes_lmdb):
    import checkpoint_io
    steps = 10
    # the uninterrupted reference run
    run(tmp_path / 'ref', shapes_lmdb, steps)
    ref = {r['step']: r['loss'] for r in losses(tmp_path / 'ref')}

    # the same run, killed -9 once it has checkpointed step >= 4
    work = tmp_path / 'killed'
    proc = run(work, shapes_lmdb, steps, wait=False)

    def saved_enough():
        try:
            return checkpoint_io.load_checkpoint(
                ckpt_path(work))['global_step'] >= 4
        except Exception:
            return False

    wait_for(saved_enough)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = checkpoint_io.load_checkpoint(ckpt_path(work))['global_step']
    assert at_kill < steps

    # rerun the same command: resumes from last.ckpt
    run(work, shapes_lmdb, steps)
    final = checkpoint_io.load_checkpoint(ckpt_path(work))
    assert final['global_step'] == steps
    resumed = [r for r in losses(work)][-(steps - at_kill):]
    assert [r['step'] for r in resumed] == list(range(at_kill + 1,
                                                      steps + 1))
    # same data order, timesteps, noise and dropout as without the kill
    for r in resumed:
        assert r['loss'] == pytest.approx(ref[r['step']], rel=1e-5,
                                          abs=1e-6), r


def test_kill_during_a_save_never_corrupts_last_ckpt(tmp_path, shapes_lmdb):
    import checkpoint_io
    work = tmp_path / 'slow'
    # the first two writes (step 1's checkpoint and last.ckpt) go through;
    # the next one hangs halfway through writing
    proc = run(work, shapes_lmdb, 10, '--slow-save-after', '2', wait=False)
    for line in proc.stdout:
        if 'SLOW-SAVE' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = checkpoint_io.load_checkpoint(ckpt_path(work))
    assert state['global_step'] == 1
    assert all(torch.isfinite(v).all() for v in state['state_dict'].values()
               if v.is_floating_point())


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
        tmp_path, shapes_lmdb, monkeypatch):
    sys.path.insert(0, str(ROOT / 'tests'))
    from tiny_training import tiny_shapes_conf

    import checkpoint_io
    from diffusion.base import GaussianDiffusionBeatGans
    from experiment import train
    real = GaussianDiffusionBeatGans.training_losses
    calls = {'n': 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls['n'] += 1
        if calls['n'] == 3:
            out['loss'] = out['loss'] * float('nan')
        return out

    monkeypatch.setattr(GaussianDiffusionBeatGans, 'training_losses',
                        poisoned)
    conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
    conf.total_samples = conf.batch_size * 6
    with pytest.raises(FloatingPointError, match='at step 2'):
        train(conf, gpus=[0], enable_progress_bar=False)
    state = checkpoint_io.load_checkpoint(ckpt_path(tmp_path))
    assert state['global_step'] == 2
    assert all(torch.isfinite(v).all() for v in state['state_dict'].values()
               if v.is_floating_point())


def test_same_seed_same_first_20_losses(tmp_path, shapes_lmdb):
    sys.path.insert(0, str(ROOT / 'tests'))
    from tiny_training import LossLog, tiny_shapes_conf

    from experiment import train
    runs = []
    for name in ('a', 'b'):
        work = tmp_path / name
        work.mkdir()
        conf = tiny_shapes_conf(str(work), shapes_lmdb)
        conf.total_samples = conf.batch_size * 20
        conf.save_every_samples = 10**9
        train(conf, gpus=[0], callbacks=[LossLog(str(work /
                                                     'losses.jsonl'))],
              enable_progress_bar=False)
        runs.append([r['loss'] for r in losses(work)])
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]


def tiny(name):
    path = golden(name)
    return conf_from_recipe(load_recipe(path)['recipe'])


def test_checkpoint_of_another_template_lists_the_mismatch(tmp_path):
    import checkpoint_io
    from experiment import LitModel
    ckpt = golden('tiny_autoenc') / \
        'last.ckpt'
    conf = tiny('tiny_autoenc')
    conf.net_ch_mult = (1, 2, 4)
    with pytest.raises(checkpoint_io.CheckpointMismatchError) as e:
        LitModel.from_checkpoint(conf, ckpt)
    msg = str(e.value)
    assert 'shape mismatches' in msg and 'input_blocks' in msg
    # the notebooks' strict=False does not hide it either
    lit = LitModel(conf)
    state = checkpoint_io.load_checkpoint(ckpt)['state_dict']
    with pytest.raises(checkpoint_io.CheckpointMismatchError):
        lit.load_state_dict(state, strict=False)
    # a DDIM checkpoint into an autoencoder: missing encoder keys listed
    ddpm = golden('tiny_ddpm')
    with pytest.raises(checkpoint_io.CheckpointMismatchError,
                       match='missing keys'):
        LitModel.from_checkpoint(tiny('tiny_autoenc'), ddpm / 'last.ckpt')


def test_strict_false_reports_skipped_keys():
    import checkpoint_io
    from experiment import LitModel
    conf = tiny('tiny_autoenc')
    lit = LitModel(conf)
    ckpt = golden('tiny_autoenc')
    state = dict(checkpoint_io.load_checkpoint(ckpt / 'last.ckpt')[
        'state_dict'])
    state['extra.weight'] = torch.zeros(1)
    with pytest.warns(UserWarning, match='extra.weight'):
        lit.load_state_dict(state, strict=False)


def test_missing_dataset_names_the_path_and_the_converter(tmp_path):
    from experiment import LitModel
    conf = tiny('tiny_autoenc')
    conf.data_dir = str(tmp_path / 'nowhere.lmdb')
    lit = LitModel(conf)
    with pytest.raises(FileNotFoundError) as e:
        lit.setup('fit')
    assert 'nowhere.lmdb' in str(e.value)
    assert 'data_resize_ffhq.py' in str(e.value)


def test_empty_image_folder_is_a_clear_error(tmp_path):
    conf = tiny('tiny_autoenc')
    conf.data_name = 'imagefolder'
    conf.data_dir = str(tmp_path)
    with pytest.raises(Exception) as e:
        conf.make_dataset()
    assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize('program', ['fid(10,', 'fid10x', 'recon', 'infr',
                                     'inv-3', 'fidclip(1)'])
def test_malformed_eval_program_lists_the_grammar(program):
    import evaluation
    with pytest.raises(ValueError) as e:
        evaluation.parse_program(program)
    assert 'infer+render<T>' in str(e.value) and program in str(e.value)


def test_train_eval_rejects_a_typo_before_any_work(tmp_path):
    from experiment import train
    conf = tiny('tiny_autoenc')
    conf.base_dir = str(tmp_path)
    conf.eval_programs = ['infer', 'fid(10,10']
    with pytest.raises(ValueError, match='fid\\(10,10'):
        train(conf, gpus=[0], mode='eval')
    assert not os.listdir(tmp_path)


def test_rerun_in_a_moved_run_folder_updates_last_ckpt(tmp_path,
                                                       shapes_lmdb):
    """Copy a run elsewhere and continue it there: last.ckpt itself must
    advance (not a last-v1.ckpt beside a stale last.ckpt)."""
    import shutil

    import checkpoint_io
    run(tmp_path / 'a', shapes_lmdb, 2)
    shutil.copytree(tmp_path / 'a', tmp_path / 'b')
    run(tmp_path / 'b', shapes_lmdb, 4)
    assert checkpoint_io.load_checkpoint(ckpt_path(tmp_path / 'b'))[
        'global_step'] == 4
    folder = os.path.dirname(ckpt_path(tmp_path / 'b'))
    assert not [f for f in os.listdir(folder) if f.startswith('last-')]
