"""Which launcher started this process (torchrun, or srun under SLURM) and
how many processes it started, so that ``train(conf, gpus, nodes)`` asks
Lightning for exactly those.

Lightning 2.x chooses its cluster environment itself, in this order:
torchelastic (torchrun sets ``TORCHELASTIC_RUN_ID``), then SLURM
(``SLURM_NTASKS`` set and a job name other than ``bash``/``interactive``:
srun started the processes). It then requires ``devices`` (per node) and
``num_nodes`` to equal what the launcher started, and raises otherwise.
``detect()`` uses Lightning's own ``detect()`` methods, in the same order,
so both agree. Without a launcher (``python run_ffhq128.py``) nothing
changes: Lightning starts one process per device itself.
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Union


@dataclass(frozen=True)
class Launch:
    """What the launcher started: ``nodes`` x ``per_node`` processes."""
    name: str       # 'torchrun' or 'srun'
    world_size: int
    nodes: int
    per_node: int


def detect() -> Optional[Launch]:
    """The launcher of this process, or None (Lightning will start the
    processes itself)."""
    from lightning_fabric.plugins.environments import (SLURMEnvironment,
                                                       TorchElasticEnvironment)
    if TorchElasticEnvironment.detect():
        world = int(os.environ['WORLD_SIZE'])
        per_node = int(os.environ['LOCAL_WORLD_SIZE'])
        if world % per_node:
            raise ValueError(
                f'torchrun started {world} processes with {per_node} on this '
                'node: every node must run the same number '
                '(torchrun --nproc-per-node N on each node)')
        return Launch('torchrun', world, world // per_node, per_node)
    if SLURMEnvironment.detect():
        world = int(os.environ['SLURM_NTASKS'])
        nodes = int(os.environ.get('SLURM_NNODES', '1'))
        per_node = os.environ.get('SLURM_NTASKS_PER_NODE')
        if per_node is None:
            if world > 1:
                raise ValueError(
                    f'SLURM started {world} tasks without --ntasks-per-node, '
                    'which Lightning 2.x requires: in your sbatch script ask '
                    f'for "#SBATCH --nodes={nodes}" and "#SBATCH '
                    f'--ntasks-per-node={max(1, world // nodes)}" (one task '
                    'per GPU) instead of --ntasks (see run_ffhq256.sh)')
            per_node = 1
        return Launch('srun', world, nodes, int(per_node))
    return None


def fit_to_launcher(accelerator: str, devices: Union[int, List[int]],
                    nodes: int):
    """(devices, nodes) for Lightning: what the launcher started, when one
    did (a warning when that differs from what was asked; the batch sizes
    in the config are global, so the training is the same), else the
    request unchanged."""
    launch = detect()
    if launch is None:
        return devices, nodes
    n_dev = len(devices) if isinstance(devices, list) else devices
    if (n_dev, nodes) == (launch.per_node, launch.nodes):
        return devices, nodes
    from lightning_fabric.utilities.rank_zero import rank_zero_warn
    rank_zero_warn(
        f'{n_dev} device(s) x {nodes} node(s) were asked for, but '
        f'{launch.name} started {launch.per_node} process(es) per node on '
        f'{launch.nodes} node(s): training with those {launch.world_size} '
        'processes (the global conf.batch_size is divided over them)')
    if accelerator == 'gpu':
        import torch
        visible = torch.cuda.device_count()
        if launch.per_node > visible:
            raise ValueError(
                f'{launch.name} started {launch.per_node} processes on this '
                f'node but each sees {visible} GPU(s): every process must see '
                'all the GPUs of its node (one process per GPU; under SLURM '
                '"#SBATCH --gres=gpu:N" without --gpus-per-task/--gpu-bind)')
        return list(range(launch.per_node)), launch.nodes
    return launch.per_node, launch.nodes


def require_single_process(what: str):
    """Raise when a launcher started several processes for code that runs
    in one (e.g. the attribute classifier)."""
    launch = detect()
    if launch is not None and launch.world_size > 1:
        raise RuntimeError(
            f'{what} trains in one process, but {launch.name} started '
            f'{launch.world_size}: run it with plain python (no srun/'
            'torchrun)')


__all__ = ['Launch', 'detect', 'fit_to_launcher', 'require_single_process']
