"""Choosing the one process that writes a session's log files.

Exactly one process writes at a time: the holder of a ``filelock`` lock
beside the session's segments (``...@writer.lock``), which the kernel
releases when its holder dies.  Its pid is published in the control segment
(``SessionSegments.writer_pid``).

Every member runs a standby thread (``shmlog.writer.serve.Standby``) that
takes the lock when the writer is gone.
"""

from __future__ import annotations

import os

import filelock

from ..shm.control import STATE_CLOSED, process_start
from ..shm.names import prefix
from ..shm.session import SessionSegments

# Writer locks this process holds.  A forked child (a DataLoader worker of a
# member that took over writing) must not keep their descriptors: with filelock
# releases before 4.x it would, and the lock would outlive its writer.
_held: list[filelock.BaseFileLock] = []


def forget_inherited_locks() -> None:
    """In a forked child: close the descriptors of the parent's writer locks."""
    for lock in _held:
        context = getattr(lock, "_context", None)
        fd = getattr(context, "lock_file_fd", None)
        if isinstance(fd, int):
            try:
                os.close(fd)
            except OSError:
                pass
            context.lock_file_fd = None
            context.lock_counter = 0
    _held.clear()


def lock_path(name: str) -> str:
    return f"/dev/shm/{prefix(name)}writer.lock"


def writer_lock(name: str) -> filelock.BaseFileLock:
    return filelock.FileLock(lock_path(name))


def hold(lock: filelock.BaseFileLock) -> None:
    """Record ``lock`` as held by this process (see :func:`forget_inherited_locks`)."""
    _held.append(lock)


def release(lock: filelock.BaseFileLock, name: str, closing: bool) -> None:
    """Let ``lock`` go; ``closing``: the session is gone, so is the lock file."""
    if closing:
        # The last member removed the lock file with the segments; taking
        # the lock after that (an acquire re-creates a missing file) must
        # not leave a new one behind in /dev/shm.
        try:
            os.unlink(lock_path(name))
        except OSError:
            pass
    if lock in _held:
        _held.remove(lock)
    lock.release()


def writer_alive(segments: SessionSegments) -> bool:
    pid = segments.writer_pid
    return pid > 0 and process_start(pid) is not None


def closing(segments: SessionSegments) -> bool:
    """Whether the session is closed (by this handle or by its last member)."""
    try:
        return segments.closed or segments.control.read_state().state == STATE_CLOSED
    except ValueError:  # unmapped
        return True
