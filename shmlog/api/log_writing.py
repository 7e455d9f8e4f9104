"""A member's part in writing the session's log files: starting it, and leaving it.

Unless the session's ``log_writer`` option is ``'none'``, every member runs a
standby thread (``shmlog.writer.serve.Standby``) ready to take log writing
over, and the member that created a ``'sidecar'`` session starts the sidecar
process.  When the member leaves, its records are flushed (drained by this
process if the log writer does not get to them within ``FLUSH_SECONDS``),
its standby thread stops, and the sidecar it started is reaped once it exits.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..errors import SessionError
from ..shm.liveness import process_start
from ..shm.session import SessionSegments
from .record_handler import wait_drained

FLUSH_SECONDS = 10.0


class LogWriting:
    """The standby thread and the sidecar process of one member (None where it has none)."""

    def __init__(self) -> None:
        self.standby: Any = None
        self.sidecar: Any = None

    def start(self, segments: SessionSegments, mode: str) -> None:
        """Start what the ``log_writer`` option ``mode`` asks of this member."""
        if mode == "none":
            return
        # Only members load the log writer: a DataLoader worker never does.
        from ..writer import serve

        if mode == "sidecar" and segments.created:
            me = (os.getpid(), process_start(os.getpid()) or 0)
            self.sidecar = serve.start_sidecar(segments, placeholder=me)
        self.standby = serve.Standby(segments)

    def leave(self, session: Any, member: bool) -> None:
        """Flush ``session``'s records of this process, and hand over or finish log writing."""
        segments = session.shared
        if segments.closed or segments.pid != os.getpid():
            return
        try:
            last = member and segments.live_members() <= 1
            pending = session.ships_records and segments.record_consumers()
            if pending and not wait_drained(session, FLUSH_SECONDS, everyone=last):
                from ..writer.serve import drain_here

                drain_here(segments)
            if self.standby is not None:
                self.standby.stop()
        except (SessionError, ValueError, OSError):
            pass
        if self.sidecar is not None:
            # The sidecar exits once no member is left (now, or after the
            # members that outlive this one leave); reap it then so it does
            # not linger as a zombie of this process.
            sidecar = self.sidecar
            threading.Thread(
                target=lambda: sidecar.wait(), name="shmlog-reap-sidecar", daemon=True
            ).start()

    def after_fork_in_child(self) -> None:
        """Neither the parent's sidecar nor its standby thread is a forked child's."""
        self.standby = None
        self.sidecar = None
