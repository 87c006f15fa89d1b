"""Faults that recur, each caught up front with its fix (issue 14):
exact resume at every save point, damaged / unsafe checkpoints, settings
and inputs validated before any work."""
import json
import os
import sys

import pytest
import torch

import shapes_data

from conftest import ROOT, conf_from_recipe, load_recipe

sys.path.insert(0, str(ROOT / 'tests'))


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
        tmp_path):
    """12 images, batch 4: 3 steps an epoch. Saved mid-epoch (step 1),
    after the last batch of epoch 0 (step 3) and after the first batch of
    epoch 1 (step 4), then stopped: each restart continues with the
    uninterrupted run's losses (and epoch)."""
    import checkpoint_io
    lmdb = str(tmp_path / 'twelve.lmdb')
    shapes_data.make_shapes_lmdb(lmdb, num_images=12)
    steps = 5
    ref = tmp_path / 'ref'
    ref.mkdir()
    _train(ref, lmdb, steps, every=10**9)      # (no saves needed)
    want = {k: v[0] for k, v in _losses(ref).items()}
    assert sorted(want) == list(range(1, steps + 1))

    work = tmp_path / 'killed'
    work.mkdir()
    for crash_at in (1, 3, 4):
        _train(work, lmdb, steps, crash_at=crash_at)
    _train(work, lmdb, steps)
    got = _losses(work)
    assert sorted(got) == list(range(1, steps + 1))
    for step, values in got.items():
        for v in values:
            assert v == pytest.approx(want[step], rel=1e-5, abs=1e-6), (
                step, values, want[step])
    logdir = os.path.join(work, 'checkpoints', 'tiny_autoenc')
    state = checkpoint_io.load_checkpoint(os.path.join(logdir, 'last.ckpt'))
    assert state['global_step'] == steps
    assert state['epoch'] == 1                       # not one epoch ahead
    # what the decoder predicts travels with the weights
    assert state['prediction_target'] == 'eps'


# ---------------------------------------------------------------------------
# damaged checkpoints
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def two_step_run(tmp_path_factory, shapes_lmdb):
    """A finished 2-step run (checkpoints epoch=0-step=2.ckpt and
    last.ckpt, both at step 2)."""
    work = tmp_path_factory.mktemp('two')
    _train(work, shapes_lmdb, 2)
    return work


def _copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    if os.path.exists(os.path.join(dst, 'losses.jsonl')):
        os.remove(os.path.join(dst, 'losses.jsonl'))
    return os.path.join(dst, 'checkpoints', 'tiny_autoenc')


def test_truncated_last_ckpt_resumes_from_the_newest_intact_one(
        tmp_path, shapes_lmdb, two_step_run, capsys):
    import checkpoint_io
    logdir = _copy_run(two_step_run, tmp_path / 'run')
    last = os.path.join(logdir, 'last.ckpt')
    data = open(last, 'rb').read()
    with open(last, 'wb') as f:
        f.write(data[:len(data) // 2])
    other = os.path.join(logdir, 'epoch=0-step=2.ckpt')
    assert os.path.exists(other)
    with pytest.warns(UserWarning) as rec:
        _train(tmp_path / 'run', shapes_lmdb, 3)
    msg = ' '.join(str(w.message) for w in rec)
    assert 'truncated' in msg and last in msg and other in msg
    assert 'last.ckpt.damaged' in msg
    # the damaged file is kept byte for byte; the run continued at step 3
    with open(last + '.damaged', 'rb') as f:
        assert f.read() == data[:len(data) // 2]
    assert sorted(_losses(tmp_path / 'run')) == [3]
    assert checkpoint_io.load_checkpoint(last)['global_step'] == 3
    # the checkpoint it resumed from was not written by this run: kept
    assert os.path.exists(other)


def test_deleted_last_ckpt_does_not_start_over_on_top_of_the_run(
        tmp_path, shapes_lmdb, two_step_run):
    logdir = _copy_run(two_step_run, tmp_path / 'run')
    os.remove(os.path.join(logdir, 'last.ckpt'))
    with pytest.warns(UserWarning, match='has no last.ckpt'):
        _train(tmp_path / 'run', shapes_lmdb, 3)
    assert sorted(_losses(tmp_path / 'run')) == [3]    # not 1, 2, 3
    assert os.path.exists(os.path.join(logdir, 'epoch=0-step=2.ckpt'))


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'text'])
def test_no_intact_checkpoint_stops_with_the_choices(tmp_path, shapes_lmdb,
                                                     two_step_run, damage):
    import checkpoint_io
    logdir = _copy_run(two_step_run, tmp_path / 'run')
    files = sorted(os.listdir(logdir))
    for name in ('last.ckpt', 'epoch=0-step=2.ckpt'):
        p = os.path.join(logdir, name)
        data = open(p, 'rb').read()
        with open(p, 'wb') as f:
            f.write({'truncated': data[:1000], 'empty': b'',
                     'text': b'hello, not a checkpoint\n'}[damage])
    with pytest.raises(checkpoint_io.CheckpointLoadError) as e:
        _train(tmp_path / 'run', shapes_lmdb, 3)
    msg = str(e.value)
    why = {'truncated': 'truncated', 'empty': 'empty',
           'text': 'not a checkpoint'}[damage]
    assert msg.count(why) == 2, msg
    assert 'last.ckpt' in msg and 'epoch=0-step=2.ckpt' in msg
    assert 'Choices' in msg and 'continue_from' in msg
    assert sorted(os.listdir(logdir)) == files       # nothing moved
    assert not os.path.exists(tmp_path / 'run' / 'losses.jsonl')


def test_damaged_pretrain_continue_from_and_eval_path_name_the_file(
        tmp_path, shapes_lmdb):
    from tiny_training import tiny_shapes_conf

    import checkpoint_io
    from config import PretrainConfig
    from experiment import LitModel, train
    bad = tmp_path / 'cut.ckpt'
    bad.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
    conf.total_samples = 8
    conf.pretrain = PretrainConfig('x', str(bad))
    with pytest.raises(checkpoint_io.CheckpointLoadError,
                       match=r'conf.pretrain .*cut.ckpt: truncated'):
        LitModel(conf)
    conf.pretrain = None
    conf.continue_from = PretrainConfig('x', str(bad))
    with pytest.raises(checkpoint_io.CheckpointLoadError,
                       match=r'conf.continue_from .*cut.ckpt: truncated'):
        train(conf, gpus=[0])
    conf.continue_from = None
    conf.eval_path = str(bad)
    conf.eval_programs = ['infer']
    with pytest.raises(checkpoint_io.CheckpointLoadError,
                       match=r'eval_path .*cut.ckpt: truncated'):
        train(conf, gpus=[0], mode='eval')


# ---------------------------------------------------------------------------
# unsafe pickles
# ---------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('what', ['checkpoint', 'latent'])
def test_unsafe_pickle_is_refused_in_the_projects_words(tmp_path, what):
    import checkpoint_io
    from experiment import LitModel
    from tiny_training import tiny_shapes_conf
    marker = tmp_path / 'ran'
    path = tmp_path / ('evil.ckpt' if what == 'checkpoint' else 'latent.pkl')
    torch.save({'state_dict': {}, 'conds': _Payload(marker)}, path)
    conf = tiny_shapes_conf(str(tmp_path), 'unused')
    loaders = [lambda: checkpoint_io.load_checkpoint(path)]
    if what == 'checkpoint':
        loaders.append(lambda: LitModel.from_checkpoint(conf, path))
    else:
        conf.latent_infer_path = str(path)
        loaders.append(lambda: LitModel(conf))
    for load in loaders:
        with pytest.raises(checkpoint_io.UnsafeCheckpointError) as e:
            load()
        msg = str(e.value)
        assert str(path) in msg
        assert 'system' in msg                       # the refused global
        assert 'never need' in msg and 'run code' in msg
        assert 'weights_only=False' not in msg
        assert e.value.__cause__ is None and e.value.__suppress_context__
    assert not marker.exists()
    # the payload does run code when unpickled unsafely (the test's own
    # control that it would have been caught)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------
# validated before any work
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('field,value,words', [
    ('total_samples', -4, 'total_samples=-4'),
    ('total_samples', 0, 'total_samples=0'),
    ('total_samples', 3, 'less than one optimizer step'),
    ('batch_size', 0, 'batch_size=0'),
    ('T', 0, 'conf.T=0'),
    ('T_eval', 2000, 'T_eval=2000 is more steps'),
    ('save_every_samples', 0, 'save_every_samples=0 must be a positive'),
])
def test_bad_settings_stop_before_any_work(tmp_path, field, value, words):
    from tiny_training import tiny_shapes_conf

    from experiment import train
    conf = tiny_shapes_conf(str(tmp_path / 'w'), 'unused.lmdb')
    conf.total_samples = 40
    conf.T_eval = min(conf.T_eval, conf.T)
    setattr(conf, field, value)
    with pytest.raises(ValueError, match=words):
        train(conf, gpus=[0])
    assert not os.path.exists(tmp_path / 'w')        # nothing was made


@pytest.mark.parametrize('kind', ['width', 'keys', 'garbage'])
def test_bad_latent_pkl_names_the_file(tmp_path, kind):
    import checkpoint_io
    from experiment import LitModel
    from tiny_training import tiny_shapes_conf
    conf = tiny_shapes_conf(str(tmp_path), 'unused')
    c = conf.style_ch
    path = tmp_path / 'latent.pkl'
    if kind == 'width':
        torch.save({'conds': torch.zeros(5, c + 1),
                    'conds_mean': torch.zeros(c + 1),
                    'conds_std': torch.ones(c + 1)}, path)
        err, words = ValueError, f'expected \\(N, {c}\\)'
    elif kind == 'keys':
        torch.save({'latents': torch.zeros(5, c)}, path)
        err, words = ValueError, "lacks \\['conds'"
    else:
        path.write_bytes(bytes(range(101, 201)))
        err, words = checkpoint_io.CheckpointLoadError, 'not a checkpoint'
    conf.latent_infer_path = str(path)
    with pytest.raises(err, match=words) as e:
        LitModel(conf)
    assert str(path) in str(e.value)


def test_a_budget_of_part_steps_says_what_is_trained():
    import validation
    from tiny_training import tiny_shapes_conf
    conf = tiny_shapes_conf('unused', 'unused')
    conf.batch_size, conf.accum_batches, conf.total_samples = 8, 3, 32
    conf.save_every_samples = 8
    with pytest.warns(UserWarning) as caught:
        validation.check_train_conf(conf)
    said = ' '.join(str(w.message) for w in caught)
    # 32 samples in steps of 8 x 3 = 24: one step, 8 samples left over
    assert 'trains 1 steps (24 samples); the last 8 are not trained' in said
    assert 'save_every_samples=8 is less than one optimizer step' in said


def test_latent_pkl_of_other_length_than_the_data_names_both(tmp_path,
                                                             shapes_lmdb):
    from conftest import golden
    from evaluation import save_latents
    from experiment import LitModel
    conf = conf_from_recipe(load_recipe(golden('tiny_autoenc_latent'))[
        'recipe'])
    conf.data_name, conf.data_dir = 'shapes', shapes_lmdb   # 40 images
    path = tmp_path / 'latent.pkl'
    save_latents(torch.randn(10, conf.style_ch), str(path))
    conf.latent_infer_path = str(path)
    with pytest.raises(ValueError) as e:
        LitModel(conf).train_dataloader()
    msg = str(e.value)
    assert str(path) in msg and '10 latents' in msg and '40 images' in msg


def _set_length(path, n):
    import lmdb
    env = lmdb.open(path, subdir=os.path.isdir(path), lock=False)
    with env.begin(write=True) as txn:
        txn.put(b'length', str(n).encode())
    env.close()


def test_lmdb_length_is_checked_against_its_records(tmp_path):
    from dataset_util import LMDBFormatError
    short = str(tmp_path / 'short.lmdb')
    shapes_data.make_shapes_lmdb(short, num_images=8)
    _set_length(short, 100)
    with pytest.raises(LMDBFormatError, match='length=100 but has no record'):
        shapes_data.ShapesDataset(short, image_size=32)
    _set_length(short, 4)
    with pytest.warns(UserWarning, match='length=4 but also holds') as rec:
        data = shapes_data.ShapesDataset(short, image_size=32)
    assert 'short.lmdb' in str(rec[0].message)
    assert len(data) == 4


def test_checkpoint_of_other_settings_warns_with_the_fields(tmp_path,
                                                           two_step_run):
    from tiny_training import tiny_shapes_conf

    from experiment import LitModel
    src = os.path.join(two_step_run, 'checkpoints', 'tiny_autoenc',
                       'last.ckpt')
    state = torch.load(src, weights_only=True)
    conf = tiny_shapes_conf(str(tmp_path), 'unused')
    state['hyper_parameters'] = dict(state['hyper_parameters'],
                                     beta_scheduler='cosine', T=500)
    path = tmp_path / 'other.ckpt'
    torch.save(state, path)
    assert conf.beta_scheduler == 'linear' and conf.T != 500
    with pytest.warns(UserWarning, match='other settings') as rec:
        LitModel.from_checkpoint(conf, path)
    msg = str(rec[0].message)
    assert str(path) in msg
    assert "beta_scheduler: checkpoint 'cosine', config 'linear'" in msg
    assert f'T: checkpoint 500, config {conf.T}' in msg
    assert 'img_size' not in msg                     # only what differs


# ---------------------------------------------------------------------------
# images checked before the first step
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def folder_203(tmp_path_factory):
    """200 good PNGs and 3 corrupt files (a truncated PNG, a 0-byte .jpg,
    a truncated JPEG)."""
    import io

    import numpy as np
    from PIL import Image
    d = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    for i in range(200):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                        ).save(d / f'{i:03d}.png')
    png = (d / '000.png').read_bytes()
    (d / 'zz_cut.png').write_bytes(png[:len(png) // 2])
    (d / 'empty.jpg').write_bytes(b'')
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, format='JPEG')
    (d / 'cut.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    return str(d)


BAD3 = ('zz_cut.png', 'empty.jpg', 'cut.jpg')


def _folder_conf(tmp_path, folder, policy):
    from tiny_training import tiny_shapes_conf
    conf = tiny_shapes_conf(str(tmp_path), 'unused')
    conf.data_name = 'imagefolder'
    conf.data_dir = folder
    conf.bad_images = policy
    conf.total_samples = conf.batch_size
    return conf


def test_bad_images_error_lists_all_before_training(tmp_path, folder_203,
                                                    monkeypatch):
    import time

    import image_check
    from experiment import train
    monkeypatch.setenv('DIFFAE_CACHE_DIR', str(tmp_path / 'cache'))
    conf = _folder_conf(tmp_path, folder_203, 'error')
    t0 = time.perf_counter()
    with pytest.raises(image_check.BadImagesError) as e:
        train(conf, gpus=[0], enable_progress_bar=False)
    took = time.perf_counter() - t0
    msg = str(e.value)
    assert '3 of 203 image files' in msg
    for name in BAD3:
        assert os.path.join(folder_203, name) in msg
    assert "bad_images='skip'" in msg
    assert not [f for f in os.listdir(conf.logdir) if f.endswith('.ckpt')]
    # the second check is served from the cache (nothing decoded again)
    t1 = time.perf_counter()
    bad, stats = image_check.check_images(
        folder_203, sorted(os.listdir(folder_203)))
    cached = time.perf_counter() - t1
    assert sorted(bad) == sorted(BAD3)
    assert stats == {'checked': 0, 'cached': 203}
    print(f"\n'error' with 3 bad of 203: stopped after {took:.2f} s "
          f'(incl. model build); cached re-check {cached * 1000:.1f} ms')


def test_bad_images_skip_trains_on_the_good_ones(tmp_path, folder_203,
                                                 monkeypatch):
    from experiment import train
    monkeypatch.setenv('DIFFAE_CACHE_DIR', str(tmp_path / 'cache'))
    conf = _folder_conf(tmp_path, folder_203, 'skip')
    with pytest.warns(UserWarning, match='leaving out 3 .* of 203 .* '
                      'using the other 200'):
        model = train(conf, gpus=[0], enable_progress_bar=False,
                      enable_model_summary=False)
    assert len(model.train_data) == 200
    assert model.global_step == 1
    listing = open(os.path.join(conf.logdir, 'bad_images.txt')).read()
    assert sorted(line.split('\t')[0] for line in listing.splitlines()) == \
        sorted(os.path.join(folder_203, n) for n in BAD3)


def test_cache_rechecks_a_changed_file(tmp_path, folder_203, monkeypatch):
    import shutil

    import image_check
    monkeypatch.setenv('DIFFAE_CACHE_DIR', str(tmp_path / 'cache'))
    d = tmp_path / 'copy'
    shutil.copytree(folder_203, d)
    rels = sorted(os.listdir(d))
    assert image_check.check_images(str(d), rels)[1]['checked'] == 203
    good = (d / '001.png').read_bytes()
    (d / 'zz_cut.png').write_bytes(good)          # repaired
    bad, stats = image_check.check_images(str(d), rels)
    assert stats == {'checked': 1, 'cached': 202}
    assert sorted(bad) == ['cut.jpg', 'empty.jpg']


def test_folder_to_lmdb_checks_every_image_first(tmp_path, folder_203,
                                                 monkeypatch):
    import image_check
    from lmdb_writer import LMDBImageReader, folder_to_lmdb
    monkeypatch.setenv('DIFFAE_CACHE_DIR', str(tmp_path / 'cache'))
    out = tmp_path / 'out.lmdb'
    exts = ['png', 'jpg']
    with pytest.raises(image_check.BadImagesError) as e:
        folder_to_lmdb(folder_203, out, size=32, exts=exts, progress=False)
    assert all(n in str(e.value) for n in BAD3)
    assert not out.exists()
    with pytest.warns(UserWarning, match='leaving out 3'):
        n = folder_to_lmdb(folder_203, out, size=32, exts=exts,
                           progress=False, bad_images='skip')
    assert n == 200
    assert len(LMDBImageReader(str(out), zfill=7, key_prefix='32')) == 200


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------
def test_cli_names_every_bad_image_and_keeps_earlier_results(tmp_path,
                                                             folder_203):
    import cli
    good = os.path.join(folder_203, '000.png')
    paths = [good, os.path.join(folder_203, 'zz_cut.png'),
             os.path.join(folder_203, 'cut.jpg'), str(tmp_path / 'no.png')]
    with pytest.raises(SystemExit) as e:
        cli.load_images(paths, 32)
    msg = str(e.value)
    assert 'cannot read 3 of 4' in msg
    for p in paths[1:]:
        assert p in msg
    assert cli.load_images([good], 32).shape == (1, 3, 32, 32)
    # run twice: the first result is kept, the second numbered
    out = str(tmp_path / 'out' / 'autoencode.png')
    img = torch.rand(1, 3, 8, 8)
    first = cli.save_grid([img], out, nrow=1)
    data = open(first, 'rb').read()
    second = cli.save_grid([img * 0], out, nrow=1)
    assert (first, second) == (out, out.replace('.png', '-1.png'))
    assert open(first, 'rb').read() == data
    assert cli.save_grid([img * 0], out, nrow=1, force=True) == out
    assert open(out, 'rb').read() != data


# ---------------------------------------------------------------------------
# under faults: a run folder that turns read-only
# ---------------------------------------------------------------------------
def test_read_only_run_folder_stops_clearly_and_keeps_last_ckpt(
        tmp_path, shapes_lmdb, monkeypatch):
    """From step 3 on, every checkpoint write into the run folder fails
    with EROFS (simulated in checkpoint_io's open, through which the
    checkpoints are written: the tests run as root, whom chmod does not
    stop)."""
    import builtins
    import errno

    import pytorch_lightning as pl
    from tiny_training import tiny_shapes_conf

    import checkpoint_io
    from experiment import train
    conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
    conf.total_samples = conf.batch_size * 6
    logdir = os.path.abspath(conf.logdir)
    state = {'ro': False}

    def _open(path, *args, **kwargs):
        if state['ro'] and os.path.abspath(path).startswith(logdir):
            raise OSError(errno.EROFS, 'Read-only file system', path)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io, 'open', _open, raising=False)

    class TurnReadOnly(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            state['ro'] = trainer.global_step >= 2

    with pytest.raises(checkpoint_io.CheckpointSaveError) as e:
        train(conf, gpus=[0], callbacks=[TurnReadOnly()],
              enable_progress_bar=False, enable_model_summary=False)
    msg = str(e.value)
    assert 'at step 3' in msg and 'Read-only file system' in msg
    assert os.path.join(logdir, 'last.ckpt') in msg and 'rerun' in msg
    state['ro'] = False
    kept = checkpoint_io.load_checkpoint(os.path.join(logdir, 'last.ckpt'))
    assert kept['global_step'] == 2
    assert not [f for f in os.listdir(logdir) if '.tmp' in f]


# ---------------------------------------------------------------------------
# under load: kill -9 a 2-process (gloo) DDP run mid-epoch
# ---------------------------------------------------------------------------
def _group_alive(pgid):
    """Live (non-zombie) processes of process group ``pgid``."""
    alive = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != 'Z':
            alive.append(int(pid))
    return alive


def test_kill_9_of_a_two_process_ddp_run_resumes_exactly(tmp_path,
                                                         shapes_lmdb):
    import signal
    import subprocess
    import time

    import checkpoint_io
    script = str(ROOT / 'tests' / 'tiny_training.py')
    steps, hang = 6, 3          # 10 steps an epoch: killed mid-epoch

    def launch(work, *extra):
        os.makedirs(work, exist_ok=True)
        with open(work / 'log.txt', 'a') as log:
            return subprocess.Popen(
                [sys.executable, script, str(work), shapes_lmdb, str(steps),
                 '--ddp', '2', *extra], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def finish(proc, work):
        proc.wait(timeout=300)
        assert proc.returncode == 0, open(work / 'log.txt').read()[-3000:]

    def by_rank(work):
        rows = [json.loads(line) for line in open(work / 'losses.jsonl')]
        return {(r['rank'], r['step']): r['loss'] for r in rows}

    finish(launch(tmp_path / 'ref'), tmp_path / 'ref')
    want = by_rank(tmp_path / 'ref')
    assert sorted(want) == [(r, s) for r in (0, 1)
                            for s in range(1, steps + 1)]

    work = tmp_path / 'killed'
    proc = launch(work, '--hang-after', str(hang))
    t0 = time.time()
    while not all((work / f'hang{r}').exists() for r in (0, 1)):
        assert proc.poll() is None and time.time() - t0 < 300, \
            open(work / 'log.txt').read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    t0 = time.time()
    while _group_alive(proc.pid):      # no rank left hanging
        assert time.time() - t0 < 10, _group_alive(proc.pid)
        time.sleep(0.1)
    logdir = work / 'checkpoints' / 'tiny_autoenc'
    assert checkpoint_io.load_checkpoint(logdir / 'last.ckpt')[
        'global_step'] == hang

    finish(launch(work), work)
    got = by_rank(work)
    assert sorted(got) == sorted(want)
    for key, loss in got.items():
        assert loss == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
