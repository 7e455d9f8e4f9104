"""This process: who it is in the job, and everything it holds for a session.

Identity has one rule (:func:`given_rank`), used by MMLogger, by log records
and by the labels of slots alike: the rank is torch.distributed's when the
program has imported torch and initialised a process group, else the
launcher's ``RANK`` (torchrun, MMEngine's launchers and SLURM wrappers all
export it), else none (0 where a number is needed).  torch is never imported
here: logging starts before it, or without it.  :func:`identity` gives it as
one frozen :class:`Identity` (rank, world size, local rank, worker, label,
whether distributed), found anew on each call since a rank can be given
late; :class:`SessionIdentity` is how a session's segments ask for it: it is
passed to ``SessionSegments.open``, and the shared-memory layer never
imports this one.

Every other piece of per-process state lives in one object, :data:`PROCESS`:
the active session, the locks of this layer, the resolver that MessageHub
asks for a hub's shared storage, the exit and signal hooks, its reset after
fork (registered with ``shmlog.forks``), and what multiprocessing passes to
the children it starts.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import forks
from ..shm.slots import SlotOwner
from .config import ENV_SESSION, ENV_WORKER, env_int

__all__ = [
    "ENV_SESSION",
    "ENV_WORKER",
    "PROCESS",
    "Identity",
    "SessionIdentity",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "identity",
]

# Where multiprocessing carries the session name to spawn and forkserver children.
_MP_CONFIG_KEY = "shmlog_session"


# -- identity -------------------------------------------------------------------------


def _initialised_torch_dist() -> Any | None:
    if "torch" not in sys.modules:
        return None
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if dist.is_available() and dist.is_initialized():
            return dist
    except (AttributeError, RuntimeError):  # a partial or stub torch: use env
        return None
    return None


def given_rank() -> int | None:
    """The one rank rule: torch.distributed's rank once its group is initialised, else
    ``RANK`` from the environment; None when neither gives one (not distributed)."""
    dist = _initialised_torch_dist()
    if dist is not None:
        return int(dist.get_rank())
    if not os.environ.get("RANK", "").strip():
        return None
    return env_int("RANK", 0, 0)


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    rank = given_rank()
    return 0 if rank is None else rank


def reader_rank() -> int:
    """The rank of :func:`identity` when distributed, else -1; read on every
    ``get_scalar`` inside a session, so it reads no more than it needs."""
    rank = given_rank()
    return -1 if rank is None else rank


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    dist = _initialised_torch_dist()
    if dist is not None:
        return int(dist.get_world_size())
    return env_int("WORLD_SIZE", 1, 1)


def get_local_rank() -> int:
    """Rank of this process on its node, from LOCAL_RANK (0 when unset)."""
    return env_int("LOCAL_RANK", 0, 0)


def get_worker_id() -> int:
    """This process's DataLoader worker id; -1 outside DataLoader workers."""
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


@dataclass(frozen=True)
class Identity:
    """Who this process is in the job, as the rule in the module docstring finds it now."""

    rank: int  # 0 when not distributed
    world_size: int
    local_rank: int
    worker: int  # DataLoader worker id, -1 outside workers
    distributed: bool  # a rank was given, by torch.distributed or RANK
    # The slot label: ``rank1/worker0``, ``rank1``, ``worker2``, ``pid42``, ``main``.
    label: str

    @property
    def slot_rank(self) -> int:
        """The rank a slot records: the rank when distributed, else -1."""
        return self.rank if self.distributed else -1


def identity(own: str = "") -> Identity:
    """This process's identity, by the rule in the module docstring.

    ``own`` names, in the label, a process that is neither a rank's main
    process nor a worker (``pid<N>``).
    """
    rank = given_rank()
    distributed = rank is not None
    rank = 0 if rank is None else rank
    worker = get_worker_id()
    parts = [f"rank{rank}"] if distributed else []
    if worker >= 0:
        parts.append(f"worker{worker}")
    elif own:
        parts.append(own)
    return Identity(rank, get_world_size(), get_local_rank(), worker, distributed,
                    "/".join(parts) or "main")


class SessionIdentity:
    """This process's identity as a session's slots record it (``shmlog.shm.session``'s
    ``IdentitySource``), given to the session's segments when they are opened.

    The process that opened the session as a member is its rank's main
    process (``rank1``, ``main``); any other (a child forked from it, a
    process attached through the environment) is labelled by its pid
    unless it is a DataLoader worker.
    """

    def __init__(self, member: bool) -> None:
        self._member_pid = os.getpid() if member else 0

    def slot_owner(self) -> SlotOwner:
        pid = os.getpid()
        me = identity("" if pid == self._member_pid else f"pid{pid}")
        return SlotOwner(me.slot_rank, me.worker, me.label)

    def reader_rank(self) -> int:
        return reader_rank()


# -- process state ----------------------------------------------------------------------


class _ForkHook:
    """A weakref-able owner for multiprocessing's after-fork registry."""


class ProcessState:
    """Everything this process holds for shmlog; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # opening and closing sessions
        self.registry_lock = threading.RLock()  # ManagerMixin's named instances
        # This process's one record ring.  Reentrant, for a signal handler that
        # logs while the thread it interrupted is inside a put: see
        # shmlog.api.shipping.put_into.
        self.ship_lock = threading.RLock()
        self.ship_depth = 0  # puts in progress in the lock's holder (2 = interrupted)
        self.ship_later: list[tuple[Any, tuple[Any, ...]]] = []  # (ring, data) put by it
        self.session: Any = None  # the active shmlog.api.session.Session
        # Set by shmlog.api.session: the active session, or one the
        # environment names (attached on first use); None outside sessions.
        self.current: Callable[[], Any] = lambda: None
        # MessageHub asks ``resolver(hub name)`` for a hub's shared storage;
        # ``token`` is a new object whenever the resolver changes (None
        # outside sessions), so hubs know whether a binding they cached holds.
        self.resolver: Callable[[str], Any] | None = None
        self.token: object | None = None
        self.warned: set[str] = set()  # one-time warnings already given
        self._exit_hook = False
        self._signal_hook = False
        self._previous_handlers: dict[int, Any] = {}
        self._mp_hook = _ForkHook()

    # -- hubs --------------------------------------------------------------------------

    def install(self, resolver: Callable[[str], Any] | None) -> None:
        self.resolver = resolver
        self.token = None if resolver is None else object()

    def shared_hub(self, name: str) -> Any:
        resolver = self.resolver
        return None if resolver is None else resolver(name)

    def in_session(self) -> bool:
        """Whether this process is in, or will attach to, a session (no attaching here)."""
        session = self.session
        return (session is not None and not session.closed) or bool(os.environ.get(ENV_SESSION))

    def warn_once(self, tag: str) -> bool:
        """True the first time ``tag`` is seen in this process."""
        with self.registry_lock:
            if tag in self.warned:
                return False
            self.warned.add(tag)
            return True

    # -- fork -----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # A parent thread may have held any of them at fork.
        self.lock = threading.RLock()
        self.registry_lock = threading.RLock()
        self.ship_lock = threading.RLock()
        self.ship_depth = 0
        self.ship_later = []
        session = self.session
        if session is not None:
            session.after_fork_in_child()

    # -- exit ------------------------------------------------------------------------------

    def install_exit_hooks(self, close: Callable[[], None]) -> None:
        """Call ``close`` at interpreter exit and on SIGTERM (then die of it as before)."""
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(close)
        # Handlers can only be set from the main thread: a session opened in
        # another one gets them when the main thread next opens or attaches one.
        if self._signal_hook or threading.current_thread() is not threading.main_thread():
            return
        self._signal_hook = True
        previous = signal.getsignal(signal.SIGTERM)

        def on_signal(signum: int, frame: Any) -> None:
            close()
            if callable(previous):
                previous(signum, frame)
                return
            if previous == signal.SIG_IGN:
                return
            # Default disposition: die of the same signal, as the parent expects.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, on_signal)

    # -- multiprocessing ---------------------------------------------------------------------

    def tell_multiprocessing(self, name: str | None) -> None:
        """Record the session for the children multiprocessing starts from now on.

        A forkserver forks its children from a server process started once,
        with the environment of that moment: started before ``init`` (or
        during an earlier session) its children would miss ``SHMLOG_SESSION``
        or see a stale one.  multiprocessing copies
        ``current_process()._config`` into every Process object and ships it to
        spawn and forkserver children, so the name goes there too ('' for
        none) and :meth:`join_from_multiprocessing` applies it in the child.
        (Stopping the forkserver instead would block until its running
        children exit, and make them look dead meanwhile.)
        """
        multiprocessing.current_process()._config[_MP_CONFIG_KEY] = name or ""

    def join_from_multiprocessing(self, _hook: object = None) -> None:
        """In a multiprocessing child, before its target runs: take the parent's session."""
        config = multiprocessing.current_process()._config
        session = self.session
        if _MP_CONFIG_KEY not in config or (session is not None and not session.closed):
            return  # not started by a shmlog process, or forked with the session in memory
        name = config[_MP_CONFIG_KEY]
        if name:
            os.environ[ENV_SESSION] = name
            self.install(self.lazy_resolver)
        else:
            os.environ.pop(ENV_SESSION, None)
            self.install(None)

    def lazy_resolver(self, hub_name: str) -> Any:
        """The resolver of a process the environment puts in a session: attach on first use."""
        session = self.current()
        return None if session is None else session.hub(hub_name)

    def start(self) -> None:
        """Hook into fork and multiprocessing; follow the session the environment names.

        Called once, when ``shmlog.api.session`` is imported (so by ``import
        shmlog``), and it cannot wait for a first call into shmlog: a forked
        child must get new locks and its own slots before it logs anything,
        and a DataLoader worker or other child that a session's process
        starts may do nothing but update a MessageHub, so it must already
        be pointed at the session that ``SHMLOG_SESSION`` or its Process
        object names, and each child multiprocessing starts after this one
        must take the parent's session before its target runs.  It
        registers hooks and reads the environment; it opens nothing.
        """
        forks.on_fork(self._after_fork_in_child)
        # Runs in every multiprocessing child once its Process object is
        # current (for targets whose module imports shmlog); a target that
        # imports shmlog only when it runs is covered by the call below.
        multiprocessing.util.register_after_fork(self._mp_hook, self.join_from_multiprocessing)
        if os.environ.get(ENV_SESSION):
            self.install(self.lazy_resolver)
        self.join_from_multiprocessing()


PROCESS = ProcessState()
