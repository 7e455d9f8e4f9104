"""Optional PyTorch DataLoader integration: per-worker data time in the session.

MMEngine measures ``data_time`` in the main process, as the time it waits for
the next batch.  That says *that* loading is slow, not *which* worker is slow
or how long a batch really takes to build.  Inside a shmlog session every
DataLoader worker can write to the main process's MessageHub, so each worker
records how long it spends on each batch it builds, under its own key
(``'<mode>/worker_data_time'``: ``data_time`` keeps MMEngine's meaning), and
the main process reads the merged history (``get_scalar(key)``) or one
history per worker (``get_scalar(key).per_writer()`` ->
``{'rank0/worker0': HistoryBuffer, ...}``).

Two entry points::

    loader = shmlog.track_data_time(DataLoader(ds, num_workers=4, ...))
    val_loader = shmlog.track_data_time(DataLoader(val_ds, ...), mode='val')

    # or, when only the worker side is wanted (num_workers >= 1):
    DataLoader(ds, num_workers=4, worker_init_fn=shmlog.worker_init_fn(my_init))

What is timed: one batch's ``fetcher.fetch(indices)`` inside the process that
builds it, i.e. ``dataset[i]`` for every index (or ``__getitems__``, or
``next()`` on an IterableDataset) plus ``collate_fn``.  Not timed: sending the
batch to the main process, pinning it, and the sampler (which runs in the
main process).  A fetch that raises (including the StopIteration that ends an
IterableDataset) records nothing, so the number of updates is exactly the
number of batches built.

How: the worker init function wraps torch's fetcher factory in each worker,
and with ``num_workers=0`` :func:`track_data_time` wraps the fetcher of each
iterator the loader creates, whose values are recorded under the main
process's own label (``'main'``, or ``'rank<r>'`` under torchrun); see
``shmlog.api.fetch_timer``.

Labels: each worker claims its slot in the session before the user's
``worker_init_fn`` runs, labelled ``'worker<id>'`` (``'rank<r>/worker<id>'``
when ``RANK`` is set).  Non-persistent workers are new processes every epoch;
the session hands a new worker the slot (and rings) of the dead worker with
the same label, so the slot table and the number of rings stay bounded.

Outside a session all of this still runs, but a worker's MessageHub is private
to that worker process: the values never reach the main process (a warning
says so once, when a tracked loader with workers starts iterating).  With
``num_workers=0`` the main process records into its own hub, session or not.

Nothing here imports torch at module level: ``import shmlog`` must work
without torch installed.  Everything handed to workers (:class:`WorkerInit`
and what it holds) is a module-level class, so it pickles for the ``spawn``
and ``forkserver`` start methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import SessionError
from ..format.checks import MODES
from .fetch_timer import (
    Recorder,
    TimedFetcher,
    in_dataloader_worker,
    install_fetch_timer,
    warn_once,
)
from .message_hub import MessageHub
from .process import ENV_SESSION, PROCESS

__all__ = ["WorkerInit", "track_data_time", "worker_init_fn"]

DEFAULT_HUB = "mmengine"


# -- argument checks ------------------------------------------------------------------


def _resolve_key(key: Any, mode: Any) -> str:
    """The scalar key to record under: ``key``, else ``'<mode>/worker_data_time'``."""
    if key is not None and mode is not None:
        raise ValueError(
            f"key={key!r} and mode={mode!r}: give one of them (mode={mode!r} means "
            f"key='{mode}/worker_data_time')"
        )
    if key is not None:
        if not isinstance(key, str) or not key:
            raise TypeError(
                f"key: expected a non-empty str such as 'train/worker_data_time', got {key!r}"
            )
        return key
    if mode is None:
        mode = "train"
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return f"{mode}/worker_data_time"


def _check_hub(hub: Any) -> str:
    # A name, not the object: it is what travels to spawned workers, where the
    # hub of that name is the same shared hub inside a session.
    if isinstance(hub, MessageHub):
        return hub.instance_name
    if not isinstance(hub, str) or not hub:
        raise TypeError(
            f"hub: expected a MessageHub or the non-empty name of one (e.g. {DEFAULT_HUB!r}), "
            f"got {hub!r}"
        )
    return hub


def _check_user_fn(user_fn: Any) -> Callable[[int], Any] | None:
    if user_fn is None or callable(user_fn):
        return user_fn
    if isinstance(user_fn, int) and not isinstance(user_fn, bool):
        raise TypeError(
            f"user_fn: expected a callable or None, got the int {user_fn!r}; was "
            f"shmlog.worker_init_fn passed to DataLoader without calling it? Pass "
            f"worker_init_fn=shmlog.worker_init_fn() (or shmlog.worker_init_fn(your_fn))"
        )
    raise TypeError(f"user_fn: expected a callable taking the worker id, or None, got {user_fn!r}")


# -- the worker side ------------------------------------------------------------------------


class WorkerInit:
    """A DataLoader ``worker_init_fn`` that labels the worker and times its batches.

    In each worker, in this order: make sure the worker is in the main
    process's session (see below); claim the worker's slot (label
    ``'worker<id>'`` / ``'rank<r>/worker<id>'``), so the label is fixed before
    any user code writes; arrange for every batch the worker builds to be
    timed into ``hub``/``key``; then call ``user_fn(worker_id)``.  The user's
    function therefore runs already labelled, and can log itself.

    Which session: fork and spawn workers get the main process's session
    from inherited memory or environment.  A forkserver worker is forked by
    the forkserver, which keeps the environment it started with; if it
    started before ``shmlog.init`` (or in an earlier session), its
    ``SHMLOG_SESSION`` is missing or stale.  So the instance records the main
    process's session when it is pickled for the worker, and a worker whose
    parent is not that process takes the session from there.

    Instances pickle (for spawn/forkserver) when ``user_fn`` does.  Build them
    with :func:`worker_init_fn`; :func:`track_data_time` installs one.
    """

    def __init__(
        self, user_fn: Callable[[int], Any] | None, key: str, hub: str | MessageHub
    ) -> None:
        self.user_fn = _check_user_fn(user_fn)
        self.key = _resolve_key(key, None)
        self.hub = _check_hub(hub)
        # (session name or None, pid of the process that pickled this), set
        # only on a copy that came through pickle.
        self._sent_from: tuple[str | None, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "user_fn": self.user_fn,
            "key": self.key,
            "hub": self.hub,
            "sent_from": (_session_name(), os.getpid()),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.user_fn = state["user_fn"]
        self.key = state["key"]
        self.hub = state["hub"]
        self._sent_from = state.get("sent_from")

    def __call__(self, worker_id: int) -> None:
        if self._sent_from is not None and os.getppid() != self._sent_from[1]:
            _use_session(self._sent_from[0])
        _claim_slot()
        if in_dataloader_worker():
            install_fetch_timer(Recorder(self.key, self.hub))
        if self.user_fn is not None:
            self.user_fn(worker_id)

    def __repr__(self) -> str:
        return f"WorkerInit(user_fn={self.user_fn!r}, key={self.key!r}, hub={self.hub!r})"


def _session_name() -> str | None:
    """The session this process is in, if any (None when it cannot be opened)."""
    try:
        session = PROCESS.current()
    except SessionError:
        return None
    return None if session is None else session.name


def _use_session(name: str | None) -> None:
    # Only the environment: a worker that inherited an attached session by
    # fork has its parent as its parent and never gets here.
    if name is None:
        os.environ.pop(ENV_SESSION, None)
    else:
        os.environ[ENV_SESSION] = name


def _claim_slot() -> None:
    # Attaches a spawned worker (SHMLOG_SESSION) and takes its slot now: the
    # label is then 'worker<id>' whoever writes first, and a restarted worker
    # adopts its predecessor's slot before logging anything.
    session = PROCESS.current()
    if session is not None:
        session.shared.thread_slot()


def worker_init_fn(
    user_fn: Callable[[int], Any] | None = None,
    *,
    key: str | None = None,
    mode: str | None = None,
    hub: str | MessageHub = DEFAULT_HUB,
) -> WorkerInit:
    """A ``worker_init_fn`` for DataLoader that records each worker's data time.

    Args:
        user_fn: your own ``worker_init_fn``, called after the worker is
            labelled in the session (so it may log under the worker's label).
        key: the scalar key; default ``'<mode>/worker_data_time'``.
        mode: ``'train'`` (default), ``'val'`` or ``'test'``; sets the key's
            prefix, which is what LogProcessor groups by.  Give key or mode.
        hub: the MessageHub to record into, or its name (default
            ``'mmengine'``; with an MMEngine-style runner, pass its hub).

    This covers workers only: with ``num_workers=0`` torch never calls it.
    :func:`track_data_time` covers both and also keeps the wrapping when
    ``loader.worker_init_fn`` is reassigned.
    """
    return WorkerInit(user_fn, _resolve_key(key, mode), hub)


# -- the main-process side ---------------------------------------------------------------------


class _TrackedIterators:
    """Stands in for ``loader._get_iterator`` on one tracked DataLoader.

    Every epoch starts here, so this is where the main process can check that
    the workers will be timed (``worker_init_fn`` reassigned since tracking?),
    warn when there is no session to carry the values back, and, with
    ``num_workers=0``, time the fetcher the main process itself uses.
    """

    def __init__(self, loader: Any, key: str, hub: str) -> None:
        self.loader = loader
        self.key = key
        self.hub = hub
        self.record = Recorder(key, hub)

    def __call__(self) -> Any:
        loader = self.loader
        if loader.num_workers > 0:
            _wrap_worker_init(loader, self.key, self.hub)
            if _no_session():
                warn_once(
                    "no-session",
                    "shmlog.track_data_time: no shmlog session is open, so each DataLoader "
                    "worker records its data time in a MessageHub private to that worker "
                    "and nothing reaches this process; call shmlog.init() before iterating",
                )
        iterator = type(loader)._get_iterator(loader)
        fetcher = getattr(iterator, "_dataset_fetcher", None)
        if fetcher is not None and not isinstance(fetcher, TimedFetcher):
            iterator._dataset_fetcher = TimedFetcher(fetcher, self.record)
        elif loader.num_workers == 0 and fetcher is None:
            warn_once(
                "no-main-fetcher",
                "shmlog.track_data_time: this torch version's single-process DataLoader "
                "iterator has no _dataset_fetcher; data time with num_workers=0 is not "
                "recorded",
            )
        return iterator


def _no_session() -> bool:
    try:
        return PROCESS.current() is None
    except SessionError:
        return False  # the worker's first MessageHub call will raise it clearly


def _wrap_worker_init(loader: Any, key: str, hub: str) -> None:
    current = loader.worker_init_fn
    if isinstance(current, WorkerInit):
        if current.key == key and current.hub == hub:
            return
        current = current.user_fn  # the loader-level settings win; never nest
    loader.worker_init_fn = WorkerInit(current, key, hub)


def track_data_time(
    loader: Any,
    *,
    key: str | None = None,
    mode: str | None = None,
    hub: str | MessageHub = DEFAULT_HUB,
) -> Any:
    """Record the time spent building each batch of ``loader``, per worker.

    Changes ``loader`` in place and returns it, so it stays the same
    ``DataLoader`` object (isinstance checks, attributes, ``len``).  Each
    batch adds one update to scalar ``key`` of MessageHub ``hub``, written by
    the process that built it: ``get_scalar(key).per_writer()`` in the main
    process then shows ``'worker0'``, ``'worker1'``, ... (``'rank<r>/...'``
    under torchrun), or the main process's own label with ``num_workers=0``.

    Args:
        loader: a ``torch.utils.data.DataLoader``; any ``num_workers``,
            ``multiprocessing_context``, ``persistent_workers`` and
            ``pin_memory``.  Its ``worker_init_fn`` is kept and called in
            each worker after the worker is labelled.
        key: the scalar key; default ``'<mode>/worker_data_time'``.
        mode: ``'train'`` (default), ``'val'`` or ``'test'``, the key prefix
            LogProcessor groups by.  Give key or mode, not both.
        hub: the MessageHub to record into, or its name (default
            ``'mmengine'``; with an MMEngine-style runner, pass its hub).

    Call it before the first iteration: persistent workers that are already
    running keep the ``worker_init_fn`` they started with.  Tracking again
    replaces the key and hub instead of timing twice.  The default key is
    not ``'<mode>/data_time'``: MMEngine's IterTimerHook writes that one from
    the main process, with its own meaning (the wait for the batch).
    """
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        raise ImportError(
            "shmlog.track_data_time needs PyTorch (pip install torch)"
        ) from None
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"loader: expected a torch.utils.data.DataLoader, got {type(loader).__name__}"
        )
    resolved = _resolve_key(key, mode)
    hub = _check_hub(hub)
    _wrap_worker_init(loader, resolved, hub)
    if not callable(getattr(type(loader), "_get_iterator", None)):
        warn_once(
            "no-get-iterator",
            "shmlog.track_data_time: this torch version's DataLoader has no _get_iterator; "
            "only DataLoader workers are timed",
        )
        return loader
    # An instance attribute shadows DataLoader._get_iterator, which __iter__
    # calls once per epoch (once in all for persistent workers).
    loader._get_iterator = _TrackedIterators(loader, resolved, hub)
    return loader
