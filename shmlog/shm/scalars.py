"""The scalar rings of a session, found by key.

Every ring (``shmlog.shm.scalar_rings``) names its key and its writer slot.  A
process finds the rings of a key by walking the rings segments
(``shmlog.shm.directory``) and keeps a reader per ring; its own rings, one
per key it writes, are found the same way, so a writer that takes over a
dead writer's slot continues that writer's rings instead of starting new
ones.
"""

from __future__ import annotations

from typing import Any

from ..errors import ShmFullError
from .control import Control
from .directory import SegmentList
from .scalar_rings import (
    HEADER_BYTES,
    RECORD_BYTES,
    RingReader,
    RingWriter,
    encode_key,
    format_ring,
    ring_bytes,
)
from .segment import KIND_RINGS, Segment

MAX_CAPACITY = 1 << 26


def check_capacity(capacity: Any, what: str) -> int:
    """``capacity`` if a ring can retain that many records, else ValueError."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"{what}: expected an int >= 1, got {capacity!r}")
    if capacity > MAX_CAPACITY:
        raise ValueError(
            f"{what}: {capacity} records is more than the {MAX_CAPACITY} a ring can hold"
        )
    return capacity


def _advice(capacity: int, segment_bytes: int) -> str:
    """What makes a session's rings fit in less of /dev/shm (every option named works)."""
    small = 16
    return (
        f"Or make the session smaller: a scalar ring takes {HEADER_BYTES} + "
        f"{RECORD_BYTES} x (capacity + 1) bytes, rounded up to 64 ({ring_bytes(capacity)} at "
        f"this ring's capacity of {capacity}, {ring_bytes(small)} at capacity={small}), so "
        f"lower capacity= (or capacities= for some keys) in shmlog.init; segments grow up "
        f"to segment_bytes= ({segment_bytes} here), so lowering it reserves less at once."
    )


class RingDirectory:
    """One process's readers of every ring of a session, by key."""

    def __init__(self, session: str, control: Control, generation: int) -> None:
        self._views: list[tuple[memoryview, memoryview]] = []
        self._segments = SegmentList(session, control, KIND_RINGS, generation, self._map)
        self._readers: dict[str, list[RingReader]] = {}

    def _map(self, segment: Segment) -> None:
        # The whole segment as float64 and int64 words: what rings index into.
        self._views.append((segment.buf.cast("d"), segment.buf.cast("q")))

    def refresh(self) -> None:
        """Read the rings published since the last call."""
        for index, offset in self._segments.new_entries():
            d, q = self._views[index]
            reader = RingReader(self._segments.segments[index].buf, d, q, offset, index)
            self._readers.setdefault(reader.key, []).append(reader)

    def readers(self, key: str) -> list[RingReader]:
        """Every ring of ``key`` (one per writer that ever wrote it)."""
        self.refresh()
        return list(self._readers.get(key, ()))

    def keys(self) -> list[str]:
        self.refresh()
        return list(self._readers)

    def writer(self, key: str, slot: int, capacity: int, segment_bytes: int) -> RingWriter:
        """The ring of ``key`` written by ``slot``, created if it has none (lock held).

        ``capacity`` applies only to a ring created here.
        """
        raw_key = encode_key(key)
        self.refresh()
        for reader in self._readers.get(key, ()):
            if reader.writer == slot:
                d, q = self._views[reader.segment]
                return RingWriter(d, q, reader.offset)
        check_capacity(capacity, "ring capacity")

        def fill(buf: memoryview, offset: int) -> None:
            format_ring(buf, offset, capacity, slot, raw_key)

        try:
            index, offset = self._segments.append(ring_bytes(capacity), segment_bytes, fill)
        except ShmFullError as exc:
            raise ShmFullError(f"{exc} {_advice(capacity, segment_bytes)}") from None
        self.refresh()
        d, q = self._views[index]
        return RingWriter(d, q, offset)

    def total_bytes(self) -> int:
        return self._segments.total_bytes()

    def close(self) -> None:
        self._readers = {}
        for d, q in self._views:
            for view in (d, q):
                try:
                    view.release()
                except BufferError:  # a RingWriter still uses it; freed with it
                    pass
        self._views = []
        self._segments.close()
