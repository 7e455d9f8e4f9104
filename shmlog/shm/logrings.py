"""The log record rings of a session: one per writing process, read by one writer.

A process's ring (``shmlog.shm.record_rings``) is found by its writer slot, so a
process that takes over a dead process's slot (a DataLoader worker restarted
every epoch) continues its ring.
"""

from __future__ import annotations

from .control import Control
from .directory import SegmentList
from .record_rings import RecordConsumer, RecordProducer, format_ring, ring_bytes
from .segment import KIND_RECORDS


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
        """The ring of writer ``slot``, created if it has none (lock held)."""
        for consumer in self.consumers():
            if consumer.writer == slot:
                return RecordProducer(consumer.buf, consumer.offset)

        def fill(buf: memoryview, offset: int) -> None:
            format_ring(buf, offset, capacity, slot)

        index, offset = self._segments.append(ring_bytes(capacity), segment_bytes, fill)
        return RecordProducer(self._segments.segments[index].buf, offset)

    def total_bytes(self) -> int:
        return self._segments.total_bytes()

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.release()
        self._consumers = []
        self._segments.close()
