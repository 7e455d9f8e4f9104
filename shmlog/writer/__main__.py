"""The log-writer sidecar: ``python -m shmlog.writer SESSION``.

Attach to the session (without joining it: the sidecar never keeps a session
alive), take the writer lock, and write while any process of the session is
alive.  Nothing imports this module; running a module that is already
imported with ``-m`` would run it twice.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from ..errors import SessionError
from ..shm.session import SessionSegments
from . import election
from .serve import HOUSEKEEPING_SECONDS, nobody_left, serve


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shmlog.writer SESSION", file=sys.stderr)
        return 2
    try:
        segments = SessionSegments.open(argv[0], member=False, create=False)
    except SessionError:
        return 0  # the session closed before the sidecar got to it: nothing to write
    stop = threading.Event()
    wake_read, wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # write what is there, then exit
        segments.doorbell.ring()
        os.write(wake_write, b"x")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = election.writer_lock(segments)
    try:
        while not stop.is_set():
            if nobody_left(segments, until_members_leave=True):
                return 0
            if lock.try_acquire():
                serve(segments, lock, stop, until_members_leave=True)
                return 0
            pid, start = segments.log_writer()
            if pid and pid != os.getpid():
                election.wait_for_exit(pid, start, HOUSEKEEPING_SECONDS, wake_read)
            else:  # the lock's holder is about to name itself
                stop.wait(0.01)
        return 0
    finally:
        segments.close()


sys.exit(main(sys.argv[1:]))
