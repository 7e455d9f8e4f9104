"""Single-writer rings of (value, count, time) records, published without locks.

One ring belongs to one (writing thread, key).  Only its writer stores into
it, so appending needs no lock, no system call and no allocation; any number
of readers copy records out concurrently and never block the writer.

Layout of a ring at a 64-byte aligned offset ``R`` of a rings segment
(little-endian, natural alignment)::

    R+0     seq       u64  updates published so far; the word that publishes
    R+8     capacity  u64  records retained; the ring has capacity + 1 slots
    R+16    slot      u32  its ring writer's slot in the control segment's slot table
    R+20    key_len   u32  bytes of the key below
    R+24    size      u64  bytes taken by this ring, header included
    R+32    floor     u64  index of the oldest record ever written: 0, except in a
                           ring seeded from a history that had dropped records
    R+40    (reserved up to R+64)
    R+64    totals A  4 x f64: value sum, count sum, min, max (valid when seq is even)
    R+96    totals B  4 x f64, same fields (valid when seq is odd)
    R+128   key       256 bytes of UTF-8
    R+384   records   slots x 24 bytes: value f64, count f64, time i64

A record's time is ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for
every process on the node), which is what merges writers in time order.

Publishing update number ``n`` (0-based, ``seq == n`` before it):

1. write the record into slot ``n % slots``;
2. write the new totals into block ``(n + 1) & 1``;
3. store ``seq = n + 1``.

Nothing a reader can see changes before step 3: the slot written in step 1
is the one spare slot (``slots = capacity + 1``) and the block written in step
2 is the one ``seq`` does not point at.  A writer killed at any point leaves
the last published state intact, and whoever takes the ring over continues
from it.

Readers copy totals between two loads of ``seq`` and retry when it moved.
Records need no retry in practice: a copied record is kept only when the
``seq`` read after the copy proves the writer has not reached its slot
again (record ``i`` is overwritten by update ``i + slots``).

Memory ordering: the protocol needs the writer's stores to become visible in
program order and the reader's loads not to be reordered with each other.
x86-64 guarantees both (TSO), and each 8-byte store or load that CPython's
memoryview and numpy issue for an aligned field is a single instruction, so
no value is ever seen half-written.  Elsewhere (aarch64, ppc64le) that order
is not guaranteed; see ``shmlog.shm.fence``, which adds the barriers there.

:class:`RingDirectory` finds a session's rings by key, keeping a reader per ring; a
slot taken over from a dead thread continues that thread's rings.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from ..errors import ShmFullError
from .control import Control
from .directory import SegmentList
from .fence import fence
from .names import check_capacity, encode_key
from .segment import KIND_RINGS, Segment

_fence = fence

HEADER_BYTES = 384
RECORD_BYTES = 24
ALIGN = 64

_SEQ, _CAPACITY, _WRITER_KEYLEN, _SIZE, _FLOOR = 0, 8, 16, 24, 32
_TOTALS = 64
_KEY = 128


def ring_bytes(capacity: int) -> int:
    """Bytes a ring of ``capacity`` retained records takes, rounded to 64."""
    raw = HEADER_BYTES + (capacity + 1) * RECORD_BYTES
    return (raw + ALIGN - 1) // ALIGN * ALIGN


def format_ring(buf: memoryview, offset: int, capacity: int, slot: int, key: bytes) -> int:
    """Write an empty ring's header at ``offset``; returns its size in bytes.

    Called under the session lock before the ring is published, so no reader
    can see it half-initialised.
    """
    size = ring_bytes(capacity)
    q = buf[offset : offset + HEADER_BYTES].cast("q")
    d = buf[offset : offset + HEADER_BYTES].cast("d")
    q[_SEQ // 8] = 0
    q[_CAPACITY // 8] = capacity
    u = buf[offset + _WRITER_KEYLEN : offset + _WRITER_KEYLEN + 8].cast("I")
    u[0] = slot
    u[1] = len(key)
    u.release()
    q[_SIZE // 8] = size
    q[_FLOOR // 8] = 0
    for block in (0, 1):
        base = (_TOTALS + 32 * block) // 8
        d[base] = 0.0
        d[base + 1] = 0.0
        d[base + 2] = math.inf
        d[base + 3] = -math.inf
    q.release()
    d.release()
    buf[offset + _KEY : offset + _KEY + len(key)] = key
    return size


class RingHeader(NamedTuple):
    capacity: int
    slot: int
    key: str
    size: int


def read_header(buf: memoryview, offset: int) -> RingHeader:
    """The fixed part of a published ring's header."""
    raw = bytes(buf[offset : offset + HEADER_BYTES])
    capacity = int.from_bytes(raw[_CAPACITY : _CAPACITY + 8], "little")
    slot = int.from_bytes(raw[16:20], "little")
    key_len = int.from_bytes(raw[20:24], "little")
    size = int.from_bytes(raw[_SIZE : _SIZE + 8], "little")
    key = raw[_KEY : _KEY + key_len].decode("utf-8")
    return RingHeader(capacity, slot, key, size)


class RingWriter:
    """The writing end of one ring; only ever used by the ring's own writer.

    Totals are kept in Python attributes as well as in shared memory so that
    an append reads nothing back from the segment.
    """

    __slots__ = ("_csum", "_d", "_end", "_first", "_max", "_min", "_n", "_next", "_q",
                 "_rec", "_seq", "_slots", "_sum", "_tot", "_tot_even", "_tot_odd", "capacity")

    def __init__(self, d: memoryview, q: memoryview, offset: int) -> None:
        # d and q are the whole segment cast to float64 and int64.
        word = offset // 8
        self._d = d
        self._q = q
        self._seq = word
        self.capacity = q[word + 1]
        self._slots = self.capacity + 1
        self._tot = word + _TOTALS // 8
        self._tot_even, self._tot_odd = self._tot, self._tot + 4
        self._rec = word + HEADER_BYTES // 8
        self._first = self._rec
        self._end = self._rec + 3 * self._slots
        # Continue from the last published state: a fresh ring, or one taken
        # over from a writer that exited or was killed.
        n = q[word]
        base = self._tot + 4 * (n & 1)
        self._n = n
        self._next = self._rec + 3 * (n % self._slots)
        self._sum = d[base]
        self._csum = d[base + 1]
        self._min = d[base + 2]
        self._max = d[base + 3]

    def append(self, value: float, count: float, _now=time.monotonic_ns) -> None:
        # Every store below lands in the spare slot or the unpublished totals
        # block; only the last one (seq) makes the update visible.
        n = self._n + 1
        d = self._d
        rec = self._next
        d[rec] = value
        d[rec + 1] = count
        self._q[rec + 2] = _now()
        rec += 3
        self._next = self._first if rec == self._end else rec
        t = self._tot_odd if n & 1 else self._tot_even
        self._sum = d[t] = self._sum + value
        self._csum = d[t + 1] = self._csum + count
        if value < self._min or value != value:  # noqa: PLR0124 (NaN test without a call)
            self._min = value
        d[t + 2] = self._min
        if value > self._max or value != value:  # noqa: PLR0124
            self._max = value
        d[t + 3] = self._max
        if _fence is not None:
            _fence()
        self._q[self._seq] = self._n = n

    def seed(self, values: np.ndarray, counts: np.ndarray, totals: tuple) -> None:
        """Load a restored history (checkpoint resume) into an empty ring.

        ``totals`` (updates, value sum, count sum, min, max) may cover more
        updates than ``values`` holds; the ring keeps its last ``capacity``.
        """
        if self._n:
            raise ValueError("only an empty ring can be seeded from a saved history")
        updates, total, weight, low, high = totals
        keep = min(len(values), self.capacity)
        values, counts = values[len(values) - keep :], counts[len(counts) - keep :]
        start = updates - keep
        now = time.monotonic_ns() - keep
        d, q = self._d, self._q
        for i in range(keep):
            rec = self._rec + 3 * ((start + i) % self._slots)
            d[rec] = float(values[i])
            d[rec + 1] = float(counts[i])
            q[rec + 2] = now + i
        t = self._tot + 4 * (updates & 1)
        d[t], d[t + 1], d[t + 2], d[t + 3] = total, weight, low, high
        # Records before ``start`` were never written here: readers must not
        # take the (zeroed) slots below it for retained records.
        q[self._seq + _FLOOR // 8] = start
        if fence is not None:
            fence()
        q[self._seq] = updates
        self._n, self._sum, self._csum, self._min, self._max = updates, total, weight, low, high
        self._next = self._rec + 3 * (updates % self._slots)


class RingSnapshot(NamedTuple):
    """A consistent copy of the end of one ring at one published ``seq``."""

    updates: int
    value_sum: float
    count_sum: float
    minimum: float
    maximum: float
    values: np.ndarray
    counts: np.ndarray
    times: np.ndarray


_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)


class RingReader:
    """Copies consistent snapshots out of one ring, from any process."""

    __slots__ = ("_d", "_floor", "_q", "_recs", "_seq", "_slots", "_tot",
                 "capacity", "key", "offset", "segment", "slot")

    def __init__(
        self, buf: memoryview, d: memoryview, q: memoryview, offset: int, segment: int = 0
    ) -> None:
        header = read_header(buf, offset)
        self.offset = offset
        # Index of the rings segment it lives in (its writer maps the same views).
        self.segment = segment
        self.capacity = header.capacity
        self.slot = header.slot
        self.key = header.key
        self._slots = header.capacity + 1
        self._d = d
        self._q = q
        word = offset // 8
        self._seq = word
        self._floor = word + _FLOOR // 8
        self._tot = word + _TOTALS // 8
        records = np.frombuffer(
            buf, dtype=np.float64, count=3 * self._slots, offset=offset + HEADER_BYTES
        ).reshape(self._slots, 3)
        self._recs = records

    def updates(self) -> int:
        return self._q[self._seq]

    def totals(self) -> tuple[int, float, float, float, float]:
        """(updates, value sum, count sum, min, max) at one published seq."""
        q, d = self._q, self._d
        while True:
            n = q[self._seq]
            if fence is not None:
                fence()
            base = self._tot + 4 * (n & 1)
            result = (n, d[base], d[base + 1], d[base + 2], d[base + 3])
            if fence is not None:
                fence()
            if q[self._seq] == n:
                return result

    def kept(self, n: int) -> int:
        """Records retained at ``seq == n`` (fewer than capacity in a seeded ring)."""
        return min(n - min(self._q[self._floor], n), self.capacity)

    def snapshot(self, last: int | None) -> RingSnapshot:
        """Totals plus (up to) the ``last`` newest records; None means all retained.

        When ``last`` covers the whole ring, records the writer reached while
        they were copied are left out instead of copied again: a writer that
        never pauses would otherwise keep a full copy from ever completing.
        """
        while True:
            n, total, weight, low, high = self.totals()
            kept = self.kept(n)
            keep = kept if last is None else min(kept, last)
            if keep == 0:
                return RingSnapshot(n, total, weight, low, high, _EMPTY_F, _EMPTY_F, _EMPTY_I)
            start = (n - keep) % self._slots
            stop = start + keep
            if stop <= self._slots:
                block = self._recs[start:stop].copy()
            else:
                block = np.concatenate((self._recs[start:], self._recs[: stop - self._slots]))
            if fence is not None:
                fence()
            now = self._q[self._seq]
            # Update i overwrites record i - slots: the first ``lost`` records
            # copied may be torn.  A copy of the whole ring leaves them out; a
            # window copies again (only a writer lapping the rest of the ring
            # while we copy can cost a window any record).
            lost = (now - self.capacity) - (n - keep)
            if lost > 0 and lost < keep and (last is None or last >= self.capacity):
                block, lost = block[lost:], 0
            if lost <= 0:
                return RingSnapshot(
                    n, total, weight, low, high,
                    block[:, 0], block[:, 1], block[:, 2].view(np.int64),
                )


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
            if reader.slot == slot:
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
