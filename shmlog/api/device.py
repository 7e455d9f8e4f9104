"""Device values in this process: where they land, who lands them, and what a fork keeps.

``shmlog.stats.device_values`` stages a CUDA tensor given to
``update_scalar`` instead of reading it.  This module ties that to the
process:

* :func:`defer` stages a value for a key of a hub's store (the session's
  SharedHub, or the hub's own memory outside a session);
* :func:`settle` is what every reader in this process calls first
  (``MessageHub.get_scalar``/``log_scalars``, ``report_progress`` at a
  logging step, an MMEngine hub's reads, closing a session): it waits only
  for values logged before it, with one wait per stream at most;
* a daemon thread, started on the first staged value, lands completed values
  every :data:`LAND_SECONDS` while any are staged, without blocking on the
  device, so other processes (``shmlog top``, the metrics endpoint, the log
  writer) see values even when this process stops logging; it sleeps without
  a timeout while nothing is staged;
* at exit the staged values land; a forked child drops its parent's staged
  values without touching the device (registered with ``shmlog.forks``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from .. import forks
from ..stats.device_values import DEFERRED
from .logger import print_log

__all__ = ["LAND_SECONDS", "defer", "device_values_stats", "set_device_slots", "settle"]

LAND_SECONDS = 0.5

_lander_pid: int | None = None
_exit_hook = False
_start_lock = threading.Lock()


def defer(store: Any, key: str, value: Any, count: Any) -> None:
    """Stage ``value`` (and ``count``) for ``key`` of ``store`` (a LocalHub or SharedHub)."""
    DEFERRED.submit(lambda: store.deferred_sink(key), key, value, count)


def settle(key: str | None = None) -> None:
    """Land every value this process logged before now (the readers' one wait);
    with ``key``, those of ``key`` (a reader of one scalar)."""
    if DEFERRED.queue:
        DEFERRED.settle(key)


def set_device_slots(slots: int) -> None:
    """Size of this process's pinned staging pool for device values (default 4096).

    Each slot holds one float64 (8 bytes of page-locked host memory), taken
    by a logged value from the moment it is logged until it lands.  A pool
    that fills makes logging wait for the oldest value, once counted and
    reported.  The environment variable ``SHMLOG_DEVICE_SLOTS`` sets the
    default.  Staged values land before the pool is replaced.
    """
    DEFERRED.configure(slots)


def device_values_stats() -> dict[str, int]:
    """This process's staged values: ``pending``, ``slots``, ``full_waits``,
    ``reader_waits`` (waits by readers) and ``dropped`` (updates whose device
    count was invalid)."""
    return DEFERRED.stats()


def _report(message: str) -> None:
    print_log(message, logger="current", level=logging.WARNING)


def _on_pending() -> None:
    """The queue went from empty to non-empty: make sure this process's lander runs."""
    global _lander_pid, _exit_hook
    pid = os.getpid()
    if _lander_pid != pid:
        with _start_lock:
            if _lander_pid != pid:
                threading.Thread(target=_land_forever, name="shmlog-device-values",
                                 daemon=True).start()
                _lander_pid = pid
            if not _exit_hook:
                _exit_hook = True
                atexit.register(_land_at_exit)
    DEFERRED.notify()


def _land_forever() -> None:
    pause = threading.Event()
    while True:
        if DEFERRED.wait_for_pending(None):
            pause.wait(LAND_SECONDS)
            DEFERRED.land_ready()


def _land_at_exit() -> None:
    if _lander_pid == os.getpid():
        settle()


def _after_fork_in_child() -> None:
    global _lander_pid
    _lander_pid = None  # the parent's thread is not the child's
    DEFERRED.after_fork_in_child()


DEFERRED.report = _report
DEFERRED.on_pending = _on_pending
forks.on_fork(_after_fork_in_child)
