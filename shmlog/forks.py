"""The one registry of what a forked child must undo before it runs.

A child made by ``fork()`` inherits every Python object of its parent: locks a
parent thread held at that instant, the parent's slot and ring caches, its
lock descriptions and listening sockets.  Each module that keeps such state
registers one reset here, once (:func:`on_fork`), and a single
``os.register_at_fork`` hook runs them all in the child, in the order they
were registered: the process state of ``shmlog.api.process`` first (it is
registered when ``shmlog`` is imported), then the log writer's, which a
process only imports when it serves a session.

This module imports nothing from the package: every layer may register.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_callbacks: list[Callable[[], None]] = []
_lock = threading.Lock()


def on_fork(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child forked from now on (registering it again does nothing)."""
    with _lock:
        if callback not in _callbacks:
            _callbacks.append(callback)


def _run_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork
    for callback in list(_callbacks):
        callback()


os.register_at_fork(after_in_child=_run_in_child)

__all__ = ["on_fork"]
