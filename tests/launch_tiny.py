"""The tiny training that the launch tests (tests/test_launch.py) run in
place of the full ffhq256 one: ``train(conf, gpus, nodes)`` as
``run_ffhq256.py`` calls it, on a 32x32 config, for a few steps.

Each process appends one JSON line per step to ``<cwd>/ranks/<rank>.jsonl``
(rank, world, node, local rank, step, its own loss, the dataset rows it
trained on). $LAUNCH_TEST_LPIPS_TRUNK (a stand-in AlexNet file) turns
the perceptual loss term on. Checkpoints go to ``<cwd>/checkpoints``
(relative: the launch script must have changed into the submit folder)."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import pytorch_lightning as pl  # noqa: E402

from tiny_training import tiny_shapes_conf  # noqa: E402

STEPS = 3


def launch_conf(lmdb_path):
    """Global batch 4, no dropout (dropout masks are a per-process random
    stream; the timesteps and noise are not, see LitModel._draw_t_noise)."""
    conf = tiny_shapes_conf('.', lmdb_path)
    conf.base_dir = 'checkpoints'
    conf.dropout = 0.0
    conf.name = 'launch_tiny'
    conf.make_model_conf()
    conf.total_samples = conf.batch_size * STEPS
    conf.save_every_samples = conf.batch_size * STEPS
    if os.environ.get('LAUNCH_TEST_LPIPS_TRUNK'):
        # the perceptual loss term on, at every timestep
        conf.lpips_loss_weight = 0.5
        conf.lpips_loss_t_max = conf.T
        conf.lpips_loss_trunk_path = os.environ['LAUNCH_TEST_LPIPS_TRUNK']
    return conf


class RankLog(pl.Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f'{trainer.global_rank}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps({
                'rank': trainer.global_rank, 'world': trainer.world_size,
                'node': trainer.node_rank, 'local': trainer.local_rank,
                'step': trainer.global_step, 'loss': float(outputs['loss']),
                'index': batch['index'].tolist()}) + '\n')


def main(gpus, nodes):
    """The body of the run script a launch test writes: one process of
    the launched job (dataset: $LAUNCH_TEST_LMDB)."""
    import torch
    torch.set_num_threads(1)
    run(gpus, nodes)


def run(gpus, nodes, lmdb_path=None, folder='.', **kwargs):
    """``train(conf, gpus=gpus, nodes=nodes)`` of the tiny config, in
    ``folder``; the dataset is $LAUNCH_TEST_LMDB unless given."""
    from experiment import train
    lmdb_path = lmdb_path or os.environ['LAUNCH_TEST_LMDB']
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        conf = launch_conf(lmdb_path)
        train(conf, gpus=gpus, nodes=nodes,
              callbacks=[RankLog(os.path.abspath('ranks'))],
              enable_progress_bar=False, enable_model_summary=False,
              **kwargs)
    finally:
        os.chdir(cwd)
