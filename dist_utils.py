"""torch.distributed helpers that also work in a single process."""
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
