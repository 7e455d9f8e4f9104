"""A MessageHub's view of a session: how hub names and keys map onto rings.

A scalar ``key`` of hub ``name`` lives in rings named ``hub_key(name, key)``
(``shmlog.wire``), one ring per writing thread.  Runtime info uses the same
naming for its slots.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..shm import codec
from ..shm.ring import RingWriter
from ..shm.session import SessionSegments
from ..wire import hub_prefix
from .history_buffer import HistoryBuffer
from .merged import MergedRings
from .values import to_count, to_float


class SharedHub:
    """Scalars and runtime info of one hub name inside one session."""

    def __init__(
        self, segments: SessionSegments, name: str, capacity_of: Callable[[str], int]
    ) -> None:
        self._segments = segments
        self._prefix = hub_prefix(name)
        self._capacity_of = capacity_of
        # key -> this thread's ring (see Session.writer_slot); each thread's
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

    def writers(self) -> dict[str, RingWriter]:
        """This thread's rings by key (empty until it writes)."""
        writers = getattr(self._local, "writers", None)
        if writers is None:
            writers = self._local.writers = {}
            self._segments.register_fork_cache(writers)
        return writers

    def _open(self, key: str) -> RingWriter:
        writers = self.writers()
        writer = writers.get(key)
        if writer is None:
            writer = self._segments.ring_writer(self._prefix + key, self._capacity_of(key))
            writers[key] = writer
        return writer

    def _append(self, key: str, value: float, count: float) -> None:
        self._open(key).append(value, count)

    def get_scalar(self, key: str) -> HistoryBuffer | None:
        rings = self._segments.readers(self._prefix + key)
        if not rings:
            return None
        return self._buffer(key, rings)

    def _buffer(self, key: str, rings: list, until: int | None = None) -> HistoryBuffer:
        storage = MergedRings(
            rings,
            append=None if until is not None else (
                lambda value, count: self._append(key, value, count)),
            labels=self._segments.writer_labels,
            until=until,
        )
        return HistoryBuffer._over(storage, key)

    def keys(self) -> list[str]:
        size = len(self._prefix)
        return [k[size:] for k in self._segments.scalar_keys() if k.startswith(self._prefix)]

    def log_scalars(self, until: int | None = None) -> OrderedDict[str, HistoryBuffer]:
        """Every key's merged history; with ``until``, as it was at that clock time."""
        result: OrderedDict[str, HistoryBuffer] = OrderedDict()
        for key in self.keys():
            result[key] = self._buffer(key, self._segments.readers(self._prefix + key), until)
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
