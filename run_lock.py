"""One training run per run folder: ``<logdir>/run.lock``.

The lock file holds its holder's host, PID (and the PID's start time, so a
reused PID is not taken for the holder) and command. A second run on the
folder stops at once with an error naming the holder; a lock whose holder
is gone (same host, PID dead) is stale and taken over, said loudly. The
processes of one DDP run share the lock: only the run's first process
(rank 0 as the launcher's environment says, before any process group
exists) takes it.
"""
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from typing import Optional

from checkpoint_io import fsync_dir, pid_alive, remove_stale_temps

LOCK_NAME = 'run.lock'
# set by torchrun / srun / Lightning's process launcher for every process;
# a run's first process has 0 in all of them (or none set)
RANK_VARS = ('RANK', 'SLURM_PROCID', 'LOCAL_RANK', 'NODE_RANK')


class RunFolderLockedError(RuntimeError):
    """Another live process trains in this run folder."""


def is_first_process() -> bool:
    """Whether this process is rank 0 of its run (by the launcher's
    environment variables; True for a plain single process)."""
    for var in RANK_VARS:
        try:
            if int(os.environ.get(var, '0')) != 0:
                return False
        except ValueError:
            continue
    return True


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (Linux), to tell a reused PID."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me() -> dict:
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'start': _start_time(os.getpid()),
            'since': time.strftime('%Y-%m-%d %H:%M:%S'),
            'command': ' '.join(sys.argv)[:300]}


def holder_gone(holder: dict) -> bool:
    """True when the holder is known to be dead: it ran on this host and
    its PID is gone (or is now another process)."""
    if holder.get('host') != socket.gethostname():
        return False
    pid = holder.get('pid')
    if not isinstance(pid, int) or not pid_alive(pid):
        return True
    start = holder.get('start')
    return start is not None and _start_time(pid) not in (None, start)


def _read(path) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}   # unreadable: treated as held by an unknown process


def _describe(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} (since {holder.get('since', '?')}: "
            f"{holder.get('command', '?')})")


def _refusal(folder, path, holder) -> RunFolderLockedError:
    return RunFolderLockedError(
        f'the run folder {folder} is in use by {_describe(holder)}: two '
        'runs on one folder would overwrite each other\'s last.ckpt. Wait '
        'for that run to end or stop it, or train under another conf.name. '
        f'If that process is gone (e.g. its host is down), delete {path} '
        'and rerun: the run resumes from its last checkpoint.')


def acquire(folder) -> str:
    """Take ``<folder>/run.lock`` for this process (a stale one is taken
    over, with a warning); RunFolderLockedError when a live process holds
    it. Leftovers of killed writes in the folder are removed once the lock
    is held. Returns the lock's path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    me = _me()
    # the guard serialises check-and-take among processes that start at once
    with open(path + '.guard', 'a') as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        holder = _read(path)
        if holder is not None:
            if holder.get('pid') == me['pid'] and \
                    holder.get('host') == me['host']:
                raise _refusal(folder, path, holder)  # a nested train()
            if not holder_gone(holder):
                raise _refusal(folder, path, holder)
            msg = (f'{path}: its holder, {_describe(holder)}, is gone; '
                   'taking the lock over (the run resumes from its last '
                   'checkpoint)')
            warnings.warn(msg)
            print('WARNING:', msg, flush=True)
        tmp = f'{path}.tmp-{me["host"]}-{me["pid"]}'
        with open(tmp, 'w') as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    remove_stale_temps(folder)
    return path


def release(path) -> None:
    """Remove the lock at ``path`` if this process still holds it."""
    holder = _read(path)
    if holder and holder.get('pid') == os.getpid() and \
            holder.get('host') == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def run_folder_lock(folder):
    """Hold the run folder's lock for the block (only in a run's first
    process; the others of a DDP run share it)."""
    if not is_first_process():
        yield None
        return
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)


__all__ = ['run_folder_lock', 'acquire', 'release', 'is_first_process',
           'holder_gone', 'RunFolderLockedError', 'LOCK_NAME']
