"""Running the designated log writer: in a sidecar process, or in a member's thread.

By default ``shmlog.init`` starts a sidecar process (``python -m
shmlog.writer SESSION``, see ``__main__``) that does nothing but drain the
record rings into files, and names it as the session's writer at once, so
that nothing waits for its interpreter to start: records put meanwhile wait
in their rings.  Every member also runs a :class:`Standby` thread that
sleeps on the named writer's death (``shmlog.writer.election``) and then
takes the writer lock and writes itself, continuing from the last commit.

The writer sleeps on the session's doorbell (``shmlog.shm.doorbell``), which
a producer rings when it finds the writer asleep, with a timeout for
housekeeping (whether anyone is left to write for, drops to report).  So an
idle writer costs next to nothing, and a record logged into an idle session
is written at once.  While records keep coming, the writer waits a few
milliseconds after each batch instead of sleeping, so that they gather
into batches and nobody has to ring.

Whom a writer writes for: a member's thread stops when its member leaves.
A sidecar stays while any process of the session is alive, members or not
(DataLoader workers and other children that outlive the member that started
them keep their log lines), then writes what is left and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from .. import forks
from ..format.files import master_log_file
from ..shm.exclusive import HeldLock
from ..shm.liveness import process_start
from ..shm.session import SessionSegments
from ..stats.shared_hub import SharedHub
from . import election, metrics
from .drain import LogWriter
from .lines import ProgressLines

HOUSEKEEPING_SECONDS = 0.5
# After a batch, the writer waits this long for more before the next one.
LINGER_SECONDS = 0.010
# How long a takeover may see the lock held and no writer named before it
# says so: a writer names itself right after taking the lock.
UNNAMED_WRITER_SECONDS = 5.0
# Rings the writer only reads never create a ring: the capacity is not used.
_READ_ONLY = 1


def serve(segments: SessionSegments, lock: HeldLock, stop: threading.Event,
          until_members_leave: bool) -> None:
    """Write the session's logs until ``stop`` is set (or, for the sidecar, nobody is left).

    The caller holds ``lock``; it is released on return.
    """
    me = (os.getpid(), process_start(os.getpid()) or 0)
    writer = lines = endpoint = None
    try:
        if election.closing(segments) and not until_members_leave:
            return
        segments.set_writer(*me)
        options = segments.options()
        if options.get("metrics_port") is not None and not stop.is_set():
            # Served by whoever writes (see shmlog.writer.metrics).
            endpoint = metrics.WriterEndpoint(
                segments, options.get("metrics_host", metrics.DEFAULT_HOST), options["metrics_port"]
            )
        per_node = not options.get("shared_storage", True)
        writer = LogWriter(segments, per_node=per_node)  # continues from the last commit
        if options.get("log_processor") is not None:
            log_file = options.get("log_file")
            export_dir = None
            if log_file is not None:  # beside the master log file
                export_dir = os.path.dirname(master_log_file(log_file, per_node))
            hub = SharedHub(segments, options.get("hub", "mmengine"), lambda key: _READ_ONLY)
            lines = ProgressLines(hub, options["log_processor"], log_file,
                                  export_dir=export_dir, tensorboard=options.get("tensorboard"))
            lines.bind(writer)
            writer.on_progress = lines.handle
        _loop(segments, writer, stop, until_members_leave)
        writer.drain_all()
    finally:
        if endpoint is not None:
            endpoint.close()  # before the lock goes: a successor binds the same port
        if writer is not None:
            writer.close()
        if lines is not None:
            lines.close()
        try:
            segments.set_writer(0, 0, replace=me)
        except (ValueError, OSError):
            pass
        lock.release()


def _loop(segments: SessionSegments, writer: LogWriter, stop: threading.Event,
          until_members_leave: bool) -> None:
    bell = segments.doorbell
    checked = time.monotonic()
    while True:
        bell.clear()
        wrote = writer.drain()
        if stop.is_set():
            return
        if time.monotonic() - checked >= HOUSEKEEPING_SECONDS:
            checked = time.monotonic()
            if nobody_left(segments, until_members_leave):
                return
        if wrote and writer.cut_short:
            continue  # the batch was cut short: more is waiting
        if wrote:
            # Records are arriving: let the next ones gather for a moment
            # rather than write and commit a few at a time.  Producers ring
            # only a sleeper, or a writer they wait for to make room.
            bell.wait(LINGER_SECONDS)
            continue
        bell.sleep(HOUSEKEEPING_SECONDS, writer.unread)


def nobody_left(segments: SessionSegments, until_members_leave: bool) -> bool:
    if not until_members_leave:
        return election.closing(segments)
    if segments.live_members():
        return False
    me = os.getpid()
    return not any(w.pid != me and w.alive() for w in segments.slots())


def drain_here(segments: SessionSegments) -> bool:
    """Write every pending record from this process, if no live writer holds the lock."""
    lock = election.writer_lock(segments)
    deadline = time.monotonic() + UNNAMED_WRITER_SECONDS
    while not lock.try_acquire():
        if election.writer_alive(segments) or time.monotonic() > deadline:
            return False  # a live writer has them; it is only slow
        time.sleep(0.01)
    stop = threading.Event()
    stop.set()
    serve(segments, lock, stop, until_members_leave=False)
    return True


_standby_pipes: set[int] = set()


class Standby:
    """A member's thread that takes over writing when no writer is alive."""

    def __init__(self, segments: SessionSegments) -> None:
        self._segments = segments
        self._stop = threading.Event()
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        _standby_pipes.update((self._wake_read, self._wake_write))
        self._thread = threading.Thread(
            target=self._run, name=f"shmlog-standby-{segments.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        segments = self._segments
        lock = election.writer_lock(segments)
        unnamed_since = None
        while not self._stop.is_set():
            if election.closing(segments):
                return
            pid, start = segments.log_writer()
            if pid and election.writer_alive(segments):
                unnamed_since = None
                election.wait_for_exit(pid, start, HOUSEKEEPING_SECONDS, self._wake_read)
                continue
            if lock.try_acquire():
                serve(segments, lock, self._stop, until_members_leave=False)
                return
            # Taken by a writer about to name itself; one that never does is said.
            if unnamed_since is None:
                unnamed_since = time.monotonic()
            elif time.monotonic() - unnamed_since > UNNAMED_WRITER_SECONDS:
                print(f"shmlog: session {segments.name!r} has no log writer: the writer lock "
                      f"is held but no writer is running; log records wait in their rings",
                      file=sys.stderr, flush=True)
                unnamed_since = float("inf")
            self._stop.wait(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop standing by; a standby that is writing first drains every ring."""
        self._stop.set()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        self._segments.doorbell.ring()  # if it is the writer, asleep on the doorbell
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for fd in (self._wake_read, self._wake_write):
            _standby_pipes.discard(fd)
            try:
                os.close(fd)
            except OSError:
                pass


def after_fork_in_child() -> None:
    """A forked child holds no standby pipe of its parent's (its lock descriptions and
    metrics sockets are undone by ``shm.exclusive`` and ``writer.metrics``)."""
    for fd in list(_standby_pipes):
        try:
            os.close(fd)
        except OSError:
            pass
    _standby_pipes.clear()


forks.on_fork(after_fork_in_child)


def start_sidecar(segments: SessionSegments, placeholder: tuple[int, int]) -> subprocess.Popen:
    """Start the default writer for the session and name it the writer at once.

    ``placeholder`` is what ``open`` named as the writer meanwhile (the creator).
    """
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "shmlog.writer", segments.name],
        env=dict(os.environ), stdin=subprocess.DEVNULL, start_new_session=True,
    )
    start = process_start(sidecar.pid) or 0
    segments.set_writer(sidecar.pid, start, replace=placeholder)
    return sidecar
