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
"""

from __future__ import annotations

from .arena import ENTRY_SIZE_AT
from .fence import fence
from .segment import Segment, read_u64, write_u64

HEADER_BYTES = 288
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
    return (HEADER_BYTES + capacity + 63) // 64 * 64


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
    buf[offset + HEADER_BYTES : offset + HEADER_BYTES + len(payload)] = payload
    return size


def entry_key(buf: memoryview, offset: int) -> str:
    length = _u(buf, offset + _KEYLEN, 4)
    return bytes(buf[offset + _KEY : offset + _KEY + length]).decode("utf-8")


def capacity(buf: memoryview, offset: int) -> int:
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
        buf[offset + HEADER_BYTES : offset + HEADER_BYTES + len(payload)] = payload
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
            payload = bytes(buf[offset + HEADER_BYTES : offset + HEADER_BYTES + length])
        if fence is not None:
            fence()
        if _u(buf, offset + _SEQ, 8) == seq:
            return (length, None) if payload is None else (0, payload)
