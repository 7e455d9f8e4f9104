"""The growing segments of one kind, and the one walk over their entries.

Scalar rings (``@r<i>``), runtime info slots (``@i<i>``) and log record rings
(``@l<i>``) live in segments that are added as they fill up.  The control
segment counts the published ones of each kind; an entry inside a segment is
published by the segment's own count (below).  A process
attaches segments in index order as the counts grow and walks each one only
past the entries it has already seen, so finding new rings costs nothing
once every process has seen them.

Everything that adds a segment or an entry holds the session lock; walking
needs no lock.

Sizes: a new segment is as large as all the earlier segments of its kind
together, so the total doubles with each one, from ``start_bytes`` (one
page by default) up to the largest size the caller allows (the session's
``segment_bytes``), and never smaller than the entry it is added for.  A
session with few or small entries thus takes little more than they need,
and one with many needs few segments: bytes are at most about twice what
the entries take, plus one segment.  When /dev/shm cannot hold the grown
size, the smallest segment the entry fits in (``start_bytes`` at least) is
tried before giving up with ShmFullError.

Inside a segment (the arena: ``init_arena``, ``reserve``, ``publish``):
entries are filled from the front under the session lock and read without
it.  The kind-specific header fields of a rings, info or records segment,
after the common header::

    40      used     u64  bytes taken, header included (entries start at 64)
    48      count    u64  entries published

Every entry starts 64-byte aligned and keeps its own size (u64) at offset 24,
so a reader walks from one entry to the next (:meth:`SegmentList.new_entries`
does, for every kind).  An entry is written whole before ``count`` is raised
past it; ``count`` is the only thing readers trust.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

import posix_ipc

from ..errors import SegmentError, SessionError, ShmFullError
from .control import STATE_CLOSED, Control
from .names import entry_problem, part_name, unlink
from .segment import HEADER_SIZE, KIND_INFO, KIND_RECORDS, KIND_RINGS, Segment, read_u64, write_u64

# The growing kinds: name part, and the control header field counting them.
PARTS = {
    KIND_RINGS: ("r", "ring_segments"),
    KIND_INFO: ("i", "info_segments"),
    KIND_RECORDS: ("l", "record_segments"),
}
PAGE = mmap.PAGESIZE


class SegmentList:
    """One process's view of the published segments of one kind of one session."""

    def __init__(
        self,
        session: str,
        control: Control,
        kind: int,
        generation: int,
        on_attach: Callable[[Segment], None] | None = None,
        start_bytes: int = PAGE,
    ) -> None:
        self.session = session
        self._start = start_bytes
        self.control = control
        self.kind = kind
        self.part, self._field = PARTS[kind]
        self.generation = generation
        self.segments: list[Segment] = []
        # Per segment: (entries walked, offset of the next one).
        self._walked: list[tuple[int, int]] = []
        self._on_attach = on_attach

    def published(self) -> int:
        return self.control.read_field(self._field)

    def attach_new(self) -> None:
        """Attach every segment published since the last call."""
        want = self.published()
        have = self.segments
        while len(have) < want:
            name = part_name(self.session, f"{self.part}{len(have)}")
            try:
                segment = Segment.attach(name, self.kind, self.generation)
            except posix_ipc.ExistentialError:
                raise SessionError(
                    f"shmlog session {self.session!r} lost its segment {name}: the session "
                    f"was removed (shmlog clean --all?) while this process was using it"
                ) from None
            have.append(segment)
            self._walked.append((0, HEADER_SIZE))
            if self._on_attach is not None:
                self._on_attach(segment)

    def new_entries(self) -> list[tuple[int, int]]:
        """(segment index, offset) of every entry published since the last call."""
        self.attach_new()
        found = []
        walked = self._walked
        for index, segment in enumerate(self.segments):
            done, offset = walked[index]
            count = published(segment)
            if done == count:
                continue  # the usual case: one load per segment
            buf = segment.buf
            while done < count:
                found.append((index, offset))
                offset += entry_size_in(buf, offset)
                done += 1
            walked[index] = (done, offset)
        return found

    def with_room(self, size: int, largest: int) -> int:
        """Index of the first segment with ``size`` bytes free, adding one if none has.

        A new segment is sized as the module docstring says, ``largest`` bytes
        at most unless the entry needs more.  The caller holds the session lock.
        """
        self.attach_new()
        for index, segment in enumerate(self.segments):
            if free_bytes(segment) >= size:
                return index
        smallest = _pages(max(size + HEADER_SIZE, self._start))
        return self._add(self.next_size(size, largest), smallest)

    def next_size(self, size: int, largest: int) -> int:
        """Bytes of the segment that would be added for an entry of ``size`` bytes."""
        grown = max(self._start, sum(segment.size for segment in self.segments))
        return _pages(max(size + HEADER_SIZE, min(largest, grown)))

    def append(
        self, size: int, largest: int, fill: Callable[[memoryview, int], None]
    ) -> tuple[int, int]:
        """Add an entry of ``size`` bytes written by ``fill(buf, offset)``, then publish it.

        Returns (segment index, offset).  The caller holds the session lock.
        """
        index = self.with_room(size, largest)
        segment = self.segments[index]
        offset = reserve(segment, size)
        fill(segment.buf, offset)
        publish(segment, offset, size)
        return index, offset

    def _add(self, size: int, smallest: int) -> int:
        state = self.control.read_state()
        if state.state == STATE_CLOSED:
            # Its last member removed the session while this process (a child
            # that only attached) kept its mappings: a segment created now
            # would belong to nobody and stay in /dev/shm for good.
            raise SessionError(
                f"shmlog session {self.session!r} was closed by its last member; no new keys "
                f"or runtime info can be added to it"
            )
        index = getattr(state, self._field)
        name = part_name(self.session, f"{self.part}{index}")
        unlink(name)  # ours, left by a process that died before publishing it
        try:
            try:
                segment = Segment.create(name, size, self.kind, self.generation)
            except ShmFullError:
                if size <= smallest:
                    raise
                segment = Segment.create(name, smallest, self.kind, self.generation)
        except posix_ipc.ExistentialError:
            # Not ours to remove: another user's file, or a link (see shmlog.shm.segment).
            raise SegmentError(
                f"shmlog session {self.session!r} cannot add its segment {name}: "
                f"{entry_problem(name) or 'the name is taken'}"
            ) from None
        try:
            init_arena(segment)
        finally:
            segment.close()  # attached again below, like any published segment
        self.control.write_state(**{self._field: index + 1})
        self.attach_new()
        return index

    def total_bytes(self) -> int:
        self.attach_new()
        return sum(s.size for s in self.segments)

    def close(self) -> None:
        for segment in self.segments:
            segment.close()
        self.segments = []
        self._walked = []


def _pages(size: int) -> int:
    """``size`` rounded up to whole pages (what tmpfs reserves anyway)."""
    return -(-size // PAGE) * PAGE


_USED, _COUNT = 40, 48
ENTRY_SIZE_AT = 24

def init_arena(segment: Segment) -> None:
    write_u64(segment.buf, _USED, HEADER_SIZE)
    write_u64(segment.buf, _COUNT, 0)


def free_bytes(segment: Segment) -> int:
    return segment.size - read_u64(segment.buf, _USED)


def reserve(segment: Segment, size: int) -> int:
    """Offset for a new entry of ``size`` bytes (caller holds the session lock)."""
    used = read_u64(segment.buf, _USED)
    if used + size > segment.size:
        raise MemoryError(f"segment {segment.name} has {segment.size - used} bytes left, {size} needed")
    return used


def publish(segment: Segment, offset: int, size: int) -> None:
    """Make the entry at ``offset`` visible; it must be fully written."""
    buf = segment.buf
    write_u64(buf, _USED, offset + size)
    write_u64(buf, _COUNT, read_u64(buf, _COUNT) + 1)


def published(segment: Segment) -> int:
    return segment.words[_COUNT >> 3]


def entry_size_in(buf: memoryview, offset: int) -> int:
    """The size of the entry at ``offset``: where the next one starts."""
    return read_u64(buf, offset + ENTRY_SIZE_AT)
