"""torch.distributed helpers that also work in a single process."""
import torch
from torch import distributed


def barrier():
    if distributed.is_initialized():
        distributed.barrier()


def broadcast(data, src):
    if distributed.is_initialized():
        distributed.broadcast(data, src)


def get_rank():
    return distributed.get_rank() if distributed.is_initialized() else 0


def get_world_size():
    return (distributed.get_world_size()
            if distributed.is_initialized() else 1)


def chunk_size(size, rank, world_size):
    """How many of ``size`` items rank ``rank`` handles."""
    extra = rank < size % world_size
    return size // world_size + extra


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (sizes may differ along dim 0), rank
    0 first; ``x`` itself in a single process."""
    if not distributed.is_initialized():
        return x
    world = get_world_size()
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    distributed.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes), ) + tuple(x.shape[1:]))
    padded[:len(x)] = x
    out = [torch.zeros_like(padded) for _ in range(world)]
    distributed.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])
