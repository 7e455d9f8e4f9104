"""Putting records into this process's record ring: its lock, signal handlers.

The ring's size is a setting (``shmlog.api.config.record_ring_bytes``).

A full ring waits at most ``BLOCK_SECONDS`` for the log writer to make
room, then drops the record, counting it (``shmlog.api.record_handler``
says how drops are reported).  Puts of the process's threads take turns on
the process's ship lock; a signal handler that logs while its own thread is
inside a put never waits for that thread (it would wait for ever): its
record is put right after the interrupted one.
"""

from __future__ import annotations

from typing import Any

from .process import PROCESS

BLOCK_SECONDS = 0.2
# Records signal handlers may leave for one interrupted put (beyond them,
# dropped and counted as a full ring's are).
_LATER_MAX = 1024


def put_into(ring: tuple[Any, Any], data: tuple[Any, ...]) -> bool:
    """Put ``data`` into ``ring`` (producer, doorbell), waiting for room only if the
    ring's previous put did not fail.

    The state belongs to the ring, not to a handler: every MMLogger of the
    process and every progress marker share it, so a stalled writer costs
    the process one wait in all, not one per logger or per marker.  A record
    put while the writer sleeps rings the doorbell.

    A signal handler may log at any point, also while the thread it
    interrupted is inside this function: its record waits in the process
    until the interrupted put is done, which then puts it (a thread that is
    not the lock's holder just waits for the lock).
    """
    process = PROCESS
    with process.ship_lock:
        process.ship_depth += 1
        try:
            if process.ship_depth > 1:
                # A signal handler logging in the middle of this thread's put:
                # the ring cannot take a second put now.  The interrupted put
                # ships the record right after its own.
                return _put_later(process, ring, data)
            shipped = _put_now(ring, data)
            while process.ship_later:
                _put_now(*process.ship_later.pop(0))
        finally:
            process.ship_depth -= 1
    # After the lock's release, a full barrier on x86-64 (see shmlog.shm.doorbell).
    if shipped:
        ring[1].ring_if_asleep()
    return shipped


def _put_now(ring: tuple[Any, Any], data: tuple[Any, ...]) -> bool:
    """Put ``data`` into ``ring`` (ship lock held)."""
    producer, bell = ring
    start = producer.put(data, 0.0 if producer.dropping else BLOCK_SECONDS, bell.ring)
    producer.dropping = start < 0
    return start >= 0


def _put_later(process: Any, ring: tuple[Any, Any], data: tuple[Any, ...]) -> bool:
    """Leave ``data`` for the put this signal handler interrupted (ship lock held)."""
    if len(process.ship_later) >= _LATER_MAX:
        ring[0].count_dropped()
        return False
    process.ship_later.append((ring, data))
    return True
