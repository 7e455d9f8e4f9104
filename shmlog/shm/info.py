"""Runtime info slots: one value per key, last writer wins.

An info entry at a 64-byte aligned offset ``E`` of an info segment::

    E+0     seq       u64  even when stable, odd while the value is rewritten
    E+8     capacity  u32  payload bytes available
    E+12    length    u32  payload bytes in use; REMOVED after pop_info,
                           MOVED when a larger entry for the key follows
    E+16    key_len   u32
    E+24    size      u64  bytes this entry takes
    E+32    key       256 bytes UTF-8
    E+288   payload   ``capacity`` bytes (see ``shmlog.shm.codec``)

Writers hold the session lock (several processes may set the same key), so
the seq counter only has to keep lock-free readers from using a value that
is half rewritten.  A value that outgrows its entry moves to a new, larger
entry published after it; the old one is then marked MOVED, and readers that
meet that mark look the key up again.

The runtime info of a session, found by key (:class:`InfoStore`): each key
has one slot holding its latest value as bytes; a value that outgrows its
slot moves to a larger one published later, so walking the info segments in
order and keeping the last slot seen per key finds every key's current slot.
"""

from __future__ import annotations

from ..errors import SessionError
from .control import Control
from .directory import ENTRY_SIZE_AT, SegmentList
from .fence import fence
from .names import encode_key
from .segment import KIND_INFO, Segment, read_u64, write_u64

ENTRY_HEADER_BYTES = 288
REMOVED = 0xFFFFFFFF
MOVED = 0xFFFFFFFE
# States ``read`` reports that are never stored: the entry was left mid-rewrite
# by a writer that died (TORN, seen with the lock held), or is mid-rewrite
# longer than a lock-free reader spins for (BUSY).
TORN = 0xFFFFFFFD
BUSY = 0xFFFFFFFC
_SPINS = 1000
_SEQ, _CAP, _LEN, _KEYLEN, _KEY = 0, 8, 12, 16, 32


def entry_bytes(capacity: int) -> int:
    return (ENTRY_HEADER_BYTES + capacity + 63) // 64 * 64


def _u(buf: memoryview, at: int, width: int) -> int:
    if width == 8:
        return read_u64(buf, at)
    return int.from_bytes(buf[at : at + width], "little")


def _put(buf: memoryview, at: int, width: int, value: int) -> None:
    if width == 8:
        write_u64(buf, at, value)
    else:
        buf[at : at + width] = value.to_bytes(width, "little")


def format_entry(buf: memoryview, offset: int, key: bytes, payload: bytes, capacity: int) -> int:
    size = entry_bytes(capacity)
    _put(buf, offset + _SEQ, 8, 0)
    _put(buf, offset + _CAP, 4, capacity)
    _put(buf, offset + _LEN, 4, len(payload))
    _put(buf, offset + _KEYLEN, 4, len(key))
    _put(buf, offset + ENTRY_SIZE_AT, 8, size)
    buf[offset + _KEY : offset + _KEY + len(key)] = key
    buf[offset + ENTRY_HEADER_BYTES : offset + ENTRY_HEADER_BYTES + len(payload)] = payload
    return size


def entry_key(buf: memoryview, offset: int) -> str:
    length = _u(buf, offset + _KEYLEN, 4)
    return bytes(buf[offset + _KEY : offset + _KEY + length]).decode("utf-8")


def entry_capacity(buf: memoryview, offset: int) -> int:
    return _u(buf, offset + _CAP, 4)


def rewrite(buf: memoryview, offset: int, payload: bytes | None, mark: int = 0) -> None:
    """Replace an entry's value in place (caller holds the session lock).

    ``payload`` None stores ``mark`` (REMOVED or MOVED) instead of a value.
    """
    # Odd already: a writer died mid-rewrite (writers hold the lock, so no live
    # one is in the middle of one); this rewrite completes the cycle it began.
    busy = _u(buf, offset + _SEQ, 8) | 1
    _put(buf, offset + _SEQ, 8, busy)
    if fence is not None:
        fence()
    if payload is None:
        _put(buf, offset + _LEN, 4, mark)
    else:
        buf[offset + ENTRY_HEADER_BYTES : offset + ENTRY_HEADER_BYTES + len(payload)] = payload
        _put(buf, offset + _LEN, 4, len(payload))
    if fence is not None:
        fence()
    _put(buf, offset + _SEQ, 8, busy + 1)


def read(segment: Segment, offset: int, locked: bool = False) -> tuple[int, bytes | None]:
    """(state, payload): state is 0 with the payload, or REMOVED/MOVED/TORN/BUSY with None.

    ``locked``: the caller holds the session lock, so a rewrite in progress
    can only be a dead writer's (TORN).  Without it, a rewrite that does not
    end within a short spin gives BUSY: take the lock and read again.
    """
    buf = segment.buf
    spins = 0
    while True:
        seq = _u(buf, offset + _SEQ, 8)
        if seq & 1:
            if locked:
                return TORN, None
            spins += 1
            if spins > _SPINS:
                return BUSY, None
            continue
        if fence is not None:
            fence()
        length = _u(buf, offset + _LEN, 4)
        if length in (REMOVED, MOVED):
            payload = None
        else:
            payload = bytes(buf[offset + ENTRY_HEADER_BYTES : offset + ENTRY_HEADER_BYTES + length])
        if fence is not None:
            fence()
        if _u(buf, offset + _SEQ, 8) == seq:
            return (length, None) if payload is None else (0, payload)


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
            self._index[entry_key(self.segments[index].buf, offset)] = (index, offset)

    def get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, None when unset or removed."""
        for _ in range(3):
            self.refresh()
            where = self._index.get(key)
            if where is None:
                return None
            state, payload = self._read(*where)
            if state != MOVED:
                return payload
        raise SessionError(f"runtime info {key!r} keeps moving; is a writer looping?")

    def _read(self, index: int, offset: int) -> tuple[int, bytes | None]:
        segment = self.segments[index]
        state, payload = read(segment, offset)
        if state == BUSY:
            # Wait for the writer's lock; a rewrite still unfinished under it
            # was left by a writer that died (TORN: no value).
            with self._control:
                state, payload = read(segment, offset, locked=True)
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
            state, old = read(segment, where[1], locked=True)
            if payload is None:
                if state in (0, TORN):
                    rewrite(segment.buf, where[1], None, REMOVED)
                return old
            if entry_capacity(segment.buf, where[1]) >= len(payload):
                rewrite(segment.buf, where[1], payload)
                return old
        elif payload is None:
            return None
        capacity = max(_MIN_SLOT, 2 * len(payload))

        def fill(buf: memoryview, offset: int) -> None:
            format_entry(buf, offset, raw_key, payload, capacity)

        self._segments.append(entry_bytes(capacity), SEGMENT_BYTES, fill)
        if where is not None:
            rewrite(self.segments[where[0]].buf, where[1], None, MOVED)
        self.refresh()
        return old

    def total_bytes(self) -> int:
        return self._segments.total_bytes()

    def close(self) -> None:
        self._index = {}
        self._segments.close()
