"""``shmlog.init``: joining this process, and every process it starts, to a session.

The session name travels in the ``SHMLOG_SESSION`` environment variable (for
spawned and forkserver children, and for any program they run), in inherited
memory (for forked children) and in the Process objects of multiprocessing
(for forkserver children, whose server keeps the environment it started
with; see ``shmlog.api.process``).  A process that finds the variable set
attaches on its first MessageHub call, with no code of its own.

Only processes that call :func:`init` are members: the session lives while
one of them does, and the last one to leave unlinks its segments, whether it
returns normally, raises, or is stopped by SIGTERM or SIGINT.  Processes
that attached through the environment (DataLoader workers and other
children) write and read but never keep a session alive.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any

from ..format.exposition import DEFAULT_HOST, metrics_url
from ..shm.session import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    SessionError,
    SessionSegments,
    check_capacity,
)
from ..stats.shared_hub import SharedHub
from . import options as _options
from . import retention
from .device import settle as settle_device_values
from .job import admit, this_job
from .log_writing import LogWriting
from .nesting import NestedSession
from .process import ENV_SESSION, PROCESS, SessionIdentity
from .record_handler import wait_drained


class Session:
    """This process's membership of (or attachment to) a shmlog session.

    Use it as a context manager or call :meth:`close`.  Closing is
    idempotent; the last member to close removes the shared memory.
    """

    def __init__(self, segments: SessionSegments, member: bool, previous_env: str | None) -> None:
        self._segments = segments
        self._member = member
        self._previous_env = previous_env
        self._hubs: dict[str, SharedHub] = {}
        # Not the process lock: close() holds that while it waits for this
        # process's standby thread, which needs a hub to format progress lines.
        self._hubs_lock = threading.Lock()
        self._options = segments.options()
        # Whether MMLogger's file output goes to the session's writer.
        self.ships_records = self._options.get("log_writer", "sidecar") != "none"
        self._writing = LogWriting()  # this member's standby thread and sidecar
        self._creator_pid = os.getpid()
        # Handles open on this membership: this one and those that nested
        # ``init`` calls returned (see shmlog.api.nesting).
        self._handles = 1
        self._released = False

    @property
    def writer_pid(self) -> int:
        """Pid of the process writing this session's log files now (0: none yet)."""
        return self._segments.writer_pid

    @property
    def options(self) -> dict[str, Any]:
        """The options the session was created with."""
        return self._segments.options()

    @property
    def config(self) -> dict[str, Any]:
        """The options as read when this process joined (no lock; capacities may have grown since)."""
        return self._options

    def metrics_url(self, timeout: float = 0.0) -> str | None:
        """Where the log writer serves this session's metrics (``metrics_port``), or None.

        The writer publishes the address once it listens, a moment after
        ``init`` (and again after a takeover): this waits up to ``timeout``
        seconds for it.
        """
        deadline = time.monotonic() + timeout
        while True:
            url = metrics_url(self._segments.info_get)
            if url is not None or time.monotonic() >= deadline:
                return url
            time.sleep(0.01)

    def flush(self, timeout: float = 10.0, everyone: bool = True) -> bool:
        """Wait until the log writer has written every record put so far.

        ``everyone=False`` waits for this process's records only.  Returns
        False if the writer did not get there within ``timeout`` seconds.
        """
        return wait_drained(self, timeout, everyone)

    @property
    def name(self) -> str:
        return self._segments.name

    @property
    def closed(self) -> bool:
        return self._segments.closed

    @property
    def shared(self) -> SessionSegments:
        """The shared-memory layer under this session (segments, rings, info)."""
        return self._segments

    def hub(self, name: str) -> SharedHub:
        hub = self._hubs.get(name)
        if hub is None:
            with self._hubs_lock:
                hub = self._hubs.get(name)
                if hub is None:
                    hub = self._hubs[name] = SharedHub(self._segments, name, self.capacity_of)
        return hub

    def capacity_of(self, key: str) -> int:
        """Records a new ring for scalar ``key`` retains (the session's options)."""
        options = self._segments.options()
        return options.get("capacities", {}).get(key, options.get("capacity", DEFAULT_CAPACITY))

    def set_capacity(self, key: str, capacity: int) -> None:
        """Retain ``capacity`` records in rings created for ``key`` from now on."""
        check_capacity(capacity, f"capacity of {key!r}")
        capacities = dict(self._segments.options().get("capacities", {}))
        capacities[key] = capacity
        self._segments.update_options(capacities=capacities)

    def close(self) -> None:
        """Close this handle; the process leaves once every handle ``init`` gave is closed."""
        with PROCESS.lock:
            if self.closed or self._released:
                return
            self._released = True
            self.release_handle()

    def _nest(self) -> NestedSession:
        """Another handle on this membership, for a nested ``init`` of the same name."""
        self._handles += 1
        return NestedSession(self)

    def release_handle(self) -> None:
        """Close one of the handles ``init`` gave (the session's own or a nested one's);
        the process leaves the session with the last."""
        with PROCESS.lock:
            self._handles -= 1
            if self._handles <= 0:
                self._close_now()

    def _close_now(self) -> None:
        """Leave the session now, whatever handles are open (exit, signals, a forked child)."""
        if not self.closed:
            settle_device_values()  # what this process logged on a device lands first
        with PROCESS.lock:
            if self.closed:
                return
            try:
                self._writing.leave(self, self._member)
                if self._member and self._creator_pid == os.getpid():
                    retention.carry_out(self)
            finally:
                # Whatever flushing raised, leave the session: a member that
                # stayed would keep its shared memory alive.
                if self._member and os.environ.get(ENV_SESSION) == self.name:
                    if self._previous_env is None:
                        os.environ.pop(ENV_SESSION, None)
                    else:
                        os.environ[ENV_SESSION] = self._previous_env
                    PROCESS.tell_multiprocessing(os.environ.get(ENV_SESSION))
                if PROCESS.session is self:
                    PROCESS.session = None
                    # Hubs go back to this process's own memory, or to the session
                    # the environment still names (a child that attached to it).
                    PROCESS.install(PROCESS.lazy_resolver if os.environ.get(ENV_SESSION) else None)
                self._segments.close()

    def after_fork_in_child(self) -> None:
        """A forked child is never a member, whatever its parent was.

        Neither the parent's sidecar nor its standby thread is the child's.
        """
        self._member = False
        self._hubs_lock = threading.Lock()
        self._writing.after_fork_in_child()
        self._segments.after_fork_in_child()

    def __enter__(self) -> Session:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        role = "member" if self._member else "attached"
        return f"<shmlog.Session {self.name!r} {state} {role}>"


def init(
    name: str | None = None,
    *,
    capacity: int = DEFAULT_CAPACITY,
    capacities: dict[str, int] | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    log_writer: str = "sidecar",
    log_file: str | None = None,
    log_processor: dict[str, Any] | None = None,
    log_interval: int = 10,
    hub: str = "mmengine",
    shared_storage: bool | None = None,
    tensorboard: bool | None = None,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_HOST,
    join: bool = False,
) -> Session:
    """Create or join the node's session ``name`` and share every MessageHub through it.

    Args:
        name: the session to create or join.  By default: the session this
            process was started in (``SHMLOG_SESSION``), else one derived
            from torchrun's environment so that all ranks meet, else a name
            unique to this run.
        capacity: records each writer's ring retains per key (global
            statistics stay exact beyond it).
        capacities: per-key overrides of ``capacity``, e.g.
            ``{'train/loss': 100_000}``.
        segment_bytes: the largest shared-memory segment reserved at once;
            segments start at a page and double up to it as keys and
            writers appear.
        log_writer: who writes log files for every process of the session:
            ``'sidecar'`` (a process started here), ``'thread'`` (a thread of
            a member), or ``'none'`` (each process writes its own, as without
            a session).
        log_file: the run's log file, in a folder named after it:
            ``work/exp.log`` writes ``work/exp/exp.log`` (MMEngine's MMLogger
            writes the path given); with ``log_processor`` the writer puts its
            iteration lines there and ``scalars.jsonl`` and ``tensorboard/``
            beside it.
        log_processor: a LogProcessor config dict (as in MMEngine configs):
            the log writer then formats iteration/epoch lines itself from the
            shared scalars, whenever the training loop's
            :func:`report_progress` reaches a multiple of ``log_interval``.
        hub: the MessageHub whose scalars and progress those lines use.
        shared_storage: whether the log directory is shared by all nodes;
            when False each node writes its own ``<stem>_logs/`` folder.
            Default: True on one node (torchrun's NNODES), otherwise False
            unless SHMLOG_SHARED_STORAGE=1.
        tensorboard: export the logged steps to TensorBoard event files too
            (None: when tensorboardX is installed; True: ImportError here
            when neither tensorboardX nor torch with tensorboard is).
        metrics_port: serve the session's scalars, progress and health in
            the Prometheus format on ``http://<metrics_host>:<port>/metrics``
            from the log writer, for the whole run (0: any free port;
            :meth:`Session.metrics_url` and ``shmlog ls`` show it).  Needs
            prometheus_client (``pip install 'shmlog[metrics]'``) and a log
            writer.
        metrics_host: the address it listens on; loopback by default.
        join: join ``name`` although another job created it (ranks started
            by hand); otherwise a name another live job holds raises
            :class:`shmlog.JobConflict`.

    Options apply when this call creates the session; joining processes use
    the creator's.  Nested ``init`` of this process's session: see
    ``shmlog.api.nesting``; hubs before and after: ``shmlog.api.retention``.
    """
    options = _options.session_options(
        capacity=capacity, capacities=capacities, segment_bytes=segment_bytes,
        log_writer=log_writer, log_file=log_file, log_processor=log_processor,
        log_interval=log_interval, hub=hub, shared_storage=shared_storage,
        tensorboard=tensorboard, metrics_port=metrics_port, metrics_host=metrics_host,
    )
    if name is None:
        name = _options.default_name()
    with PROCESS.lock:
        active = PROCESS.session
        if active is not None and not active.closed:
            if active.name == name and active._member:
                return active._nest()
            if active._member:
                raise SessionError(
                    f"this process is already in shmlog session {active.name!r}; close it "
                    f"before calling shmlog.init({name!r})"
                )
            active.close()
        previous = os.environ.get(ENV_SESSION)
        segments = SessionSegments.open(
            name, member=True, create=True, options={**options, "job": this_job()},
            writer_placeholder=options["log_writer"] == "sidecar",
            identity=SessionIdentity(member=True),
        )
        stored = segments.options()
        if not segments.created:
            admit(segments, stored.get("job"), previous, join)
            # Joining: the creator's options rule.  Say so when this call asked
            # for something else.
            ignored = _options.ignored(options, stored)
            if ignored:
                kept = {k: stored.get(k) for k in ignored}
                warnings.warn(
                    f"shmlog session {name!r} already exists; the options {ignored} given "
                    f"here are ignored (the session has {kept})",
                    stacklevel=2,
                )
        session = Session(segments, member=True, previous_env=previous)
        os.environ[ENV_SESSION] = name
        PROCESS.tell_multiprocessing(name)
        _activate(session)
        retention.carry_in(session)
        session._writing.start(segments, stored.get("log_writer", "sidecar"))
        return session


def _activate(session: Session) -> None:
    PROCESS.session = session
    PROCESS.install(_resolver)
    PROCESS.install_exit_hooks(_close_active)


def current_session() -> Session | None:
    """The session this process is in or attached to (attaching if the environment says so)."""
    active = PROCESS.session
    if active is not None and not active.closed:
        return active  # every logged record asks: no lock when the answer is at hand
    with PROCESS.lock:
        active = PROCESS.session
        if active is not None and not active.closed:
            return active
        if os.environ.get(ENV_SESSION):
            return _attach_from_env()
        return None


def _resolver(hub_name: str) -> SharedHub | None:
    session = PROCESS.session
    if session is None or session.closed:
        return PROCESS.lazy_resolver(hub_name)
    return session.hub(hub_name)


def _attach_from_env() -> Session:
    name = os.environ[ENV_SESSION]
    try:
        segments = SessionSegments.open(name, member=False, create=False,
                                        identity=SessionIdentity(member=False))
    except (SessionError, ValueError) as exc:
        raise SessionError(
            f"{ENV_SESSION}={name!r} is set in this process's environment, but: {exc}"
        ) from None
    session = Session(segments, member=False, previous_env=None)
    _activate(session)
    return session


def _close_active() -> None:
    session = PROCESS.session
    if session is not None:
        session._close_now()


PROCESS.current = current_session
PROCESS.start()  # at import: see ProcessState.start
