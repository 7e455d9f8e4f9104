"""``shmlog.init``: joining this process, and every process it starts, to a session.

The session name travels in the ``SHMLOG_SESSION`` environment variable (for
spawned and forkserver children, and for any program they run) and in
inherited memory (for forked children).  A process that finds the variable
set attaches on its first MessageHub call, with no code of its own.

Only processes that call :func:`init` are members: the session lives while
one of them does, and the last one to leave unlinks its segments, whether it
returns normally, raises, or is stopped by SIGTERM or SIGINT.  Processes
that attached through the environment (DataLoader workers and other
children) write and read but never keep a session alive.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import sys
import threading
import warnings
from typing import Any

from ..shm.session import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    SessionError,
    check_capacity,
)
from ..shm.session import Session as SharedSegments
from . import backend
from .shared_hub import SharedHub

ENV_SESSION = "SHMLOG_SESSION"
ENV_WORKER = "SHMLOG_WORKER_ID"

_lock = threading.RLock()
_active: Session | None = None
_hooks_installed = False


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
        self._options = segments.options()
        segments.identity = _identity_for(member)

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
            with _lock:
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
            if _active is self:
                _active = None
                backend.install(_lazy_resolver if os.environ.get(ENV_SESSION) else None)
            if self._member and os.environ.get(ENV_SESSION) == self.name:
                if self._previous_env is None:
                    os.environ.pop(ENV_SESSION, None)
                else:
                    os.environ[ENV_SESSION] = self._previous_env
                if not os.environ.get(ENV_SESSION):
                    backend.install(None)
            self._segments.close()

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

    Options apply when this call creates the session; joining processes use
    the creator's.
    """
    global _active
    check_capacity(capacity, "capacity")
    for key, value in (capacities or {}).items():
        check_capacity(value, f"capacities[{key!r}]")
    if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes < 4096:
        raise ValueError(f"segment_bytes: expected an int >= 4096, got {segment_bytes!r}")
    if name is None:
        name = default_name()
    options = {
        "capacity": capacity,
        "capacities": dict(capacities or {}),
        "segment_bytes": segment_bytes,
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
        if any(stored.get(k) != v for k, v in options.items()) and stored != options:
            given = {k: v for k, v in options.items() if stored.get(k) != v}
            if given and _explicit_options(capacity, capacities, segment_bytes):
                warnings.warn(
                    f"shmlog session {name!r} already exists with options "
                    f"{ {k: stored.get(k) for k in given} }; the options given here are ignored",
                    stacklevel=2,
                )
        session = Session(segments, member=True, previous_env=previous)
        os.environ[ENV_SESSION] = name
        _active = session
        backend.install(_resolver)
        _install_process_hooks()
        return session


def _explicit_options(capacity: int, capacities: Any, segment_bytes: int) -> bool:
    return (
        capacity != DEFAULT_CAPACITY
        or bool(capacities)
        or segment_bytes != DEFAULT_SEGMENT_BYTES
    )


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
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_active)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM,):
        previous = signal.getsignal(signum)
        if previous is _on_signal:
            continue
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


def _after_fork_in_child() -> None:
    # A forked child is never a member, whatever its parent was.
    session = _active
    if session is not None:
        session._member = False
        session._segments.identity = _identity_for(False)


os.register_at_fork(after_in_child=_after_fork_in_child)

if os.environ.get(ENV_SESSION):
    backend.install(_lazy_resolver)
