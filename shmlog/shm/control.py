"""The control segment: who is in a session, who writes, and how it is sized.

One control segment per session, named ``shmlog-<uid>-<session>@ctl``.  Its
kind-specific header fields (after the common 64-byte header of
``shmlog.shm.segment``, in the bytes 36..64) and tables::

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
    8448    writers          1024 x 64 bytes:
                               pid u64, start time u64, rank i32, worker i32,
                               thread id u64, label 32 bytes UTF-8 (NUL padded)

Members are the processes that called ``shmlog.init``; the session lives while
one of them does.  Writers are the threads that write to the session's rings,
one slot per thread (``Session.writer_slot``).  A pid is matched with the
process start time (``/proc/<pid>/stat``), so a recycled pid never passes for
a live member.

Pids mean something only in the PID namespace they were given in.  A
process in another one (a sidecar container of a Kubernetes pod shares
/dev/shm but not, by default, the pids) cannot tell a live member from a
dead one, so there every member counts as alive: such a process never
prunes the tables, never declares the session stale and never removes or
replaces it (:meth:`Control.sees_members`).

Everything here is changed only under the session lock: ``flock`` on the
control segment's own descriptor, which the kernel drops when its holder
dies, so a killed process never leaves the others waiting.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import threading
from typing import Any, NamedTuple

from .segment import Segment

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
WRITERS_AT, WRITER_SLOTS = MEMBERS_AT + MEMBER_SLOTS * _MEMBER.size, 1024
_WRITER = struct.Struct("<QQiiQ32s")
CONTROL_BYTES = WRITERS_AT + WRITER_SLOTS * _WRITER.size

assert _CTL_AT + _CTL.size <= CONFIG_AT
assert _WRITER.size == 64


def proc_stat(pid: int) -> list[bytes] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state, ppid, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return raw[raw.rindex(b")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, None when it is gone."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    if fields[0] in (b"Z", b"X"):  # zombie or dead: not running any more
        return None
    return int(fields[19])


def is_alive(pid: int, start: int) -> bool:
    return pid > 0 and process_start(pid) == start


def pid_namespace() -> int:
    """This process's PID namespace (the inode of ``/proc/self/ns/pid``), 0 when unknown."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


# Writers with a transient label that keep their own slot after they exit;
# beyond them, new transient writers continue their rings.
KEEP_EXITED = 16
_TRANSIENT = re.compile(r"^(.*?)(pid|thread)\d+$")


def transient_stem(label: str) -> str | None:
    """``label`` without its process or thread number, None for a lasting label.

    ``rank1/pid4242`` -> ``rank1/pid``; ``rank1/worker0`` and ``rank1`` are
    labels a restarted process has again, so they have no stem.
    """
    match = _TRANSIENT.match(label)
    return None if match is None else match.group(1) + match.group(2)


class ControlState(NamedTuple):
    state: int
    creator: int
    ring_segments: int
    info_segments: int
    created_ns: int
    record_segments: int
    writer_pid: int
    writer_start: int


class Writer(NamedTuple):
    slot: int
    pid: int
    start: int
    rank: int
    worker: int
    tid: int
    label: str

    def alive(self) -> bool:
        """Whether the writing thread still runs (a slot is per thread)."""
        if not is_alive(self.pid, self.start):
            return False
        return self.tid in (0, self.pid) or os.path.exists(f"/proc/{self.pid}/task/{self.tid}")


class Control:
    """Typed access to a mapped control segment."""

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
        """Whether this process sees the members' pids (it is in their PID namespace).

        Where it does not, every member is taken as alive (see the module docstring).
        """
        theirs = self.read_field("pid_namespace")
        return theirs == 0 or theirs == pid_namespace() or pid_namespace() == 0

    def live_members(self) -> list[tuple[int, int, int]]:
        if not self.sees_members():
            return self.members()
        return [m for m in self.members() if is_alive(m[1], m[2])]

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

    # -- writers ---------------------------------------------------------------

    def writer(self, slot: int) -> Writer:
        pid, start, rank, worker, tid, raw = _WRITER.unpack_from(
            self.segment.buf, WRITERS_AT + slot * _WRITER.size
        )
        label = raw.rstrip(b"\0").decode("utf-8", "replace")
        return Writer(slot, pid, start, rank, worker, tid, label)

    def writers(self) -> list[Writer]:
        """Every slot in use, the table read in one pass."""
        table = self.segment.buf[WRITERS_AT : WRITERS_AT + WRITER_SLOTS * _WRITER.size]
        try:
            return [
                Writer(slot, pid, start, rank, worker, tid,
                       raw.rstrip(b"\0").decode("utf-8", "replace"))
                for slot, (pid, start, rank, worker, tid, raw) in enumerate(_WRITER.iter_unpack(table))
                if pid
            ]
        finally:
            table.release()

    def release_writers(self, pid: int) -> None:
        """Mark every slot of process ``pid`` as ended (it left the session, alive or not).

        The slots keep their rings and labels, as a dead writer's do, for the
        next writer of the same label to continue.
        """
        buf = self.segment.buf
        for w in self.writers():
            if w.pid == pid:
                at = WRITERS_AT + w.slot * _WRITER.size + 8  # the start time
                view = buf[at : at + 8].cast("Q")
                view[0] = 0
                view.release()

    def claim_writer(
        self, pid: int, start: int, rank: int, worker: int, label: str, tid: int = 0
    ) -> tuple[int, bool]:
        """Take a writer slot for this thread; returns (slot, taken over from a dead writer).

        A dead writer with the same label is preferred: its rings pass to the
        new writer, so a DataLoader worker restarted every epoch keeps one
        history (and one set of rings) instead of leaving a new one per epoch.
        A process known by its pid or a thread by its id (a transient label,
        :func:`transient_stem`) takes next, once more than ``KEEP_EXITED``
        such writers have exited, the slot of one of them, of its own rank
        first: a pool that replaces its processes, or a process per
        evaluation, then keeps ``KEEP_EXITED`` slots and rings more than it
        runs at once, however many processes it ever started (those
        ``KEEP_EXITED`` keep rows of their own in ``shmlog top`` and
        ``per_writer``).
        Next comes a free slot, and when there is none, any dead writer's
        (its rings then continue under the new label).
        """
        free = None
        same_label = None
        any_dead = None
        transient = transient_stem(label)
        same_stem = other_transient = None
        exited_transient = 0
        for w in map(self.writer, range(WRITER_SLOTS)):
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
                    exited_transient += 1
                    if stem == transient and same_stem is None:
                        same_stem = w.slot
                    elif other_transient is None:
                        other_transient = w.slot
                    continue
            if any_dead is None and free is None and not w.alive():
                any_dead = w.slot
        slot = same_label
        if slot is None and exited_transient > KEEP_EXITED:
            # A short-lived process continues the rings of one that exited
            # (of its own rank first): beyond KEEP_EXITED exited ones the slots
            # and rings stay as many as such processes run at once, and each
            # ring's totals keep the history of every process that wrote it.
            slot = same_stem if same_stem is not None else other_transient
        if slot is None:
            slot = free
        if slot is None:
            slot = any_dead
        if slot is None:
            raise RuntimeError(
                f"session writer table is full: {WRITER_SLOTS} threads are writing to it at once"
            )
        encoded = label.encode("utf-8")[:32]
        _WRITER.pack_into(
            self.segment.buf, WRITERS_AT + slot * _WRITER.size, pid, start, rank, worker, tid,
            encoded,
        )
        return slot, slot != free
