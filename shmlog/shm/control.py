"""The control segment: who is in a session, who writes, and how it is sized.

One control segment per session, named ``shmlog-<uid>-<session>@ctl``.  Its
own header fields start at byte 36, the kind-specific part of the common
64-byte header of ``shmlog.shm.segment``, and run on to byte 88; then come
its tables::

    36      state            u32  1 ready, 2 closed (the segment appears ready:
                                  it is built under a temporary name first)
    40      creator pid      u32
    44      ring segments    u32  published count of ``@r<i>`` segments
    48      info segments    u32  published count of ``@i<i>`` segments
    52      created          u64  wall-clock ns, for ``shmlog ls``
    60      record segments  u32  published count of ``@l<i>`` segments
    64      log writer pid   u32  the process writing log files now (0: none)
    72      log writer start u64  its start time (``/proc/<pid>/stat``), so a
                                  recycled pid never passes for the writer
    80      pid namespace    u64  inode of the creator's ``/proc/self/ns/pid``
                                  (0: not known, taken as everyone's)
    128     doorbell         32 bytes: a process-shared semaphore the log
                             writer sleeps on (``shmlog.shm.doorbell``)
    256     config length    u32, then that many bytes of JSON (options of
                             ``shmlog.init``: capacities, segment size)
    4352    members          256 x (pid u64, start time u64)
    8448    slots            1024 x 64 bytes, one per writing thread
                             (``shmlog.shm.slots``)

Members are the processes that called ``shmlog.init``; the session lives while
one of them does.  A slot is the place of a thread that writes to the session's
rings, one per thread (``SessionSegments.thread_slot``).  A pid is matched with the
process start time (``/proc/<pid>/stat``), so a recycled pid never passes for
a live member.

A process in another PID namespace than the creator's (a pod's sidecar
container) cannot check pids (``shmlog.shm.liveness``): there every member
and slot counts as alive, so such a process never prunes the tables, never
declares the session stale and never removes or replaces it
(:meth:`Control.sees_members`).

Everything here is changed only under the session lock: ``flock`` on the
control segment's own descriptor, which the kernel drops when its holder
dies, so a killed process never leaves the others waiting.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
from typing import Any, NamedTuple

from .liveness import is_alive, sees_pids_of
from .segment import Segment
from .slots import SLOT_TABLE_BYTES, Slot, SlotTable

STATE_READY, STATE_CLOSED = 1, 2

# at 36: state, creator, ring segments, info segments, created, record segments,
# log writer pid, (4 bytes reserved), log writer start time
_CTL = struct.Struct("<IIIIQIIxxxxQ")
_CTL_FIELDS = {
    "state": (36, "I"), "creator": (40, "I"), "ring_segments": (44, "I"),
    "info_segments": (48, "I"), "created_ns": (52, "q"), "record_segments": (60, "I"),
    "writer_pid": (64, "I"), "writer_start": (72, "Q"), "pid_namespace": (80, "Q"),
}
_CTL_AT = 36
CONFIG_AT, CONFIG_MAX = 256, 4096
MEMBERS_AT, MEMBER_SLOTS = 4352, 256
_MEMBER = struct.Struct("<QQ")
SLOTS_AT = MEMBERS_AT + MEMBER_SLOTS * _MEMBER.size
CONTROL_BYTES = SLOTS_AT + SLOT_TABLE_BYTES

assert _CTL_AT + _CTL.size <= CONFIG_AT


class ControlState(NamedTuple):
    state: int
    creator: int
    ring_segments: int
    info_segments: int
    created_ns: int
    record_segments: int
    writer_pid: int
    writer_start: int


class Control(SlotTable):
    """Typed access to a mapped control segment."""

    slots_at = SLOTS_AT

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self._thread_lock = threading.RLock()
        self._depth = 0

    def reopen_in_child(self, segment: Segment) -> None:
        """Use ``segment``, a fresh mapping of the same control segment, after fork.

        ``flock`` on the descriptor inherited from the parent would share the
        parent's lock instead of competing with it; the thread lock may have
        been held by a parent thread at fork.
        """
        old = self.segment
        self.segment = segment
        self._thread_lock = threading.RLock()
        self._depth = 0
        os.close(old.fd)
        old.fd = -1

    # -- the session lock --------------------------------------------------

    def __enter__(self) -> None:
        # flock alone does not exclude threads of one process (they share the
        # open file description), hence the thread lock around it.
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self.segment.fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self.segment.fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    # -- header --------------------------------------------------------------

    def read_state(self) -> ControlState:
        return ControlState(*_CTL.unpack_from(self.segment.buf, _CTL_AT))

    def read_field(self, field: str) -> int:
        """One header field (one aligned load): cheaper than the whole state."""
        at, fmt = _CTL_FIELDS[field]
        return struct.unpack_from("<" + fmt.upper(), self.segment.buf, at)[0]

    def write_state(self, **changes: int) -> None:
        """Store the changed header fields, each with one aligned store.

        Not ``struct.pack_into`` over the whole header: it zeroes its target
        before writing, and lock-free readers of the segment counts and the
        writer pid would see zeros meanwhile.
        """
        buf = self.segment.buf
        for field, value in changes.items():
            at, fmt = _CTL_FIELDS[field]
            if fmt == "q":  # the creation time: written once, before anyone attaches
                buf[at : at + 8] = int(value).to_bytes(8, "little")
                continue
            view = buf[at : at + struct.calcsize(fmt)].cast(fmt)
            view[0] = value
            view.release()

    def read_config(self) -> dict[str, Any]:
        buf = self.segment.buf
        length = int.from_bytes(buf[CONFIG_AT : CONFIG_AT + 4], "little")
        if length == 0:
            return {}
        return json.loads(bytes(buf[CONFIG_AT + 4 : CONFIG_AT + 4 + length]))

    def write_config(self, config: dict[str, Any]) -> None:
        raw = json.dumps(config, sort_keys=True).encode()
        if len(raw) > CONFIG_MAX - 4:
            raise ValueError(
                f"session options take {len(raw)} bytes as JSON; at most {CONFIG_MAX - 4} fit "
                f"(per-key capacities included)"
            )
        buf = self.segment.buf
        buf[CONFIG_AT + 4 : CONFIG_AT + 4 + len(raw)] = raw
        buf[CONFIG_AT : CONFIG_AT + 4] = len(raw).to_bytes(4, "little")

    # -- members -------------------------------------------------------------

    def members(self) -> list[tuple[int, int, int]]:
        """(slot, pid, start) of every occupied member slot."""
        buf = self.segment.buf
        found = []
        for slot in range(MEMBER_SLOTS):
            pid, start = _MEMBER.unpack_from(buf, MEMBERS_AT + slot * _MEMBER.size)
            if pid:
                found.append((slot, pid, start))
        return found

    def sees_members(self) -> bool:
        """Whether this process sees the members' pids (it is in their PID namespace);
        where it does not, every member and slot is taken as alive."""
        return sees_pids_of(self.read_field("pid_namespace"))

    def live_members(self) -> list[tuple[int, int, int]]:
        if not self.sees_members():
            return self.members()
        return [m for m in self.members() if is_alive(m[1], m[2])]

    def live_slots(self) -> list[Slot]:
        """The slots whose thread runs (every slot in use, seen from another PID namespace)."""
        if not self.sees_members():
            return self.slots()
        return [w for w in self.slots() if w.alive()]

    def prune_members(self) -> int:
        """Free the slots of dead members; returns how many are alive."""
        if not self.sees_members():
            return len(self.members())
        alive = 0
        for slot, pid, start in self.members():
            if is_alive(pid, start):
                alive += 1
            else:
                self._set_member(slot, 0, 0)
        return alive

    def add_member(self, pid: int, start: int) -> int:
        self.prune_members()
        for slot in range(MEMBER_SLOTS):
            if _MEMBER.unpack_from(self.segment.buf, MEMBERS_AT + slot * _MEMBER.size)[0] == 0:
                self._set_member(slot, pid, start)
                return slot
        raise RuntimeError(
            f"session member table is full ({MEMBER_SLOTS} live processes called shmlog.init)"
        )

    def remove_member(self, pid: int, start: int) -> None:
        for slot, p, s in self.members():
            if (p, s) == (pid, start):
                self._set_member(slot, 0, 0)

    def _set_member(self, slot: int, pid: int, start: int) -> None:
        _MEMBER.pack_into(self.segment.buf, MEMBERS_AT + slot * _MEMBER.size, pid, start)
