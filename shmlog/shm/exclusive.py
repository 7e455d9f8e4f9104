"""A lock on a control segment that one holder at a time has, and the kernel frees at death.

It is an open-file-description lock (``F_OFD_SETLK``, Linux 3.15+) on the
first byte of the control segment itself: no file of its own in /dev/shm, so
no name another user could create first, plant a symlink at, or open and
hold; only the session's uid can open the segment (mode 0600, owner checked
when it is attached).  It does not interact with the session lock, which is
``flock`` on the whole segment (Linux keeps the two kinds apart).

Each holder opens its own description of the segment, by reopening
``/proc/self/fd/<fd>`` of its mapping: the same inode even if the name was
unlinked and taken again by a new session.  The lock belongs to that
description, so two threads of one process exclude each other like two
processes do, and it is freed when the description is closed or its process
dies.  A forked child shares its parent's descriptions: it must close the
inherited ones (:func:`forget_inherited`), or it would keep the lock held
after its parent died.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading

from .. import forks
from .control import Control

# struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding), 64-bit Linux.
_FLOCK = struct.Struct("@hhqqi4x")
_BUSY = (errno.EAGAIN, errno.EACCES)

_held: set[HeldLock] = set()
_held_lock = threading.Lock()


class HeldLock:
    """One description of a control segment, holding (or trying for) the lock."""

    def __init__(self, control: Control) -> None:
        self._control = control
        self.fd = -1

    def _open(self) -> int:
        # The descriptor of the mapping now (a forked child has its own).
        return os.open(f"/proc/self/fd/{self._control.segment.fd}", os.O_RDWR | os.O_CLOEXEC)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        if self.fd >= 0:
            return True
        fd = self._open()
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
        except OSError as exc:
            os.close(fd)
            if exc.errno in _BUSY:
                return False
            raise
        self.fd = fd
        with _held_lock:
            _held.add(self)
        return True

    def held_by_someone(self) -> bool:
        """Whether another description holds the lock now."""
        fd = self._open()
        try:
            raw = fcntl.fcntl(
                fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
            )
        finally:
            os.close(fd)
        return _FLOCK.unpack(raw)[0] != fcntl.F_UNLCK

    def release(self) -> None:
        if self.fd < 0:
            return
        with _held_lock:
            _held.discard(self)
        fd, self.fd = self.fd, -1
        os.close(fd)  # frees the lock


def forget_inherited() -> None:
    """In a forked child: close the parent's lock descriptions (the parent keeps its lock)."""
    global _held_lock
    _held_lock = threading.Lock()  # a parent thread may have held it at fork
    with_lock = list(_held)
    _held.clear()
    for lock in with_lock:
        if lock.fd >= 0:
            try:
                os.close(lock.fd)
            except OSError:
                pass
            lock.fd = -1


forks.on_fork(forget_inherited)
