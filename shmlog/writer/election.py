"""Choosing the one process that writes a session's log files, and waiting on it.

Exactly one process writes at a time: the holder of the writer lock, a lock
on the session's own control segment that the kernel frees when its holder
dies (``shmlog.shm.exclusive``; no file of its own in /dev/shm, nothing
another user can hold).  The holder names itself in the control segment
(pid and start time: ``SessionSegments.log_writer``).

Processes that would take over (members' standby threads, a sidecar that
lost the race) wait on the named writer's death, not on a timer: a
``pidfd`` (Linux 5.3+) becomes readable the moment the process exits, and
``poll`` sleeps on it without using the CPU, with a timeout for
housekeeping.  Where pidfds are missing, the wait is a sleep of that timeout.
"""

from __future__ import annotations

import os
import select
import time

from ..shm.control import STATE_CLOSED
from ..shm.exclusive import HeldLock
from ..shm.liveness import is_alive
from ..shm.session import SessionSegments

__all__ = ["HeldLock", "closing", "wait_for_exit", "writer_alive", "writer_lock"]


def writer_lock(segments: SessionSegments) -> HeldLock:
    """A lock object of this thread's own for ``segments``'s writer election."""
    return HeldLock(segments.control)


def writer_alive(segments: SessionSegments) -> bool:
    pid, start = segments.log_writer()
    return is_alive(pid, start)


def closing(segments: SessionSegments) -> bool:
    """Whether the session is closed (by this handle or by its last member)."""
    try:
        return segments.closed or segments.control.read_state().state == STATE_CLOSED
    except ValueError:  # unmapped
        return True


def wait_for_exit(pid: int, start: int, timeout: float, wake_fd: int | None = None) -> bool:
    """Sleep until process ``pid`` (started at ``start``) exits, ``wake_fd`` is readable
    or ``timeout`` seconds pass; True when the process is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfds here: wait out the timeout
        _sleep(timeout, wake_fd)
        return not is_alive(pid, start)
    try:
        if not is_alive(pid, start):
            return True  # exited, or a recycled pid: not the writer any more
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        ready = poller.poll(int(timeout * 1000))
        return any(fd == pidfd for fd, _ in ready)
    finally:
        os.close(pidfd)


def _sleep(timeout: float, wake_fd: int | None) -> None:
    if wake_fd is None:
        time.sleep(timeout)
    else:
        select.select([wake_fd], [], [], timeout)
