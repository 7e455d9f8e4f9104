"""A MessageHub's view of a session: how hub names and keys map onto rings.

A scalar ``key`` of hub ``name`` lives in rings named ``hub_key(name, key)``
(``shmlog.wire``), one ring per writing thread.  Runtime info uses the same
naming for its slots.

Ranks stay apart.  Each slot carries the rank of its process (the one
identity rule of ``shmlog.api.process``; DataLoader workers have their
rank's), so a hub's scalars as a process reads them (:meth:`SharedHub.get_scalar`,
:meth:`SharedHub.log_scalars`, hence every LogProcessor line) show what that
process's rank wrote: its own process and that rank's workers, whatever the
hub is called, as MMEngine's per-process hubs do.  A process without a rank
(no torch.distributed group, no ``RANK``) sees every writer: outside
distributed training everything is one rank.  ``per_writer()`` of a buffer
still lists every writer of every rank.  Statistics over every rank of the
job are not read here: the ranks exchange their shares at logging steps
(``shmlog.api.reduce``, ``shmlog.format.reduce``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..errors import InvalidValue
from ..shm import codec
from ..shm.scalar_rings import RingReader, RingWriter
from ..shm.session import SessionSegments
from ..wire import hub_prefix
from .device_values import DeferredSink
from .history_buffer import HistoryBuffer
from .merged import MergedRings
from .values import to_count, to_float

# Whose records a hub's statistics merge: "rank", the reading process's rank.
SCOPES = ("rank",)


class SharedHub:
    """Scalars and runtime info of one hub name inside one session."""

    def __init__(
        self, segments: SessionSegments, name: str, capacity_of: Callable[[str], int],
        scope: str = "rank",
    ) -> None:
        if scope not in SCOPES:
            raise InvalidValue(f"scope: expected one of {list(SCOPES)}, got {scope!r}")
        self._segments = segments
        self._prefix = hub_prefix(name)
        self._capacity_of = capacity_of
        self.scope = scope
        # key -> this thread's ring (see SessionSegments.thread_slot); each thread's
        # dict is emptied by the session in a forked child.
        self._local = threading.local()

    # -- scalars ---------------------------------------------------------------

    def update_scalar(self, key: str, value: Any, count: Any) -> None:
        # The hot path: one dict lookup and the ring's append once warm.
        if type(value) is not float:
            value = to_float(value, key)
        if type(count) is int and count == 1:
            count = 1.0
        else:
            count = to_count(count, key)
        try:
            writer = self._local.writers[key]
        except (AttributeError, KeyError):
            writer = self._open(key)
        writer.append(value, count)

    def ring_writers(self) -> dict[str, RingWriter]:
        """This thread's rings by key (empty until it writes)."""
        writers = getattr(self._local, "writers", None)
        if writers is None:
            writers = self._local.writers = {}
            self._segments.register_fork_cache(writers)
        return writers

    def _open(self, key: str) -> RingWriter:
        writers = self.ring_writers()
        writer = writers.get(key)
        if writer is None:
            writer = self._segments.ring_writer(self._prefix + key, self._capacity_of(key))
            writers[key] = writer
        return writer

    def deferred_sink(self, key: str) -> DeferredSink:
        """This thread's ring for ``key`` wrapped for device values
        (``shmlog.stats.device_values``): later appends keep their order behind
        staged values."""
        writer = self._open(key)
        if type(writer) is not DeferredSink:
            writer = self.ring_writers()[key] = DeferredSink(writer, key)
        return writer

    def _append(self, key: str, value: float, count: float) -> None:
        self._open(key).append(value, count)

    def get_scalar(self, key: str) -> HistoryBuffer | None:
        """The history of ``key`` in this hub's scope; None when the scope has none."""
        every = self._segments.readers(self._prefix + key)
        rings = self._in_scope(every, self._reader_rank())
        if not rings:
            return None
        return self._buffer(key, rings, every)

    def _reader_rank(self) -> int:
        """The rank whose writers the statistics merge; -1 (no rank): every writer."""
        return self._segments.reader_rank()

    def _in_scope(self, rings: list[RingReader], rank: int) -> list[RingReader]:
        if rank < 0:
            return rings
        control = self._segments.control
        return [ring for ring in rings if control.slot(ring.slot).rank == rank]

    def _buffer(self, key: str, rings: list, every: list, until: int | None = None) -> HistoryBuffer:
        storage = MergedRings(
            rings,
            append=None if until is not None else (
                lambda value, count: self._append(key, value, count)),
            labels=self._segments.slot_labels,
            until=until,
            every=every,
        )
        return HistoryBuffer.over(storage, key)

    def keys(self) -> list[str]:
        size = len(self._prefix)
        return [k[size:] for k in self._segments.scalar_keys() if k.startswith(self._prefix)]

    def log_scalars(
        self, until: int | None = None, rank: int | None = None
    ) -> OrderedDict[str, HistoryBuffer]:
        """Every key's merged history in this hub's scope; with ``until``, as it was then.

        ``rank``: the rank whose writers merge (default: the reading process's;
        -1: every writer).  Keys that only other ranks wrote are not in it.
        """
        result: OrderedDict[str, HistoryBuffer] = OrderedDict()
        rank = self._reader_rank() if rank is None else rank
        for key in self.keys():
            every = self._segments.readers(self._prefix + key)
            rings = self._in_scope(every, rank)
            if rings:
                result[key] = self._buffer(key, rings, every, until)
        return result

    def load_scalar(self, key: str, buffer: HistoryBuffer) -> None:
        """Restore a saved history into this process's (empty) ring for ``key``."""
        writer = self._open(key)
        values, counts = buffer.data
        try:
            writer.seed(values, counts, tuple(buffer.totals()))
        except ValueError:
            raise ValueError(
                f"cannot restore scalar {key!r}: this process already logged it in the "
                f"session; load the state dict before logging"
            ) from None

    # -- runtime info ------------------------------------------------------------

    def update_info(self, key: str, value: Any) -> None:
        self._segments.info_set(self._prefix + key, codec.encode(key, value))

    def get_info(self, key: str, default: Any = None) -> Any:
        raw = self._segments.info_get(self._prefix + key)
        return default if raw is None else codec.decode(raw)

    def pop_info(self, key: str, default: Any = None) -> Any:
        raw = self._segments.info_set(self._prefix + key, None)
        return default if raw is None else codec.decode(raw)

    def runtime_info(self) -> OrderedDict[str, Any]:
        result: OrderedDict[str, Any] = OrderedDict()
        size = len(self._prefix)
        for full in self._segments.info_keys():
            if full.startswith(self._prefix):
                raw = self._segments.info_get(full)
                if raw is not None:
                    result[full[size:]] = codec.decode(raw)
        return result
