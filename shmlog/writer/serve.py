"""Running the designated log writer: in a sidecar process, or in a member's thread.

By default ``shmlog.init`` starts a sidecar process (``python -m
shmlog.writer SESSION``, see ``__main__``) that does nothing but drain the
record rings into files.  Every member also runs a :class:`Standby` thread.
While the published writer is alive the thread only checks on it, four times
a second; when the writer is gone (killed, crashed, never started) the first
standby to take the lock (``shmlog.writer.election``) becomes the writer and
continues from the rings' consumed positions, so no record is lost and at
most one per ring is written twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import filelock

from ..format.files import master_log_file
from ..shm.session import SessionSegments
from ..stats.shared_hub import SharedHub
from . import election
from .drain import LogWriter
from .lines import ProgressLines

CHECK_SECONDS = 0.25
STARTUP_GRACE_SECONDS = 3.0
BUSY_SLEEP, IDLE_SLEEP = 0.001, 0.02
# Rings the writer only reads never create a ring: the capacity is not used.
_READ_ONLY = 1


def serve(segments: SessionSegments, lock: filelock.BaseFileLock, stop: threading.Event,
          until_members_leave: bool) -> None:
    """Write the session's logs until ``stop`` is set (or, for the sidecar, no member is left).

    The caller holds ``lock``; it is released on return.
    """
    options = segments.options()
    per_node = not options.get("shared_storage", True)
    writer = LogWriter(segments, per_node=per_node)
    lines = None
    election.hold(lock)
    try:
        if election.closing(segments):
            return
        segments.set_writer_pid(os.getpid())
        if options.get("log_processor") is not None:
            log_file = options.get("log_file")
            export_dir = None
            if log_file is not None:  # beside the master log file
                export_dir = os.path.dirname(master_log_file(log_file, per_node))
            hub = SharedHub(segments, options.get("hub", "mmengine"), lambda key: _READ_ONLY)
            lines = ProgressLines(
                hub, options["log_processor"], log_file, export_dir=export_dir,
                tensorboard=options.get("tensorboard"),
            )
            lines.bind_file(writer)
            writer.on_progress = lines.handle
        members_checked = 0.0
        while True:
            done = writer.drain()
            leaving = False
            if until_members_leave and time.monotonic() - members_checked >= CHECK_SECONDS:
                # Reading the member table (and /proc for each member) is not
                # free: a few times a second is enough to notice the end.
                members_checked = time.monotonic()
                leaving = segments.live_members() == 0
            finished = stop.is_set() or election.closing(segments) or leaving
            if finished:
                if not election.closing(segments):
                    writer.drain()
                return
            time.sleep(BUSY_SLEEP if done else IDLE_SLEEP)
    finally:
        try:
            if not election.closing(segments) and segments.writer_pid == os.getpid():
                segments.set_writer_pid(0)
        except (ValueError, OSError):
            pass
        writer.close()
        if lines is not None:
            lines.close()
        election.release(lock, segments.name, election.closing(segments))


def drain_here(segments: SessionSegments, timeout: float) -> None:
    """Write every pending record from this process (no writer drained them in time)."""
    lock = election.writer_lock(segments.name)
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        return
    stop = threading.Event()
    stop.set()
    serve(segments, lock, stop, until_members_leave=False)


class Standby:
    """A member's thread that takes over writing when no writer is alive."""

    def __init__(self, segments: SessionSegments, expect_sidecar: bool) -> None:
        self._segments = segments
        self._stop = threading.Event()
        self._grace_until = time.monotonic() + (STARTUP_GRACE_SECONDS if expect_sidecar else 0)
        self._thread = threading.Thread(
            target=self._run, name=f"shmlog-standby-{segments.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        segments = self._segments
        lock = election.writer_lock(segments.name)
        while not self._stop.wait(CHECK_SECONDS):
            if election.closing(segments):
                return
            if election.writer_alive(segments) or time.monotonic() < self._grace_until:
                continue
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue
            serve(segments, lock, self._stop, until_members_leave=False)
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop standing by; a standby that is writing first drains every ring."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start_sidecar(name: str) -> subprocess.Popen:
    """Start the default writer for session ``name`` (detached from the terminal's signals)."""
    return subprocess.Popen(
        [sys.executable, "-m", "shmlog.writer", name],
        env=dict(os.environ), stdin=subprocess.DEVNULL, start_new_session=True,
    )
