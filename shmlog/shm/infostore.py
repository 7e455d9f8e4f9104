"""The runtime info slots of a session, found by key.

Each key has one slot (``shmlog.shm.info``) holding its latest value as
bytes; a value that outgrows its slot moves to a larger one published later,
so walking the info segments in order and keeping the last slot seen per key
finds every key's current slot.
"""

from __future__ import annotations

from ..errors import SessionError
from . import info
from .control import Control
from .directory import SegmentList
from .scalar_rings import encode_key
from .segment import KIND_INFO, Segment

SEGMENT_BYTES = 256 << 10
_MIN_SLOT = 256


class InfoStore:
    """One process's index of a session's runtime info slots."""

    def __init__(self, session: str, control: Control, generation: int) -> None:
        self._control = control
        # Values are few and small: one segment of SEGMENT_BYTES from the start.
        self._segments = SegmentList(
            session, control, KIND_INFO, generation, start_bytes=SEGMENT_BYTES
        )
        self._index: dict[str, tuple[int, int]] = {}

    @property
    def segments(self) -> list[Segment]:
        return self._segments.segments

    def refresh(self) -> None:
        for index, offset in self._segments.new_entries():
            self._index[info.entry_key(self.segments[index].buf, offset)] = (index, offset)

    def get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, None when unset or removed."""
        for _ in range(3):
            self.refresh()
            where = self._index.get(key)
            if where is None:
                return None
            state, payload = self._read(*where)
            if state != info.MOVED:
                return payload
        raise SessionError(f"runtime info {key!r} keeps moving; is a writer looping?")

    def _read(self, index: int, offset: int) -> tuple[int, bytes | None]:
        segment = self.segments[index]
        state, payload = info.read(segment, offset)
        if state == info.BUSY:
            # Wait for the writer's lock; a rewrite still unfinished under it
            # was left by a writer that died (TORN: no value).
            with self._control:
                state, payload = info.read(segment, offset, locked=True)
        return state, payload

    def keys(self) -> list[str]:
        self.refresh()
        return [key for key, where in self._index.items() if self._read(*where)[0] == 0]

    def set(self, key: str, payload: bytes | None) -> bytes | None:
        """Store ``payload`` under ``key`` (None removes it); returns the old bytes.

        The caller holds the session lock.
        """
        raw_key = encode_key(key)
        self.refresh()
        where = self._index.get(key)
        old = None
        if where is not None:
            segment = self.segments[where[0]]
            state, old = info.read(segment, where[1], locked=True)
            if payload is None:
                if state in (0, info.TORN):
                    info.rewrite(segment.buf, where[1], None, info.REMOVED)
                return old
            if info.capacity(segment.buf, where[1]) >= len(payload):
                info.rewrite(segment.buf, where[1], payload)
                return old
        elif payload is None:
            return None
        capacity = max(_MIN_SLOT, 2 * len(payload))

        def fill(buf: memoryview, offset: int) -> None:
            info.format_entry(buf, offset, raw_key, payload, capacity)

        self._segments.append(info.entry_bytes(capacity), SEGMENT_BYTES, fill)
        if where is not None:
            info.rewrite(self.segments[where[0]].buf, where[1], None, info.MOVED)
        self.refresh()
        return old

    def total_bytes(self) -> int:
        return self._segments.total_bytes()

    def close(self) -> None:
        self._index = {}
        self._segments.close()
