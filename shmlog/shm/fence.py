"""Memory barriers for CPUs that may reorder stores or loads.

The ring protocol (``shmlog.shm.scalar_rings``) relies on stores becoming visible in
program order and loads not passing each other.  x86-64 (TSO) provides both
in hardware, so there ``fence`` is None and the hot path pays nothing.

On every other architecture ``fence`` is a call into libc's
``atomic_thread_fence`` equivalent: a release of a private, never-contended
pthread spinlock followed by a re-acquire.  glibc implements these with
release and acquire atomics, which on aarch64 and ppc64le emit the barrier
instructions (``stlr``/``ldaxr``, ``lwsync``) that order the surrounding
accesses.  It costs a ctypes call (about half a microsecond) per barrier.
``SHMLOG_FENCE=1`` forces it on (to exercise it on x86-64), ``SHMLOG_FENCE=0``
forces it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import Callable

_TSO_MACHINES = {"x86_64", "amd64", "i386", "i686"}


def _make_fence() -> Callable[[], None] | None:
    forced = os.environ.get("SHMLOG_FENCE")
    if forced == "0":
        return None
    if forced != "1" and platform.machine().lower() in _TSO_MACHINES:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lock = ctypes.c_int(0)
    libc.pthread_spin_init(ctypes.byref(lock), 0)
    libc.pthread_spin_lock(ctypes.byref(lock))
    ref = ctypes.byref(lock)
    unlock, relock = libc.pthread_spin_unlock, libc.pthread_spin_lock

    def fence() -> None:
        unlock(ref)
        relock(ref)

    return fence


fence: Callable[[], None] | None = _make_fence()


_BARRIER = threading.Lock()


def full_fence() -> None:
    """A barrier that orders this thread's earlier stores before its later loads.

    Acquiring and releasing a CPython lock is an atomic compare-and-swap on
    the lock's word, which x86-64 executes as a locked instruction: a full
    barrier.  Elsewhere ``fence`` is added; there, a reader that a lost
    wake-up would leave asleep wakes at its own timeout instead.
    """
    _BARRIER.acquire()
    _BARRIER.release()
    if fence is not None:
        fence()
