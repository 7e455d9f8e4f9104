"""A doorbell in the control segment: producers ring it, one reader sleeps on it.

The doorbell is a process-shared POSIX semaphore (``sem_t``, unnamed) that
lives at ``DOORBELL_AT`` in the control segment, so it has no name in
/dev/shm that anyone could plant or hold, and only the session's uid can map
it (the segment is 0600).  It is initialised once, while the control segment
is still being built under its temporary name.

The reader sleeps in :meth:`Doorbell.sleep`, which raises the ``asleep``
word next to the semaphore, checks once more for work, and only then waits
(``sem_clockwait`` on CLOCK_MONOTONIC, ``sem_timedwait`` where glibc lacks
it; no CPU is used, and ctypes releases the GIL meanwhile).  A producer rings
(``sem_post``: an atomic increment and one ``futex`` wake) only when, after
publishing its record, it sees the reader asleep, so logging into a busy
session costs no system call.  Both sides put a full barrier between their
store and their load (the reader's ``asleep`` and the producer's record), so
one of them always sees the other: a record is never left waiting for the
timeout.  ``clear`` takes every pending ring (``sem_trywait`` until it would
block).

Semaphores are not released when a holder dies, which matters for locks,
not here: a count left by a dead producer only wakes the reader once more.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import time
from collections.abc import Callable

from .fence import full_fence

DOORBELL_AT = 128
SEM_BYTES = 32  # sizeof(sem_t) on 64-bit glibc
ASLEEP_AT = DOORBELL_AT + SEM_BYTES  # u32: 1 while the reader sleeps on the doorbell
CLOCK_MONOTONIC = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_sem_init = _libc.sem_init
_sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
_sem_post = _libc.sem_post
_sem_post.argtypes = [ctypes.c_void_p]
_sem_trywait = _libc.sem_trywait
_sem_trywait.argtypes = [ctypes.c_void_p]
_sem_getvalue = _libc.sem_getvalue
_sem_getvalue.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
_sem_clockwait = getattr(_libc, "sem_clockwait", None)
if _sem_clockwait is not None:
    _sem_clockwait.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec)]
_sem_timedwait = _libc.sem_timedwait
_sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Timespec)]


class Doorbell:
    """The doorbell of one mapped control segment."""

    def __init__(self, mm: object) -> None:
        # The cell is an export of the mapping: while this object lives, the
        # mapping cannot be unmapped (``Segment.close`` leaves it to the
        # garbage collector), so a thread that rings a closed session's
        # doorbell touches valid memory, never an unmapped page.
        self._cell = (ctypes.c_char * SEM_BYTES).from_buffer(mm, DOORBELL_AT)
        self._address = ctypes.addressof(self._cell)
        self._asleep = memoryview(mm)[ASLEEP_AT : ASLEEP_AT + 4].cast("I")

    @staticmethod
    def initialise(mm: object) -> None:
        """Set up the semaphore in a control segment nobody else has mapped yet."""
        cell = (ctypes.c_char * SEM_BYTES).from_buffer(mm, DOORBELL_AT)
        try:
            if _sem_init(ctypes.addressof(cell), 1, 0) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"sem_init: {os.strerror(code)}")
        finally:
            del cell

    def ring(self) -> None:
        _sem_post(self._address)

    def ring_if_asleep(self) -> None:
        """Ring when the reader sleeps (call after publishing, and after a full barrier)."""
        if self._asleep[0]:
            _sem_post(self._address)

    def sleep(self, timeout: float, work: Callable[[], bool]) -> bool:
        """Sleep until rung or ``timeout`` passed, unless ``work()`` says there is some.

        True when woken by a ring (or when there was work).
        """
        self._asleep[0] = 1
        try:
            full_fence()
            if work():
                return True
            return self.wait(timeout)
        finally:
            self._asleep[0] = 0

    def clear(self) -> None:
        """Take every pending ring, without blocking."""
        while _sem_trywait(self._address) == 0:
            pass

    def pending(self) -> int:
        value = ctypes.c_int(0)
        _sem_getvalue(self._address, ctypes.byref(value))
        return value.value

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` seconds passed; True when rung."""
        if _sem_clockwait is not None:
            deadline = time.monotonic() + timeout
            clock = CLOCK_MONOTONIC
        else:
            deadline = time.time() + timeout
            clock = -1
        frac, whole = math.modf(deadline)
        spec = _Timespec(int(whole), int(frac * 1e9))
        while True:
            if clock >= 0:
                result = _sem_clockwait(self._address, clock, ctypes.byref(spec))
            else:
                result = _sem_timedwait(self._address, ctypes.byref(spec))
            if result == 0:
                return True
            code = ctypes.get_errno()
            if code == errno.ETIMEDOUT:
                return False
            if code != errno.EINTR:
                raise OSError(code, f"waiting on the doorbell: {os.strerror(code)}")
