"""Single-writer byte rings that carry log records to one reading process.

Every process that logs inside a session owns one record ring; exactly one
process on the node (the designated log writer) reads them all.  A ring at a
64-byte aligned offset ``L`` of a records segment::

    L+0     head      u64  bytes published by the producer (only it writes)
    L+8     capacity  u64  bytes in the data area
    L+16    slot      u32  producer's slot in the control segment's slot table
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
and ``head`` last.  The reader reads ahead of ``consumed`` (its own cursor,
in its own memory) and moves ``consumed`` only when it has committed what it
read: a reader killed at any point leaves ``consumed`` at its last commit,
and its successor reads from there again (``shmlog.writer.commit`` makes
that write nothing twice).  ``reported`` moves at the same commits.
(Ordering and atomicity as in ``shmlog.shm.scalar_rings``; ``fence`` covers CPUs
other than x86-64.)

Waking the reader: a producer that finds the reader asleep after publishing
rings the session's doorbell (``shmlog.shm.doorbell``).

Payloads are ``marshal`` dumps (format 2) of plain tuples: only built-in data
crosses, and it is cheap to make in the training process.  What the tuples are
(their kinds, tags and fields) is ``shmlog.wire``'s; here a tuple is opaque but
for its creation time (``wire.CREATED``), which ``take`` reads.

The record rings of a session (:class:`RecordRings`): a process's ring is
found by its slot, so a process that takes over a dead process's slot (a
DataLoader worker restarted every epoch) continues its ring.
"""

from __future__ import annotations

import marshal
import time
from collections.abc import Callable
from typing import Any

from ..wire import CREATED
from .control import Control
from .directory import SegmentList
from .fence import fence
from .segment import KIND_RECORDS, read_u64, write_u64

RECORD_HEADER_BYTES = 64
_HEAD, _CAPACITY, _SLOT, _SIZE, _CONSUMED, _DROPPED, _REPORTED = 0, 8, 16, 24, 32, 40, 48
assert (_HEAD // 8, _CONSUMED // 8) == (0, 4)  # word indices written out in RecordProducer.put
WRAP = 0xFFFFFFFF
# Format 2 has no back-references, which makes both ends faster than the
# default for these small tuples of distinct values.
MARSHAL_VERSION = 2
_MAX_RECORD_FRACTION = 4  # a record may take at most a quarter of its ring


def record_ring_bytes(capacity: int) -> int:
    return RECORD_HEADER_BYTES + (capacity + 63) // 64 * 64


_u64, _put64 = read_u64, write_u64


def format_record_ring(buf: memoryview, offset: int, capacity: int, slot: int) -> int:
    size = record_ring_bytes(capacity)
    buf[offset : offset + RECORD_HEADER_BYTES] = bytes(RECORD_HEADER_BYTES)
    _put64(buf, offset + _CAPACITY, size - RECORD_HEADER_BYTES)
    buf[offset + _SLOT : offset + _SLOT + 4] = slot.to_bytes(4, "little")
    _put64(buf, offset + _SIZE, size)
    return size


class RecordProducer:
    """The producing end: one per process, used under the caller's lock."""

    def __init__(self, buf: memoryview, offset: int) -> None:
        self._buf = buf
        self._data = offset + RECORD_HEADER_BYTES
        # The header as u64 words, kept: each put reads ``consumed`` and
        # stores ``head``, single aligned loads and stores through this view.
        self._words = buf[offset : offset + RECORD_HEADER_BYTES].cast("Q")
        self.capacity = self._words[_CAPACITY // 8]
        self._lengths = buf[self._data : self._data + self.capacity].cast("I")
        self._head = self._words[_HEAD // 8]
        # Whether the last put was refused: the caller then stops waiting for
        # room until a put succeeds again (see ``shmlog.api.record_handler``).
        self.dropping = False

    def release(self) -> None:
        """Let go of the segment (its mapping cannot close while a view is held)."""
        self._lengths.release()
        self._words.release()

    def backlog(self) -> int:
        """Bytes published but not yet committed by the reader."""
        return self._head - self._words[_CONSUMED // 8]

    def position(self) -> int:
        """Where the next record goes: every record put so far ends before it."""
        return self._head

    def consumed(self) -> int:
        """The ring's ``consumed``: how far the log writer has committed."""
        return self._words[_CONSUMED // 8]

    def put(self, record: tuple[Any, ...], block_seconds: float,
            wake: Callable[[], None] | None = None) -> int:
        """Publish ``record``; returns the position it starts at, -1 when dropped.

        Waits at most ``block_seconds`` for the reader to make room (after
        ringing ``wake`` once, in case the reader sleeps); a record that never
        fits is dropped and counted.
        """
        payload = marshal.dumps(record, MARSHAL_VERSION)
        size = len(payload)
        capacity = self.capacity
        if size + 8 > capacity // _MAX_RECORD_FRACTION:
            # Keep the head of an oversized message rather than refusing it.
            payload = marshal.dumps(_truncate(record, capacity // _MAX_RECORD_FRACTION - 64),
                                    MARSHAL_VERSION)
            size = len(payload)
        needed = (4 + size + 7) & ~7
        head = self._head
        position = head % capacity
        waste = 0 if position + needed <= capacity else capacity - position
        if capacity - (head - self._words[4]) < waste + needed and not self._wait(  # 4: _CONSUMED // 8
                waste + needed, block_seconds, wake):
            return -1
        if waste:
            self._lengths[position >> 2] = WRAP
            position = 0
        at = self._data + position + 4
        self._buf[at : at + size] = payload
        self._lengths[position >> 2] = size
        if fence is not None:
            fence()
        self._words[0] = self._head = head + waste + needed  # _HEAD // 8
        return head

    def count_dropped(self) -> None:
        """Count a record the caller drops without putting it (a ``put`` refused, in effect)."""
        self._words[_DROPPED // 8] += 1

    def _wait(self, needed: int, block_seconds: float, wake: Callable[[], None] | None) -> bool:
        """Wait up to ``block_seconds`` for ``needed`` free bytes; False (counted) if not."""
        deadline = time.monotonic() + block_seconds
        if wake is not None:
            wake()
        words = self._words
        while self.capacity - (self._head - words[_CONSUMED // 8]) < needed:
            if time.monotonic() >= deadline:
                words[_DROPPED // 8] += 1
                return False
            time.sleep(0.0005)
        return True


def _truncate(record: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """``record`` with each text longer than ``limit // 8`` characters cut there, marked
    (a text that ends a line keeps its line end)."""
    items = list(record)
    for i, item in enumerate(items):
        if isinstance(item, str) and len(item) > limit // 8:
            end = "\n" if item.endswith("\n") else ""
            items[i] = item[: limit // 8] + " ... [truncated by shmlog]" + end
    return tuple(items)


def longest_text(capacity: int) -> int:
    """The characters of a text field a record in a ring of ``capacity`` bytes keeps whole
    (at least: a record is cut only when all of it takes more than a quarter of the ring)."""
    return (capacity // _MAX_RECORD_FRACTION - 64) // 8


class RecordConsumer:
    """The reading end, used only by the designated log writer.

    ``cursor`` is how far this reader has read (its own memory); ``consumed``
    in the ring is how far it has committed.  ``ident`` names the ring in the
    writer's commit records: ``l<segment index>:<offset>``.
    """

    def __init__(self, buf: memoryview, offset: int, ident: str = "") -> None:
        self.buf = self._buf = buf
        self.offset = offset
        self.ident = ident
        self._data = offset + RECORD_HEADER_BYTES
        # Header words and the data area as u32 words, kept: reading a record
        # is then a few loads, with no view made per record.
        self._words = buf[offset : offset + RECORD_HEADER_BYTES].cast("Q")
        self.capacity = self._words[_CAPACITY // 8]
        self._lengths = buf[self._data : self._data + self.capacity].cast("I")
        self.slot = int.from_bytes(buf[offset + _SLOT : offset + _SLOT + 4], "little")
        self.cursor = self.committed = self._words[_CONSUMED // 8]
        self.reported = self._words[_REPORTED // 8]
        # The record at position ``_ahead_at``, read but not used yet.
        self._ahead_at, self._ahead, self._ahead_end = -1, None, 0

    def release(self) -> None:
        """Let go of the segment (its mapping cannot close while a view is held)."""
        self._lengths.release()
        self._words.release()

    def consumed_in_ring(self) -> int:
        """The ring's ``consumed``: how far the log writers committed so far."""
        return self._words[_CONSUMED // 8]

    def reported_in_ring(self) -> int:
        return self._words[_REPORTED // 8]

    def head(self) -> int:
        return self._words[_HEAD // 8]

    def pending(self) -> int:
        """Bytes published but not yet committed."""
        words = self._words
        return words[_HEAD // 8] - words[_CONSUMED // 8]

    def unread(self) -> bool:
        """Whether records were published past this reader's cursor."""
        return self._words[_HEAD // 8] > self.cursor

    def next(self) -> tuple[Any, ...] | None:
        """The record at the cursor, or None; the cursor does not move (see :meth:`take`)."""
        cursor = self.cursor
        if cursor == self._ahead_at:  # read already
            return self._ahead
        head = self._words[_HEAD // 8]
        if fence is not None:
            fence()
        while cursor < head:
            position = cursor % self.capacity
            length = self._lengths[position >> 2]
            if length == WRAP:
                cursor = self.cursor = cursor + self.capacity - position
                continue
            at = self._data + position + 4
            record = marshal.loads(self._buf[at : at + length])
            self._ahead_at, self._ahead, self._ahead_end = (
                cursor, record, cursor + ((4 + length + 7) & ~7))
            return record
        return None

    def take(self, limit: int, newest: float) -> tuple[list[tuple[Any, ...]], list[int]]:
        """A run of records from the cursor on, read in one call (the writer's hot loop).

        At most ``limit`` records: the first whatever its time, then those
        created no later than ``newest`` (``record[wire.CREATED]``).  Returns them and,
        for each, the position just past it; the cursor does not move (the
        caller sets it as it writes them), except past a wrap mark it starts
        at.  The record :meth:`next` returned, or the one that ended the run
        by being newer, is not read twice.
        """
        records: list[tuple[Any, ...]] = []
        ends: list[int] = []
        cursor = self.cursor
        head = self._words[_HEAD // 8]
        if fence is not None:
            fence()
        add, add_end = records.append, ends.append
        if cursor == self._ahead_at and cursor < head and limit > 0:  # read already
            add(self._ahead)
            add_end(self._ahead_end)
            cursor = self._ahead_end
            limit -= 1
        capacity, lengths, buf, data, loads = (self.capacity, self._lengths, self._buf,
                                               self._data, marshal.loads)
        while cursor < head and limit > 0:
            position = cursor % capacity
            length = lengths[position >> 2]
            if length == WRAP:
                cursor += capacity - position
                if not records:
                    self.cursor = cursor
                continue
            at = data + position + 4
            record = loads(buf[at : at + length])
            end = cursor + ((4 + length + 7) & ~7)
            if records and not record[CREATED] <= newest:
                self._ahead_at, self._ahead, self._ahead_end = cursor, record, end
                break
            add(record)
            add_end(end)
            cursor = end
            limit -= 1
        return records, ends

    def dropped(self) -> int:
        """Records the producer refused because the ring stayed full, ever."""
        return self._words[_DROPPED // 8]

    def unreported_drops(self) -> int:
        return self._words[_DROPPED // 8] - self.reported

    def mark_reported(self, count: int) -> None:
        """Count ``count`` drops as reported (in the ring at the next commit)."""
        self.reported += count

    def commit(self) -> None:
        """Publish the cursor and the reported count: the writer committed them."""
        words = self._words
        words[_REPORTED // 8] = self.reported
        words[_CONSUMED // 8] = self.committed = self.cursor

    def rewind(self, consumed: int, reported: int) -> None:
        """Continue from a commit (a successor's recovery): cursor and ring both."""
        self.cursor = consumed
        self._ahead_at = -1
        self.reported = reported
        self.commit()


class RecordRings:
    """One process's view of every record ring of a session."""

    def __init__(self, session: str, control: Control, generation: int) -> None:
        self._segments = SegmentList(session, control, KIND_RECORDS, generation)
        self._consumers: list[RecordConsumer] = []

    def consumers(self) -> list[RecordConsumer]:
        """Every process's record ring, in the order they were published."""
        for index, offset in self._segments.new_entries():
            buf = self._segments.segments[index].buf
            self._consumers.append(RecordConsumer(buf, offset, f"l{index}:{offset}"))
        return list(self._consumers)

    def producer(self, slot: int, capacity: int, segment_bytes: int) -> RecordProducer:
        """The ring of ``slot``, created if it has none (lock held)."""
        for consumer in self.consumers():
            if consumer.slot == slot:
                return RecordProducer(consumer.buf, consumer.offset)

        def fill(buf: memoryview, offset: int) -> None:
            format_record_ring(buf, offset, capacity, slot)

        index, offset = self._segments.append(record_ring_bytes(capacity), segment_bytes, fill)
        return RecordProducer(self._segments.segments[index].buf, offset)

    def total_bytes(self) -> int:
        return self._segments.total_bytes()

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.release()
        self._consumers = []
        self._segments.close()
