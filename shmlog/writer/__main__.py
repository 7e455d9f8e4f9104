"""The log-writer sidecar: ``python -m shmlog.writer SESSION``.

Attach to the session (without joining it: the sidecar never keeps a session
alive), take the writer lock, and write until no member is left.  Nothing
imports this module; running a module that is already imported with ``-m``
would run it twice.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import filelock

from ..shm.names import SessionError
from ..shm.session import SessionSegments
from . import election
from .serve import CHECK_SECONDS, serve


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shmlog.writer SESSION", file=sys.stderr)
        return 2
    name = argv[0]
    try:
        segments = SessionSegments.open(name, member=False, create=False)
    except SessionError:
        return 0  # the session closed before the sidecar got to it: nothing to write
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # drain what is there, then exit

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = election.writer_lock(name)
    try:
        while not stop.is_set():
            if election.closing(segments) or segments.live_members() == 0:
                return 0
            try:
                lock.acquire(timeout=CHECK_SECONDS)
            except filelock.Timeout:
                continue
            serve(segments, lock, stop, until_members_leave=True)
            return 0
        return 0
    finally:
        segments.close()


sys.exit(main(sys.argv[1:]))
