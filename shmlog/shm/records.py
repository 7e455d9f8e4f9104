"""Single-writer byte rings that carry log records to one reading process.

Every process that logs inside a session owns one record ring; exactly one
process on the node (the designated log writer) reads them all.  A ring at a
64-byte aligned offset ``L`` of a records segment::

    L+0     head      u64  bytes published by the producer (only it writes)
    L+8     capacity  u64  bytes in the data area
    L+16    writer    u32  producer's slot in the control segment's writer table
    L+20    (reserved)
    L+24    size      u64  bytes this ring takes, header included
    L+32    consumed  u64  bytes the log writer is done with (only it writes)
    L+40    dropped   u64  records refused because the ring stayed full (producer)
    L+48    reported  u64  of those, how many the log writer has reported (writer)
    L+64    data      ``capacity`` bytes

Positions grow without bound; ``position % capacity`` is the offset in the
data area.  A record is a u32 length, its payload, and padding to 8 bytes.
A record never wraps around the end: when it does not fit, a u32 WRAP mark
sends the reader back to the start.  The producer stores the record first
and ``head`` last; the reader uses the record first and ``consumed`` last, so
a log writer killed between the two leaves ``consumed`` before the record and
its successor writes that one record again: at most one duplicate per ring.
(Ordering and atomicity as in ``shmlog.shm.ring``; ``fence`` covers CPUs
other than x86-64.)

Payloads are ``marshal`` dumps of plain tuples: only built-in data crosses,
and it is cheap to make in the training process.
"""

from __future__ import annotations

import marshal
import time
from typing import Any

from .fence import fence
from .segment import read_u64, write_u64

HEADER_BYTES = 64
_HEAD, _CAPACITY, _WRITER, _SIZE, _CONSUMED, _DROPPED, _REPORTED = 0, 8, 16, 24, 32, 40, 48
WRAP = 0xFFFFFFFF
_MAX_RECORD_FRACTION = 4  # a record may take at most a quarter of its ring


def ring_bytes(capacity: int) -> int:
    return HEADER_BYTES + (capacity + 63) // 64 * 64


_u64, _put64 = read_u64, write_u64


def format_ring(buf: memoryview, offset: int, capacity: int, writer: int) -> int:
    size = ring_bytes(capacity)
    buf[offset : offset + HEADER_BYTES] = bytes(HEADER_BYTES)
    _put64(buf, offset + _CAPACITY, size - HEADER_BYTES)
    buf[offset + _WRITER : offset + _WRITER + 4] = writer.to_bytes(4, "little")
    _put64(buf, offset + _SIZE, size)
    return size


class RecordProducer:
    """The producing end: one per process, used under the caller's lock."""

    def __init__(self, buf: memoryview, offset: int) -> None:
        self._buf = buf
        self._data = offset + HEADER_BYTES
        # The header as u64 words, kept: each put reads ``consumed`` and
        # stores ``head``, single aligned loads and stores through this view.
        self._words = buf[offset : offset + HEADER_BYTES].cast("Q")
        self.capacity = self._words[_CAPACITY // 8]
        self._head = self._words[_HEAD // 8]
        # Whether the last put was refused: the caller then stops waiting for
        # room until a put succeeds again (see ``shmlog.api.record_handler``).
        self.dropping = False

    def release(self) -> None:
        """Let go of the segment (its mapping cannot close while a view is held)."""
        self._words.release()

    def backlog(self) -> int:
        """Bytes published but not yet consumed."""
        return self._head - self._words[_CONSUMED // 8]

    def put(self, record: tuple[Any, ...], block_seconds: float) -> bool:
        """Publish ``record``; False (and counted as dropped) if it never fits.

        Waits at most ``block_seconds`` for the log writer to make room.
        """
        payload = marshal.dumps(record)
        if len(payload) + 8 > self.capacity // _MAX_RECORD_FRACTION:
            # Keep the head of an oversized message rather than refusing it.
            payload = marshal.dumps(_truncate(record, self.capacity // _MAX_RECORD_FRACTION - 64))
        needed = (4 + len(payload) + 7) & ~7
        buf = self._buf
        words = self._words
        head = self._head
        position = head % self.capacity
        waste = 0 if position + needed <= self.capacity else self.capacity - position
        deadline = None
        while self.capacity - (head - words[_CONSUMED // 8]) < waste + needed:
            now = time.monotonic()
            if deadline is None:
                deadline = now + block_seconds
            if now >= deadline:
                words[_DROPPED // 8] += 1
                return False
            time.sleep(0.0005)
        if waste:
            at = self._data + position
            buf[at : at + 4] = WRAP.to_bytes(4, "little")
            head += waste
            position = 0
        at = self._data + position
        buf[at : at + 4] = len(payload).to_bytes(4, "little")
        buf[at + 4 : at + 4 + len(payload)] = payload
        if fence is not None:
            fence()
        head += needed
        words[_HEAD // 8] = head
        self._head = head
        return True


def _truncate(record: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    items = list(record)
    for i, item in enumerate(items):
        if isinstance(item, str) and len(item) > limit // 8:
            items[i] = item[: limit // 8] + " ... [truncated by shmlog]"
    return tuple(items)


class RecordConsumer:
    """The reading end, used only by the designated log writer."""

    def __init__(self, buf: memoryview, offset: int) -> None:
        self.buf = self._buf = buf
        self._at = offset
        self.offset = offset
        self._data = offset + HEADER_BYTES
        self.capacity = _u64(buf, offset + _CAPACITY)
        self.writer = int.from_bytes(buf[offset + _WRITER : offset + _WRITER + 4], "little")
        self._pending_end = 0

    def pending(self) -> int:
        return _u64(self._buf, self._at + _HEAD) - _u64(self._buf, self._at + _CONSUMED)

    def next(self) -> tuple[Any, ...] | None:
        """The oldest unconsumed record, or None; call :meth:`done` after using it."""
        buf = self._buf
        consumed = _u64(buf, self._at + _CONSUMED)
        head = _u64(buf, self._at + _HEAD)
        if fence is not None:
            fence()
        while consumed < head:
            position = consumed % self.capacity
            at = self._data + position
            length = int.from_bytes(buf[at : at + 4], "little")
            if length == WRAP:
                consumed += self.capacity - position
                _put64(buf, self._at + _CONSUMED, consumed)
                continue
            record = marshal.loads(bytes(buf[at + 4 : at + 4 + length]))
            self._pending_end = consumed + ((4 + length + 7) & ~7)
            return record
        return None

    def done(self) -> None:
        """Mark the record returned by :meth:`next` as written."""
        _put64(self._buf, self._at + _CONSUMED, self._pending_end)

    def unreported_drops(self) -> int:
        return _u64(self._buf, self._at + _DROPPED) - _u64(self._buf, self._at + _REPORTED)

    def mark_reported(self, count: int) -> None:
        _put64(self._buf, self._at + _REPORTED, _u64(self._buf, self._at + _REPORTED) + count)
