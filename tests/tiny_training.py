"""A tiny training run, as a script for the tests that kill or restart a
process or run several: ``python tests/tiny_training.py <workdir>
<shapes.lmdb> <steps> [--slow-save-after N] [--hang-after N]
[--ddp N [--infer]]``.

Writes one JSON line per optimizer step (step, loss) to
<workdir>/losses.jsonl and saves a checkpoint every step."""
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from conftest import conf_from_recipe, golden, load_recipe  # noqa


def tiny_shapes_conf(workdir, lmdb_path):
    path = golden('tiny_autoenc')
    conf = conf_from_recipe(load_recipe(path)['recipe'])
    conf.data_name = 'shapes'
    conf.data_dir = lmdb_path
    conf.base_dir = os.path.join(workdir, 'checkpoints')
    conf.num_workers = 0
    conf.batch_size = 4
    conf.batch_size_eval = 4
    conf.sample_every_samples = 0
    conf.save_every_samples = 4
    conf.lr = 1e-3
    conf.seed = 3
    # the same arithmetic on every machine class ('auto' would pick bf16 on
    # CPUs with native bf16 only)
    conf.precision = '32-true'
    return conf


class LossLog(pl.Callback):
    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        with open(self.path, 'a') as f:
            f.write(json.dumps({'step': trainer.global_step,
                                'rank': trainer.global_rank,
                                'loss': float(outputs['loss'])}) + '\n')


class BatchLog(pl.Callback):
    """Records what each process trains on (rank, world size, local
    batch)."""

    def __init__(self, workdir):
        self.workdir = workdir

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        path = os.path.join(self.workdir, f'batches{trainer.global_rank}'
                            '.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps({'rank': trainer.global_rank,
                                'world': trainer.world_size,
                                'local_batch': len(batch['img']),
                                'index': batch['index'].tolist()}) + '\n')


class SlowSave(pl.Callback):
    """Makes checkpoint writes after the first ``after`` ones hang halfway
    (to kill the process in the middle of a save): half the bytes reach
    the temporary file of checkpoint_io.atomic_write, then it sleeps."""

    def __init__(self, after):
        import checkpoint_io
        real_write = checkpoint_io.atomic_write
        count = {'n': 0}

        def atomic_write(path, write, binary=True):
            if not str(path).endswith('.ckpt'):
                return real_write(path, write, binary)
            count['n'] += 1
            if count['n'] <= after:
                return real_write(path, write, binary)

            def half(f):
                buf = io.BytesIO()
                write(buf)
                f.write(buf.getvalue()[:buf.tell() // 2])
                f.flush()
                print('SLOW-SAVE', path, flush=True)
                time.sleep(600)
            return real_write(path, half, binary)

        checkpoint_io.atomic_write = atomic_write


class HangAfter(pl.Callback):
    """Hangs every process once step ``n`` is done and saved (to kill
    the run there, mid-epoch); each writes <workdir>/hang<rank> first."""

    def __init__(self, n):
        self.n = n

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.n:
            open(os.path.join(sys.argv[1], f'hang{trainer.global_rank}'),
                 'w').close()
            time.sleep(600)


def main():
    workdir, lmdb_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    callbacks = [LossLog(os.path.join(workdir, 'losses.jsonl'))]
    if '--slow-save-after' in sys.argv:
        callbacks.append(SlowSave(int(sys.argv[sys.argv.index(
            '--slow-save-after') + 1])))
    from experiment import train
    conf = tiny_shapes_conf(workdir, lmdb_path)
    conf.total_samples = conf.batch_size * steps
    torch.set_num_threads(1)
    kwargs = dict(enable_progress_bar=False, enable_model_summary=False)
    if '--hang-after' in sys.argv:
        callbacks.append(HangAfter(int(sys.argv[sys.argv.index(
            '--hang-after') + 1])))
    if '--ddp' in sys.argv:
        n = int(sys.argv[sys.argv.index('--ddp') + 1])
        callbacks.append(BatchLog(workdir))
        if '--infer' in sys.argv:
            conf.eval_programs = ['infer']
            conf.batch_size_eval = 3
            train(conf, gpus=n, accelerator='cpu', mode='eval', **kwargs)
        else:
            train(conf, gpus=n, accelerator='cpu', callbacks=callbacks,
                  **kwargs)
        return
    train(conf, gpus=[0], callbacks=callbacks, **kwargs)


if __name__ == '__main__':
    main()
