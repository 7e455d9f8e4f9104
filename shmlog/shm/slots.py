"""The slot table of the control segment: one slot per thread that writes to the session.

The table starts at ``SLOTS_AT`` of the control segment (``shmlog.shm.control``
places it) and holds ``SLOT_COUNT`` rows of 64 bytes::

    0       pid         u64  0: a free slot
    8       start time  u64  the process's (``shmlog.shm.liveness``); 0 once it left
    16      rank        i32
    20      worker      i32  DataLoader worker id, -1 outside workers
    24      thread id   u64  0: the process's main thread
    32      label       32 bytes UTF-8, NUL padded

A slot's rings (scalar rings of each key, a record ring) stay with it when
its thread ends, for the next thread that takes the slot to continue.  Which
slot a new thread takes is :func:`choose_slot`'s rule: the slot of an ended
thread of the same label first (a DataLoader worker restarted every epoch
keeps one history), then, for a *transient* label (a process known only by
its pid, a thread by its id: :func:`transient_stem`) once more than
``KEEP_EXITED`` such slots ended, one of those (of its own rank first), then
a free slot, then any ended one.  So a pool that replaces its processes, or
a process per evaluation, keeps ``KEEP_EXITED`` slots more than it runs at
once however many processes it ever started, and each ring's totals keep the
history of every thread that wrote it (``shmlog top`` and ``per_writer``
show those under the label of the thread that continues them).

Slots change only under the session lock (``shmlog.shm.control``).

What a thread's slot records of its process comes from the layer above, as a
:class:`SlotOwner` that an :class:`IdentitySource` gives whenever a thread
claims a slot (``shmlog.shm.session``); this layer never finds a rank itself.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from .liveness import thread_alive
from .segment import Segment

SLOT_COUNT = 1024
_ROW = struct.Struct("<QQiiQ32s")
SLOT_TABLE_BYTES = SLOT_COUNT * _ROW.size

assert _ROW.size == 64

# Slots of ended threads with a transient label that keep rings of their own;
# beyond them, a new thread of a transient label continues one of theirs.
KEEP_EXITED = 16
_TRANSIENT = re.compile(r"^(.*?)(pid|thread)\d+$")


def transient_stem(label: str) -> str | None:
    """``label`` without its process or thread number, None for a lasting label.

    ``rank1/pid4242`` -> ``rank1/pid``; ``rank1/worker0`` and ``rank1`` are
    labels a restarted process has again, so they have no stem.
    """
    match = _TRANSIENT.match(label)
    return None if match is None else match.group(1) + match.group(2)


class Slot(NamedTuple):
    slot: int
    pid: int
    start: int
    rank: int
    worker: int
    tid: int
    label: str

    def alive(self) -> bool:
        """Whether the writing thread still runs (a slot is per thread)."""
        return thread_alive(self.pid, self.start, self.tid)


class SlotOwner(NamedTuple):
    """What a slot records of the process that claims it."""

    rank: int  # -1: the process has no rank
    worker: int  # DataLoader worker id, -1 outside workers
    label: str  # readable, e.g. ``rank1/worker0``


class IdentitySource(Protocol):
    """Who the process is, asked whenever it matters (a rank can be given late).

    The layer above gives one to ``SessionSegments.open``
    (``shmlog.shm.session``); this layer knows nothing of how a rank is found.
    """

    def slot_owner(self) -> SlotOwner:
        """The calling thread's process, as the slot it claims records it."""

    def reader_rank(self) -> int:
        """The rank whose slots this process's statistics merge; -1: every slot."""


class Anonymous:
    """The identity of a handle that says nothing of itself: no rank, labelled by pid."""

    def slot_owner(self) -> SlotOwner:
        return SlotOwner(-1, -1, f"pid{os.getpid()}")

    def reader_rank(self) -> int:
        return -1


ANONYMOUS = Anonymous()


def choose_slot(table: Iterable[Slot], label: str) -> tuple[int | None, int | None]:
    """(the slot a new thread of ``label`` takes, the first free slot) from every row of
    ``table`` in order; the slot is None when every one is taken by a live thread."""
    free = same_label = any_ended = None
    transient = transient_stem(label)
    same_stem = other_transient = None
    ended_transient = 0
    for w in table:
        if w.pid == 0:
            if free is None:
                free = w.slot
            continue
        if w.label == label and not w.alive():
            same_label = w.slot
            break
        if transient is not None:
            stem = transient_stem(w.label)
            if stem is not None and not w.alive():
                ended_transient += 1
                if stem == transient and same_stem is None:
                    same_stem = w.slot
                elif other_transient is None:
                    other_transient = w.slot
                continue
        if any_ended is None and free is None and not w.alive():
            any_ended = w.slot
    for slot in (same_label,
                 (same_stem if same_stem is not None else other_transient)
                 if ended_transient > KEEP_EXITED else None,
                 free, any_ended):
        if slot is not None:
            return slot, free
    return None, free


class SlotTable:
    """The slot table's methods of ``shmlog.shm.control.Control`` (its ``segment``
    maps the control segment; the table is at ``slots_at``)."""

    segment: Segment
    slots_at: int

    def slot(self, slot: int) -> Slot:
        pid, start, rank, worker, tid, raw = _ROW.unpack_from(
            self.segment.buf, self.slots_at + slot * _ROW.size)
        label = raw.rstrip(b"\0").decode("utf-8", "replace")
        return Slot(slot, pid, start, rank, worker, tid, label)

    def slots(self) -> list[Slot]:
        """Every slot in use, the table read in one pass."""
        at = self.slots_at
        table = self.segment.buf[at : at + SLOT_TABLE_BYTES]
        try:
            return [
                Slot(slot, pid, start, rank, worker, tid,
                     raw.rstrip(b"\0").decode("utf-8", "replace"))
                for slot, (pid, start, rank, worker, tid, raw) in enumerate(_ROW.iter_unpack(table))
                if pid
            ]
        finally:
            table.release()

    def release_slots(self, pid: int) -> None:
        """Mark every slot of process ``pid`` as ended (it left the session, alive or not).

        The slots keep their rings and labels, as a dead writer's do, for the
        next writer of the same label to continue.
        """
        buf = self.segment.buf
        for w in self.slots():
            if w.pid == pid:
                at = self.slots_at + w.slot * _ROW.size + 8  # the start time
                view = buf[at : at + 8].cast("Q")
                view[0] = 0
                view.release()

    def claim_slot(
        self, pid: int, start: int, rank: int, worker: int, label: str, tid: int = 0
    ) -> tuple[int, bool]:
        """Take a slot for this thread (the module docstring says which); returns
        (slot, taken over from an ended thread: its rings continue)."""
        slot, free = choose_slot(map(self.slot, range(SLOT_COUNT)), label)
        if slot is None:
            raise RuntimeError(
                f"session slot table is full: {SLOT_COUNT} threads are writing to it at once"
            )
        _ROW.pack_into(self.segment.buf, self.slots_at + slot * _ROW.size,
                       pid, start, rank, worker, tid, label.encode("utf-8")[:32])
        return slot, slot != free
