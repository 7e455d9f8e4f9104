"""``shmlog.init``: joining this process, and every process it starts, to a session.

The session name travels in the ``SHMLOG_SESSION`` environment variable (for
spawned and forkserver children, and for any program they run), in inherited
memory (for forked children) and in the Process objects of multiprocessing
(for forkserver children, whose server keeps the environment it started with).  A process that finds the variable
set attaches on its first MessageHub call, with no code of its own.

Only processes that call :func:`init` are members: the session lives while
one of them does, and the last one to leave unlinks its segments, whether it
returns normally, raises, or is stopped by SIGTERM or SIGINT.  Processes
that attached through the environment (DataLoader workers and other
children) write and read but never keep a session alive.
"""

from __future__ import annotations

import atexit
import inspect
import multiprocessing
import multiprocessing.util
import os
import re
import secrets
import signal
import sys
import threading
import time
import warnings
from typing import Any

import filelock

from ..shm.session import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    SessionError,
    check_capacity,
)
from ..shm.session import Session as SharedSegments
from ..sinks.writer import TENSORBOARD_MISSING, progress_due, tensorboard_installed
from . import backend, designated
from .record_handler import ship_progress, wait_drained
from .shared_hub import SharedHub

ENV_SESSION = "SHMLOG_SESSION"
ENV_WORKER = "SHMLOG_WORKER_ID"
FLUSH_SECONDS = 10.0

_lock = threading.RLock()
_active: Session | None = None
_hooks_installed = False
_signals_installed = False


class Session:
    """This process's membership of (or attachment to) a shmlog session.

    Use it as a context manager or call :meth:`close`.  Closing is
    idempotent; the last member to close removes the shared memory.
    """

    def __init__(self, segments: SharedSegments, member: bool, previous_env: str | None) -> None:
        self._segments = segments
        self._member = member
        self._previous_env = previous_env
        self._hubs: dict[str, SharedHub] = {}
        # Not the module lock: close() holds that while it waits for this
        # process's standby thread, which needs a hub to format progress lines.
        self._hubs_lock = threading.Lock()
        self._options = segments.options()
        self._standby: designated.Standby | None = None
        self._sidecar: Any = None
        segments.identity = _identity_for(member)

    @property
    def writer_pid(self) -> int:
        """Pid of the process writing this session's log files now (0: none yet)."""
        return self._segments.writer_pid

    @property
    def options(self) -> dict[str, Any]:
        """The options the session was created with."""
        return self._segments.options()

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
    def shared(self) -> SharedSegments:
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
        global _active
        with _lock:
            if self.closed:
                return
            try:
                self._leave_writing()
            finally:
                # Whatever flushing raised, leave the session: a member that
                # stayed would keep its shared memory alive.
                if self._member and os.environ.get(ENV_SESSION) == self.name:
                    if self._previous_env is None:
                        os.environ.pop(ENV_SESSION, None)
                    else:
                        os.environ[ENV_SESSION] = self._previous_env
                    _tell_multiprocessing(os.environ.get(ENV_SESSION))
                if _active is self:
                    _active = None
                    # Hubs go back to this process's own memory, or to the session
                    # the environment still names (a child that attached to it).
                    backend.install(_lazy_resolver if os.environ.get(ENV_SESSION) else None)
                self._segments.close()

    def _leave_writing(self) -> None:
        """Flush this process's records, and hand over or finish log writing."""
        if self._segments.closed or self._segments._pid != os.getpid():
            return
        last = False
        try:
            last = self._member and self._segments.live_members() <= 1
            writes_logs = self._options.get("log_writer", "sidecar") != "none"
            pending = writes_logs and self._segments.record_consumers()
            if pending and not wait_drained(self, FLUSH_SECONDS, everyone=last):
                self._drain_here()
            if self._standby is not None:
                self._standby.stop()
        except (SessionError, ValueError, OSError):
            pass
        if self._sidecar is not None:
            # The sidecar exits once no member is left (now, or after the
            # members that outlive this one leave); reap it then so it does
            # not linger as a zombie of this process.
            self._reap_sidecar_later()

    def _reap_sidecar_later(self) -> None:
        sidecar = self._sidecar
        threading.Thread(
            target=lambda: sidecar.wait(), name="shmlog-reap-sidecar", daemon=True
        ).start()

    def _drain_here(self) -> None:
        """No writer drained the rings in time: write them from this process."""
        lock = filelock.FileLock(designated.lock_path(self.name))
        try:
            lock.acquire(timeout=FLUSH_SECONDS)
        except filelock.Timeout:
            return
        stop = threading.Event()
        stop.set()
        designated.serve(self, lock, stop, until_members_leave=False)

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
        segment_bytes: size of each shared-memory segment that holds rings;
            more are added as keys and writers appear.
        log_writer: who writes log files for every process of the session:
            ``'sidecar'`` (a process started here), ``'thread'`` (a thread of
            a member), or ``'none'`` (each process writes its own, as without
            a session).
        log_file: the run's log file (``work/exp.log`` writes
            ``work/exp/exp.log``); with ``log_processor`` the writer puts its
            iteration lines there and the exported scalars beside it.
        log_processor: a LogProcessor config dict (as in MMEngine configs):
            the log writer then formats iteration/epoch lines itself from the
            shared scalars, whenever the training loop's
            :func:`report_progress` reaches a multiple of ``log_interval``.
        hub: the MessageHub whose scalars and progress those lines use.
        shared_storage: whether the log directory is shared by all nodes;
            when False each node writes ``<stem>_logs/`` (the seed's
            multi-node layout).  Default: True on one node (torchrun's
            NNODES), otherwise False unless SHMLOG_SHARED_STORAGE=1.
        tensorboard: export the logged steps to TensorBoard event files too
            (None: when tensorboardX is installed; True: ImportError here
            when neither tensorboardX nor torch with tensorboard is).

    Options apply when this call creates the session; joining processes use
    the creator's.
    """
    global _active
    check_capacity(capacity, "capacity")
    for key, value in (capacities or {}).items():
        check_capacity(value, f"capacities[{key!r}]")
    if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 4096:
        raise ValueError(f"segment_bytes: expected an int >= 4096, got {segment_bytes!r}")
    if log_writer not in ("sidecar", "thread", "none"):
        raise ValueError(
            f"log_writer: expected 'sidecar', 'thread' or 'none', got {log_writer!r}"
        )
    if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval < 1:
        raise ValueError(f"log_interval: expected an int >= 1, got {log_interval!r}")
    if log_processor is not None:
        if not isinstance(log_processor, dict):
            raise TypeError(
                f"log_processor: expected a LogProcessor config dict, got "
                f"{type(log_processor).__name__}"
            )
        from ..readers.log_processor import LogProcessor

        LogProcessor(**log_processor)  # refuse a bad config here, not in the writer
    if tensorboard and not tensorboard_installed():
        raise ImportError(TENSORBOARD_MISSING)  # here, not in the writer
    if name is None:
        name = default_name()
    if shared_storage is None:
        shared_storage = _default_shared_storage()
    options = {
        "capacity": capacity,
        "capacities": dict(capacities or {}),
        "segment_bytes": segment_bytes,
        "log_writer": log_writer,
        "log_file": None if log_file is None else os.path.abspath(os.fspath(log_file)),
        "log_processor": log_processor,
        "log_interval": log_interval,
        "hub": hub,
        "shared_storage": bool(shared_storage),
        "tensorboard": tensorboard,
    }
    with _lock:
        if _active is not None and not _active.closed:
            if _active.name == name and _active._member:
                return _active
            if _active._member:
                raise SessionError(
                    f"this process is already in shmlog session {_active.name!r}; close it "
                    f"before calling shmlog.init({name!r})"
                )
            _active.close()
        segments = SharedSegments.open(name, member=True, create=True, options=options)
        previous = os.environ.get(ENV_SESSION)
        stored = segments.options()
        if not segments.created:
            # Joining: the creator's options rule.  Say so when this call asked
            # for something else (defaults are not a request).
            defaults = _init_defaults()
            ignored = {k: v for k, v in options.items()
                       if stored.get(k) != v and v != defaults.get(k)}
            if ignored:
                kept = {k: stored.get(k) for k in ignored}
                warnings.warn(
                    f"shmlog session {name!r} already exists; the options {ignored} given "
                    f"here are ignored (the session has {kept})",
                    stacklevel=2,
                )
        session = Session(segments, member=True, previous_env=previous)
        os.environ[ENV_SESSION] = name
        _tell_multiprocessing(name)
        _active = session
        backend.install(_resolver)
        _install_process_hooks()
        mode = stored.get("log_writer", "sidecar")
        if mode == "sidecar" and segments.created:
            session._sidecar = designated.start_sidecar(name)
        if mode != "none":
            session._standby = designated.Standby(session, expect_sidecar=mode == "sidecar")
        return session


def report_progress(
    mode: str,
    batch_idx: int,
    *,
    iter: int,
    epoch: int = 0,
    dataloader_len: int | None = None,
    max_iters: int | None = None,
    max_epochs: int | None = None,
    event: str = "iter",
    hub: str | None = None,
) -> None:
    """Tell the session's log writer where the training loop is.

    Call it after each iteration (``event='iter'``) and after a val/test
    loop (``event='epoch_end'``); the writer formats MMEngine's line for
    this state at every ``log_interval``.  ``iter`` is the number of
    training iterations done before this one (MMEngine's ``runner.iter``).
    """
    from .message_hub import MessageHub

    if event not in ("iter", "epoch_end"):
        raise ValueError(f"event: expected 'iter' or 'epoch_end', got {event!r}")
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode: expected 'train', 'val' or 'test', got {mode!r}")
    session = current_session()
    options = {} if session is None else session._options
    progress = {
        "mode": mode, "batch_idx": int(batch_idx), "iter": int(iter), "epoch": int(epoch),
        "dataloader_len": dataloader_len, "max_iters": max_iters, "max_epochs": max_epochs,
        "event": event, "at_ns": time.monotonic_ns(),
    }
    cfg = options.get("log_processor") or {}
    if not progress_due(progress, int(options.get("log_interval", 10)),
                        bool(cfg.get("by_epoch", True))):
        return
    name = hub or options.get("hub", "mmengine")
    MessageHub.get_instance(name).update_info("progress", progress, resumed=False)
    if session is not None and cfg:
        ship_progress(session, progress)


_MP_CONFIG_KEY = "shmlog_session"


def _tell_multiprocessing(name: str | None) -> None:
    """Record this process's session for the children multiprocessing starts from now on.

    A forkserver forks its children from a server process started once, with
    the environment of that moment: started before ``init`` (or during an
    earlier session) its children would miss ``SHMLOG_SESSION`` or see a
    stale one.  multiprocessing copies ``current_process()._config`` into
    every Process object and ships it to spawn and forkserver children, so
    the name goes there too ('' for none) and :func:`_joined_by_multiprocessing`
    applies it in the child.  (Stopping the forkserver instead would block
    until its running children exit, and make them look dead meanwhile.)
    """
    multiprocessing.current_process()._config[_MP_CONFIG_KEY] = name or ""


def _joined_by_multiprocessing(_hook: object = None) -> None:
    """In a multiprocessing child, before its target runs: take the parent's session."""
    config = multiprocessing.current_process()._config
    if _MP_CONFIG_KEY not in config or (_active is not None and not _active.closed):
        return  # not started by a shmlog process, or forked with the session in memory
    name = config[_MP_CONFIG_KEY]
    if name:
        os.environ[ENV_SESSION] = name
        backend.install(_lazy_resolver)
    else:
        os.environ.pop(ENV_SESSION, None)
        backend.install(None)


class _ForkHook:
    """A weakref-able owner for multiprocessing's after-fork registry."""


_FORK_HOOK = _ForkHook()


def _default_shared_storage() -> bool:
    explicit = os.environ.get("SHMLOG_SHARED_STORAGE")
    if explicit is not None:
        return explicit not in ("0", "false", "False", "no")
    try:
        return int(os.environ.get("NNODES", os.environ.get("GROUP_WORLD_SIZE", "1"))) <= 1
    except ValueError:
        return True


def _init_defaults() -> dict[str, Any]:
    """The options ``init`` stores when called with no keyword arguments."""
    defaults = {
        name: p.default for name, p in inspect.signature(init).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    defaults["capacities"] = {}
    defaults["shared_storage"] = _default_shared_storage()
    return defaults


def in_session() -> bool:
    """Whether this process is in, or will attach to, a session (no attaching here)."""
    return (_active is not None and not _active.closed) or bool(os.environ.get(ENV_SESSION))


def current_session() -> Session | None:
    """The session this process is in or attached to (attaching if the environment says so)."""
    with _lock:
        if _active is not None and not _active.closed:
            return _active
        if os.environ.get(ENV_SESSION):
            return _attach_from_env()
        return None


def default_name() -> str:
    """The name ``init()`` uses when none is given."""
    inherited = os.environ.get(ENV_SESSION)
    if inherited:
        return inherited
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id:
        # Every rank of one torchrun launch on a node sees the same run id and
        # master port; a restart gets new workers and a new session.
        parts = [run_id, os.environ.get("MASTER_PORT", ""),
                 os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")]
        return _sanitize("torchrun-" + "-".join(p for p in parts if p))
    return f"run-{os.getpid()}-{secrets.token_hex(4)}"


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return cleaned[:64]


def _resolver(hub_name: str) -> SharedHub | None:
    session = _active
    if session is None or session.closed:
        return _lazy_resolver(hub_name)
    return session.hub(hub_name)


def _lazy_resolver(hub_name: str) -> SharedHub | None:
    session = current_session()
    return None if session is None else session.hub(hub_name)


def _attach_from_env() -> Session:
    global _active
    name = os.environ[ENV_SESSION]
    try:
        segments = SharedSegments.open(name, member=False, create=False)
    except (SessionError, ValueError) as exc:
        raise SessionError(
            f"{ENV_SESSION}={name!r} is set in this process's environment, but: {exc}"
        ) from None
    session = Session(segments, member=False, previous_env=None)
    _active = session
    backend.install(_resolver)
    _install_process_hooks()
    return session


def _identity_for(member: bool):
    def identity() -> tuple[int, int, str]:
        rank = _env_int("RANK")
        worker = _worker_id()
        prefix = f"rank{rank}" if rank >= 0 else ""
        if worker >= 0:
            own = f"worker{worker}"
        elif member and os.getpid() == creator_pid:
            own = ""
        else:
            own = f"pid{os.getpid()}"
        label = "/".join(p for p in (prefix, own) if p) or "main"
        return rank, worker, label

    creator_pid = os.getpid()
    return identity


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "-1"))
    except ValueError:
        return -1


def _worker_id() -> int:
    explicit = os.environ.get(ENV_WORKER)
    if explicit is not None:
        try:
            return int(explicit)
        except ValueError:
            return -1
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            info = torch.utils.data.get_worker_info()
        except AttributeError:
            return -1
        if info is not None:
            return int(info.id)
    return -1


# -- process exit ---------------------------------------------------------------


def _close_active() -> None:
    session = _active
    if session is not None:
        session.close()


def _on_signal(signum: int, frame: Any) -> None:
    _close_active()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # Default disposition: die of the same signal, as the parent expects.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_previous_handlers: dict[int, Any] = {}


def _install_process_hooks() -> None:
    global _hooks_installed, _signals_installed
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(_close_active)
    # Handlers can only be set from the main thread: a session opened in
    # another one gets them when the main thread next opens or attaches one.
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    for signum in (signal.SIGTERM,):
        previous = signal.getsignal(signum)
        if previous is _on_signal:
            continue
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


def _after_fork_in_child() -> None:
    global _lock
    # A thread of the parent may have held it at fork.
    _lock = threading.RLock()
    # A forked child is never a member, whatever its parent was, and neither
    # the parent's sidecar nor its standby thread is the child's.
    session = _active
    if session is not None:
        session._member = False
        session._segments.identity = _identity_for(False)
        session._hubs_lock = threading.Lock()
        session._sidecar = None
        session._standby = None


os.register_at_fork(after_in_child=_after_fork_in_child)
# Runs in every multiprocessing child once its Process object is current (for
# targets whose module imports shmlog); a target that imports shmlog only
# when it runs is covered by the call below.
multiprocessing.util.register_after_fork(_FORK_HOOK, _joined_by_multiprocessing)

if os.environ.get(ENV_SESSION):
    backend.install(_lazy_resolver)
_joined_by_multiprocessing()
