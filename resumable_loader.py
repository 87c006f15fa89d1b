"""Training data order that a resumed run continues exactly: the sampler
and loader that ``LitModel.train_dataloader`` uses (see README,
Resuming)."""
import torch
from torch.utils.data import DataLoader, Sampler

class ResumableSampler(Sampler):
    """This rank's indices of one epoch, in an order that depends only on
    (seed, epoch): a run resumed in the middle of an epoch skips exactly
    the samples the interrupted run had consumed and then sees the same
    batches an uninterrupted run would.

    Every rank draws the same permutation and takes every
    ``world_size``-th index (the tail that does not divide evenly is
    dropped with ``drop_last``, else padded from the start).
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        # samples of this rank already consumed in the current epoch
        self.consumed = 0
        self._skip = 0

    def set_epoch(self, epoch: int):
        """Called by Lightning at the start of each epoch."""
        if epoch != self.epoch:
            # a new epoch starts from its first sample, also right after a
            # resume from a save at the last batch of the previous epoch
            self.consumed = self._skip = 0
        self.epoch = epoch

    def _indices(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        ws = self.world_size
        if self.drop_last:
            order = order[:len(order) // ws * ws]
        elif len(order) % ws:
            order += order[:ws - len(order) % ws]
        return order[self.rank::ws]

    def __iter__(self):
        skip, self._skip = self._skip, 0
        self.consumed = skip
        return iter(self._indices()[skip:])

    def __len__(self):
        # the full epoch (Lightning counts the resumed batches itself)
        return len(self._indices())

    def state_dict(self):
        return {'epoch': self.epoch, 'consumed': self.consumed}

    def load_state_dict(self, state):
        self.epoch = state['epoch']
        self._skip = self.consumed = state['consumed']


class ResumableDataLoader(DataLoader):
    """DataLoader whose position in the epoch is saved in Lightning
    checkpoints (Lightning calls state_dict/load_state_dict on stateful
    loaders). The trainer reports consumed batches through
    ``mark_consumed``, so prefetched batches are not counted."""

    def __init__(self, dataset, batch_size: int, sampler: ResumableSampler,
                 **kwargs):
        # the loader's own generator: starting an epoch's iterator draws
        # its worker base seed from it, not from the global RNG (whose state
        # a checkpoint restores), so a run resumed at an epoch boundary
        # draws the dropout an uninterrupted one would
        kwargs.setdefault('generator', torch.Generator())
        super().__init__(dataset, batch_size=batch_size, sampler=sampler,
                         **kwargs)

    def __iter__(self):
        s = self.sampler
        # worker seeds depend on (seed, epoch, position) only
        self.generator.manual_seed(
            (s.seed * 100_003 + s.epoch) * 1_000_003 + s._skip + s.rank)
        return super().__iter__()

    def mark_consumed(self, batches_in_epoch: int):
        self.sampler.consumed = batches_in_epoch * self.batch_size

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)
