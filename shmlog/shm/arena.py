"""Segments that hold a growing list of entries (rings, runtime info slots).

Scalar rings segments (``@r<i>``), info segments (``@i<i>``) and record
segments (``@l<i>``) are filled from the front under the session lock and
read without it.  Their kind-specific header fields, after the common
header::

    40      used     u64  bytes taken, header included (entries start at 64)
    48      count    u64  entries published

Every entry starts 64-byte aligned and keeps its own size (u64) at offset 24,
so a reader walks from one entry to the next (``shmlog.shm.directory`` does,
for every kind).  An entry is written whole before ``count`` is raised past
it; ``count`` is the only thing readers trust.
"""

from __future__ import annotations

from .segment import HEADER_SIZE, Segment, read_u64, write_u64

_USED, _COUNT = 40, 48
ENTRY_SIZE_AT = 24

__all__ = [
    "ENTRY_SIZE_AT",
    "HEADER_SIZE",
    "entry_size_in",
    "free_bytes",
    "init_arena",
    "publish",
    "published",
    "reserve",
]


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
