"""A session: the set of shared segments that one training run's processes share.

Segments of session ``S`` of user ``U`` are named ``/shmlog-U-S@<part>``
(``shmlog.shm.names``): ``@ctl`` (members, writers, options:
``shmlog.shm.control``), ``@r<i>`` (scalar rings: ``shmlog.shm.scalar_rings``),
``@i<i>`` (runtime info: ``shmlog.shm.info``) and ``@l<i>`` (log record
rings: ``shmlog.shm.record_rings``).  Ring, info and record segments are added as
they fill up, so there is no fixed limit on keys or slots' rings.  The
control segment also holds the log writer's doorbell and election lock
(``shmlog.shm.doorbell``, ``shmlog.shm.exclusive``): a session has no other
names in /dev/shm.

This layer moves bytes and numbers.  It knows keys only as strings and
processes only as (pid, rank, worker, label); what a key means, how a
hub name is folded into it and how a process finds its rank are decided
above it (the rank comes in through the ``IdentitySource`` of
``shmlog.shm.slots`` given to :meth:`SessionSegments.open`).

Fork: a child inherits the mappings (MAP_SHARED) and every Python object,
including the parent's threads' slots.  :meth:`SessionSegments.after_fork_in_child`
drops the child's copy of those slots and of the ring writers, so the child
claims its own slot and its own rings on its first update and never
appends to its parent's rings.  It runs from the process's fork hook
(``shmlog.api.process``) and, as a safety net, whenever a handle notices that
its process id changed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import posix_ipc

from ..errors import SegmentError, SessionError
from .control import Control
from .doorbell import Doorbell
from .info import InfoStore
from .lifecycle import attach_control, destroy, leave, open_control
from .liveness import process_start
from .names import check_capacity, check_name, prefix
from .record_rings import RecordConsumer, RecordProducer, RecordRings
from .scalar_rings import RingDirectory, RingReader, RingWriter
from .segment import KIND_CONTROL, Segment
from .slots import ANONYMOUS, IdentitySource, Slot

DEFAULT_CAPACITY = 4096
DEFAULT_SEGMENT_BYTES = 1 << 20


class SessionSegments:
    """One process's handle on a session's segments."""

    def __init__(self, name: str, control: Control, member: tuple[int, int] | None,
                 identity: IdentitySource = ANONYMOUS) -> None:
        self.name = name
        self.control = control
        self.generation = control.segment.generation
        self._member = member
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self.closed = False
        # Whether this handle's open() created the session (it was joined otherwise).
        self.created = False
        self._identity = identity
        # Per-process caches of other layers (a hub's key -> RingWriter) that
        # must be emptied in a forked child.
        self._fork_caches: list[dict] = []
        self.doorbell = Doorbell(control.segment.buf)
        self._claimed = False  # whether this process took a slot
        self._init_stores()

    def _init_stores(self) -> None:
        self.rings = RingDirectory(self.name, self.control, self.generation)
        self.info = InfoStore(self.name, self.control, self.generation)
        self.records = RecordRings(self.name, self.control, self.generation)
        self._producer: RecordProducer | None = None
        # Slots are per thread: a ring has exactly one ring writer, and two
        # threads appending to one ring would interleave their stores.
        self._local = threading.local()

    def register_fork_cache(self, cache: dict) -> None:
        """Empty ``cache`` in a forked child, and when the session closes."""
        with self._lock:
            self._fork_caches.append(cache)

    # -- opening and closing ---------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        member: bool,
        create: bool,
        options: dict[str, Any] | None = None,
        writer_placeholder: bool = False,
        identity: IdentitySource = ANONYMOUS,
    ) -> SessionSegments:
        """Create or join ``name`` (see ``shmlog.shm.lifecycle.open_control``).

        ``identity`` says who this process is whenever one of its threads
        claims a slot, and whose slots its statistics merge.
        """
        control, created, joined = open_control(
            name, member=member, create=create, options=options,
            writer_placeholder=writer_placeholder,
        )
        session = cls(name, control, joined, identity)
        session.created = created
        return session

    @classmethod
    def attach_readonly(cls, name: str) -> SessionSegments:
        """A handle for reading only: no member, no slot, no store, no lock taken."""
        return cls(name, attach_control(name), None)

    def close(self) -> None:
        """Leave the session; the last member to leave removes its segments."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._pid == os.getpid() and self._member is not None:
                try:
                    leave(self.control, self.name, self._member)
                except (OSError, ValueError, posix_ipc.Error, SegmentError):
                    pass  # leaving must not keep this process from unmapping
            if self._pid == os.getpid() and self._claimed:
                try:
                    with self.control:
                        self.control.release_slots(self._pid)
                except (OSError, ValueError):
                    pass
            if self._pid == os.getpid() and (self._claimed or self._member is not None):
                # The log writer sleeps on the doorbell: it notices at once.
                self.doorbell.ring()
            self._unmap()

    def _unmap(self) -> None:
        for cache in self._fork_caches:
            cache.clear()
        if self._producer is not None:
            self._producer.release()
            self._producer = None
        self.rings.close()
        self.info.close()
        self.records.close()
        self.control.segment.close()

    def check_open(self) -> None:
        if self.closed:
            raise SessionError(f"shmlog session {self.name!r} is closed")

    def after_fork_in_child(self) -> None:
        """Forget the parent's process-specific state (see the module docstring)."""
        if self.closed or self._pid == os.getpid():
            return
        self._lock = threading.RLock()
        self._member = None
        self._pid = os.getpid()
        try:
            fresh = Segment.attach(self.control.segment.name, KIND_CONTROL, self.generation)
        except (posix_ipc.Error, SegmentError, OSError):
            self.closed = True
            for cache in self._fork_caches:
                cache.clear()
            return
        # Mappings stay valid in the child; only the session lock's descriptor
        # and the threads' slots must go, with everything that belongs to
        # them (rings and the record ring).
        self.control.reopen_in_child(fresh)
        self._local = threading.local()
        self._producer = None
        self._claimed = False
        for cache in self._fork_caches:
            cache.clear()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self.after_fork_in_child()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this handle's lock, then the session lock, across several calls.

        Every method takes them in this order; a caller that took the session
        lock alone and then called a method would deadlock against a thread
        of this process holding this handle's lock and waiting for the
        session lock.
        """
        with self._lock, self.control:
            yield

    # -- options -----------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        # Under the lock: update_options rewrites the JSON and its length in
        # two stores, and a reader between them would decode half of it.
        with self.control:
            return self.control.read_config()

    def update_options(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the session's options (JSON data) and return them."""
        with self.control:
            config = self.control.read_config()
            config.update(changes)
            self.control.write_config(config)
            return config

    def _segment_bytes(self) -> int:
        return self.control.read_config().get("segment_bytes", DEFAULT_SEGMENT_BYTES)

    # -- writers -------------------------------------------------------------------

    def thread_slot(self) -> int:
        """This thread's slot, claimed on first use."""
        self._check_pid()
        slot = getattr(self._local, "slot", None)
        if slot is None:
            self.check_open()
            rank, worker, label = self._identity.slot_owner()
            if threading.current_thread() is not threading.main_thread():
                label = f"{label}/thread{threading.get_native_id()}"
            pid = os.getpid()
            with self.control:
                slot, _adopted = self.control.claim_slot(
                    pid, process_start(pid) or 0, rank, worker, label, threading.get_native_id()
                )
            self._local.slot = slot
            self._claimed = True
        return slot

    def reader_rank(self) -> int:
        """The rank whose slots this process's statistics merge (-1: every slot)."""
        return self._identity.reader_rank()

    def slots(self) -> list[Slot]:
        return self.control.slots()

    def slot_labels(self, slots: list[Slot] | None = None) -> dict[int, str]:
        """A distinct readable label per slot (of ``slots`` when given, read once)."""
        labels: dict[int, str] = {}
        seen: set[str] = set()
        for w in self.control.slots() if slots is None else slots:
            label = w.label or f"pid{w.pid}"
            if label in seen:
                label = f"{label}#{w.slot}"
            seen.add(label)
            labels[w.slot] = label
        return labels

    # -- scalars ---------------------------------------------------------------------

    def ring_writer(self, key: str, capacity: int) -> RingWriter:
        """This thread's ring for ``key``, created (or taken over) on first use.

        ``capacity`` applies only when the ring is created here.
        """
        with self._lock:
            slot = self.thread_slot()
            with self.control:
                self.check_open()
                return self.rings.writer(key, slot, capacity, self._segment_bytes())

    def readers(self, key: str) -> list[RingReader]:
        """Every ring of ``key`` (one per writer that ever wrote it)."""
        with self._lock:
            self.check_open()
            return self.rings.readers(key)

    def scalar_keys(self) -> list[str]:
        with self._lock:
            self.check_open()
            return self.rings.keys()

    # -- runtime info ---------------------------------------------------------------

    def info_get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, None when unset or removed."""
        with self._lock:
            self.check_open()
            return self.info.get(key)

    def info_keys(self) -> list[str]:
        with self._lock:
            self.check_open()
            return self.info.keys()

    def info_set(self, key: str, payload: bytes | None) -> bytes | None:
        """Store ``payload`` under ``key`` (None removes it); returns the old bytes."""
        with self._lock, self.control:
            self.check_open()
            return self.info.set(key, payload)

    # -- log records ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process that opened this handle (a forked child has another pid)."""
        return self._pid

    @property
    def producer(self) -> RecordProducer | None:
        """This process's record ring if it has logged a record yet, else None."""
        return self._producer

    def record_producer(self, capacity: int) -> RecordProducer:
        """This process's record ring, created (or taken over) on first use."""
        producer = self._producer
        if producer is not None:
            # Every log record passes here: no lock, no system call.  A forked
            # child never sees its parent's producer (after_fork_in_child).
            return producer
        with self._lock:
            self._check_pid()
            if self._producer is None:
                slot = self.thread_slot()
                with self.control:
                    self.check_open()
                    self._producer = self.records.producer(slot, capacity, self._segment_bytes())
            return self._producer

    def record_consumers(self) -> list[RecordConsumer]:
        """Every process's record ring (for the designated log writer)."""
        with self._lock:
            self.check_open()
            return self.records.consumers()

    # -- members and the designated log writer ---------------------------------------

    @property
    def writer_pid(self) -> int:
        """Pid of the process writing log files now; 0 when there is none."""
        return self.control.read_state().writer_pid

    def log_writer(self) -> tuple[int, int]:
        """(pid, start time) of the log writer named now; (0, 0) for none."""
        state = self.control.read_state()
        return state.writer_pid, state.writer_start

    def set_writer(self, pid: int, start: int, replace: tuple[int, int] | None = None) -> bool:
        """Name the log writer; with ``replace``, only if that one is named now."""
        with self.control:
            if replace is not None and self.log_writer() != replace:
                return False
            self.control.write_state(writer_pid=pid, writer_start=start)
            return True

    def live_members(self) -> int:
        return len(self.control.live_members())

    def total_bytes(self) -> int:
        with self._lock:
            return (
                self.control.segment.size + self.rings.total_bytes()
                + self.info.total_bytes() + self.records.total_bytes()
            )


__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_SEGMENT_BYTES",
    "SessionError",
    "SessionSegments",
    "attach_control",
    "check_capacity",
    "check_name",
    "destroy",
    "prefix",
]
