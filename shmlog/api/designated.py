"""Choosing the one process that writes a session's log files, and running it.

By default ``shmlog.init`` starts a sidecar process (``python -m
shmlog.api.sidecar_main <session>``) that does nothing but drain the record
rings into files.  Exactly one process writes at a time: the holder of a
``filelock`` lock beside the session's segments (``...@writer.lock``), which
the kernel releases when its holder dies.  Its pid is published in the control
segment (``Session.writer_pid``).

Every member also runs a standby thread.  While the published writer is
alive the thread only checks on it, four times a second; when the writer is
gone (killed, crashed, never started) the first standby to take the lock
becomes the writer and continues from the rings' consumed positions, so no
record is lost and at most one per ring is written twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import filelock

from ..shm.control import STATE_CLOSED, process_start
from ..shm.session import prefix
from ..sinks.files import master_log_file
from ..sinks.writer import LogWriter, ProgressLines

CHECK_SECONDS = 0.25
STARTUP_GRACE_SECONDS = 3.0
BUSY_SLEEP, IDLE_SLEEP = 0.001, 0.02


# Writer locks this process holds.  A forked child (a DataLoader worker of a
# member that took over writing) must not keep their descriptors: with filelock
# releases before 4.x it would, and the lock would outlive its writer.
_held: list[filelock.BaseFileLock] = []


def _drop_inherited_locks() -> None:
    for lock in _held:
        context = getattr(lock, "_context", None)
        fd = getattr(context, "lock_file_fd", None)
        if isinstance(fd, int):
            try:
                os.close(fd)
            except OSError:
                pass
            context.lock_file_fd = None
            context.lock_counter = 0
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def lock_path(name: str) -> str:
    return f"/dev/shm/{prefix(name)}writer.lock"


def _writer_alive(segments: Any) -> bool:
    pid = segments.writer_pid
    return pid > 0 and process_start(pid) is not None


def _closing(segments: Any) -> bool:
    try:
        return segments.closed or segments.control.read_state().state == STATE_CLOSED
    except ValueError:  # unmapped
        return True


def serve(session: Any, lock: filelock.BaseFileLock, stop: threading.Event,
          until_members_leave: bool) -> None:
    """Write the session's logs until ``stop`` is set (or, for the sidecar, no member is left).

    The caller holds ``lock``; it is released on return.
    """
    segments = session.shared
    options = segments.options()
    writer = LogWriter(segments, per_node=not options.get("shared_storage", True))
    lines = None
    _held.append(lock)
    try:
        if _closing(segments):
            return
        segments.set_writer_pid(os.getpid())
        if options.get("log_processor") is not None:
            log_file = options.get("log_file")
            export_dir = None
            if log_file is not None:  # beside the master log file
                per_node = not options.get("shared_storage", True)
                export_dir = os.path.dirname(master_log_file(log_file, per_node))
            lines = ProgressLines(
                session.hub(options.get("hub", "mmengine")),
                options["log_processor"], int(options.get("log_interval", 10)), log_file,
                export_dir=export_dir, tensorboard=options.get("tensorboard"),
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
            finished = stop.is_set() or _closing(segments) or leaving
            if finished:
                if not _closing(segments):
                    writer.drain()
                return
            time.sleep(BUSY_SLEEP if done else IDLE_SLEEP)
    finally:
        try:
            if not _closing(segments) and segments.writer_pid == os.getpid():
                segments.set_writer_pid(0)
        except (ValueError, OSError):
            pass
        writer.close()
        if lines is not None:
            lines.close()
        if _closing(segments):
            # The last member removed the lock file with the segments; taking
            # the lock after that (an acquire re-creates a missing file) must
            # not leave a new one behind in /dev/shm.
            try:
                os.unlink(lock_path(session.name))
            except OSError:
                pass
        _held.remove(lock)
        lock.release()


class Standby:
    """A member's thread that takes over writing when no writer is alive."""

    def __init__(self, session: Any, expect_sidecar: bool) -> None:
        self._session = session
        self._stop = threading.Event()
        self._grace_until = time.monotonic() + (STARTUP_GRACE_SECONDS if expect_sidecar else 0)
        self.writing = False
        self._thread = threading.Thread(
            target=self._run, name=f"shmlog-standby-{session.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        segments = self._session.shared
        lock = filelock.FileLock(lock_path(self._session.name))
        while not self._stop.wait(CHECK_SECONDS):
            if _closing(segments):
                return
            if _writer_alive(segments) or time.monotonic() < self._grace_until:
                continue
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue
            self.writing = True
            try:
                serve(self._session, lock, self._stop, until_members_leave=False)
            finally:
                self.writing = False
            return

    def stop(self, timeout: float = 10.0) -> None:
        """Stop standing by; a standby that is writing first drains every ring."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start_sidecar(name: str) -> subprocess.Popen:
    """Start the default writer for session ``name`` (detached from the terminal's signals)."""
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "shmlog.api.sidecar_main", name],
        env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )


def main(argv: list[str]) -> int:
    """The sidecar: attach to the session, take the lock, write until members leave."""
    if len(argv) != 1:
        print("usage: python -m shmlog.api.sidecar_main SESSION", file=sys.stderr)
        return 2
    name = argv[0]
    from ..shm.session import SessionError
    from .session import ENV_SESSION, current_session

    os.environ[ENV_SESSION] = name
    try:
        session = current_session()
    except SessionError:
        return 0  # the session closed before the sidecar got to it: nothing to write
    if session is None:
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()  # drain what is there, then exit

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = filelock.FileLock(lock_path(name))
    segments = session.shared
    while not stop.is_set():
        if _closing(segments) or segments.live_members() == 0:
            return 0
        try:
            lock.acquire(timeout=CHECK_SECONDS)
        except filelock.Timeout:
            continue
        serve(session, lock, stop, until_members_leave=True)
        return 0
    return 0

